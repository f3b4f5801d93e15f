"""``peekbot doctor``: checks configuration, tokens, model and GPU without connecting anywhere.

The platforms' checks come from their plug-ins and the model's and GPU's from the engine, both handed over by the
composition root (``bot/wiring.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.platforms import setup_hint
from bot.redact import redact, secret_values
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.platforms import PlatformPlugin


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Literal["OK", "WARN", "FAIL"]
    detail: str


def data_dir_problem(directory: Path) -> str | None:
    """Why the bot cannot keep its state in ``directory`` (created when missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror or exc}"
    return None


def _check_data_dir(settings: Settings) -> Check:
    directory = Path(settings.core.data_dir).expanduser()
    problem = data_dir_problem(directory)
    return Check("data dir", "FAIL", problem) if problem else Check("data dir", "OK", str(directory))


def _check_platforms(settings: Settings, platforms: Sequence[PlatformPlugin]) -> Iterator[Check]:
    for platform in platforms:
        yield from platform.checks(settings)
    if not any(platform.configured(settings) for platform in platforms):
        yield Check("platforms", "WARN", f"none configured: `peekbot run` needs {setup_hint(platforms)}")


def run_checks(settings: Settings, platforms: Sequence[PlatformPlugin], engine: Iterable[Check]) -> list[Check]:
    """The data directory, then each platform's checks, then ``engine``'s (the model, the GPU: the composition root
    passes the engine's own); credentials in the details (URLs with passwords or keys, token values) are masked."""
    checks = [_check_data_dir(settings), *_check_platforms(settings, platforms), *engine]
    secrets = secret_values(settings)
    return [Check(check.name, check.status, redact(check.detail, secrets)) for check in checks]
