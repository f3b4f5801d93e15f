"""The layers import downwards only, and only adapters touch SDKs, only inference touches torch.

Every import statement anywhere in a module counts (at the top, inside a function, under ``TYPE_CHECKING``), and
the rules hold transitively: an import of one of the project's own modules brings in what that module imports (and
its packages' ``__init__``). The core (``bot/``) reaches none of ``adapters/``, ``inference/`` and ``scheduler/``,
except the composition root (``bot/cli.py``, ``bot/wiring.py``), which builds the application from all of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "adapters", "inference", "scheduler", "sandbox")
COMPOSITION_ROOT = {"bot.cli", "bot.wiring"}
ML = {"torch", "transformers", "accelerate", "bitsandbytes", "flash_attn"}
SLACK = {"slack_bolt", "slack_sdk"}
FEISHU = {"lark_oapi"}


class ImportGraph:
    """The project's modules under ``root`` and what each one imports, directly."""

    def __init__(self, root: Path) -> None:
        self.paths: dict[str, Path] = {}
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                self.paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        self._direct: dict[str, set[str]] = {}

    def direct(self, module: str) -> set[str]:
        """What ``module`` imports: project modules by full name, other packages by their top-level name. Importing
        a module runs its package's ``__init__`` first, so a module also imports its own package."""
        if module not in self._direct:
            path = self.paths[module]
            here = module if path.name == "__init__.py" else module.rpartition(".")[0]
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    found.update(self._target(alias.name) for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = _absolute(node.module, node.level, here)
                    found.update(self._target(f"{base}.{alias.name}") for alias in node.names)
            found = {t for t in found if not any(other.startswith(t + ".") for other in found)}  # implied below
            parent = module.rpartition(".")[0]
            self._direct[module] = (found | ({parent} if parent else set())) - {module}
        return self._direct[module]

    def _target(self, name: str) -> str:
        """The project module ``name`` loads (``from pkg import name``: ``name`` may be a class), or the package."""
        parts = name.split(".")
        if parts[0] not in PACKAGES:
            return parts[0]
        return next(p for n in range(len(parts), 0, -1) if (p := ".".join(parts[:n])) in self.paths or n == 1)

    def reach(self, module: str) -> dict[str, list[str]]:
        """Everything ``module`` brings in, transitively, each with the chain of imports that leads there."""
        chains = {module: [module]}
        queue = deque([module])
        while queue:
            current = queue.popleft()
            for target in sorted(self.direct(current)):
                if target in chains:
                    continue
                chains[target] = [*chains[current], target]
                if target in self.paths:
                    queue.append(target)
        return chains

    def violations(self, package: str, forbidden: set[str], *, exempt: set[str] = frozenset()) -> list[str]:
        """For each module of ``package`` (a dotted prefix) that reaches a forbidden layer or library (by top-level
        name), the shortest chain of imports that gets there."""
        found = []
        for module in sorted(self.paths):
            if module in exempt or not (module == package or module.startswith(package + ".")):
                continue
            for target, chain in self.reach(module).items():
                if target.split(".")[0] in forbidden:
                    found.append(" → ".join(chain))
                    break
        return found


def _absolute(module: str | None, level: int, here: str) -> str:
    if level == 0:
        return module or ""
    base = here.split(".")[: len(here.split(".")) - (level - 1)] if here else []
    return ".".join([*base, *([module] if module else [])])


GRAPH = ImportGraph(ROOT)


def test_the_core_reaches_no_outer_layer_except_the_composition_root() -> None:
    assert GRAPH.violations("bot", {"adapters", "inference", "scheduler", "sandbox"}, exempt=COMPOSITION_ROOT) == []


def test_the_sandbox_is_a_slack_of_its_own_and_only_its_runner_builds_the_bot() -> None:
    """The embedded Slack server and its page know nothing of peekbot (the bot reaches them over the wire, as it
    reaches Slack); ``sandbox.runner`` starts both, like the composition root. Nothing else imports the sandbox."""
    assert GRAPH.violations("sandbox", {"bot", "adapters", "inference", "scheduler"} | ML | SLACK | FEISHU,
                            exempt={"sandbox.runner"}) == []
    for package in ("adapters", "inference", "scheduler"):
        assert GRAPH.violations(package, {"sandbox"}) == []


def test_adapters_scheduler_and_inference_stay_in_their_lanes() -> None:
    assert GRAPH.violations("adapters", {"inference", "scheduler"}) == []
    assert GRAPH.violations("scheduler", {"adapters", "inference"}) == []
    assert GRAPH.violations("inference", {"adapters", "scheduler"}) == []


def test_core_imports_no_sdk_and_no_torch() -> None:
    assert GRAPH.violations("bot", ML | SLACK | FEISHU, exempt=COMPOSITION_ROOT) == []


def test_only_inference_imports_torch() -> None:
    for package in ("adapters", "scheduler"):
        assert GRAPH.violations(package, ML) == []


def test_each_adapter_imports_only_its_own_sdk() -> None:
    assert GRAPH.violations("adapters.slack", FEISHU) == []
    assert GRAPH.violations("adapters.feishu", SLACK) == []
    assert GRAPH.violations("adapters.console", SLACK | FEISHU) == []
    assert GRAPH.violations("inference", SLACK | FEISHU) == []


def test_the_checker_catches_an_upward_import_hidden_in_a_function_of_another_module(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "bot" / "report.py").write_text("from . import fmt\n")
    (tmp_path / "bot" / "fmt.py").write_text("def size():\n    from scheduler.jobs import MIB\n    return MIB\n")
    (tmp_path / "bot" / "types.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adapters import slack\n"
    )
    (tmp_path / "bot" / "cli.py").write_text("def main():\n    import adapters.slack\n")
    (tmp_path / "scheduler" / "jobs.py").write_text("def run():\n    from torch import cuda\n")
    (tmp_path / "adapters" / "slack.py").write_text("import slack_bolt\n")
    graph = ImportGraph(tmp_path)
    assert graph.violations("bot", {"adapters", "inference", "scheduler"}, exempt=COMPOSITION_ROOT) == [
        "bot.fmt → scheduler.jobs",  # a lazy import inside a function
        "bot.report → bot.fmt → scheduler.jobs",  # ... reached through another core module
        "bot.types → adapters.slack",  # an import for type checkers only
    ]
    assert graph.violations("bot", ML | SLACK, exempt=COMPOSITION_ROOT) == [
        "bot.fmt → scheduler.jobs → torch",
        "bot.report → bot.fmt → scheduler.jobs → torch",
        "bot.types → adapters.slack → slack_bolt",
    ]
    assert graph.violations("bot.cli", {"adapters"}) == ["bot.cli → adapters.slack"]  # only exempted


def test_importing_the_composition_root_loads_no_heavy_module() -> None:
    code = (
        "import sys, bot.app, bot.commands, bot.questions, bot.doctor, bot.wiring, adapters.console; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'slack_bolt', 'lark_oapi') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
