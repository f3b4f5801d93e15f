"""DESIGN.md §2.1: the core owns the types; only adapters touch SDKs, only inference touches torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = {"torch", "transformers", "accelerate", "bitsandbytes", "flash_attn"}
SLACK = {"slack_bolt", "slack_sdk"}
FEISHU = {"lark_oapi"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _violations(package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_roots(path) & forbidden
        if bad:
            found.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    return found


def test_core_imports_no_sdk_and_no_torch() -> None:
    assert _violations("bot", ML | SLACK | FEISHU) == []


def test_only_inference_imports_torch() -> None:
    for package in ("adapters", "scheduler"):
        assert _violations(package, ML) == []


def test_each_adapter_imports_only_its_own_sdk() -> None:
    assert _violations("adapters/slack", FEISHU) == []
    assert _violations("adapters/feishu", SLACK) == []
    assert _violations("adapters/console", SLACK | FEISHU) == []
    assert _violations("inference", SLACK | FEISHU) == []


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    offender = tmp_path / "offender.py"
    offender.write_text("def f():\n    from torch import nn\n    import slack_sdk.web\n")
    assert _imported_roots(offender) == {"torch", "slack_sdk"}


def test_importing_the_core_loads_no_heavy_module() -> None:
    code = (
        "import sys, bot.app, bot.commands, bot.questions, bot.doctor, adapters.console; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'slack_bolt', 'lark_oapi') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
