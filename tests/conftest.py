"""Shared fixtures: tiny random Qwen-VL checkpoints built (and one loaded) once per test session, an open SQLite
store, the loopback Slack and Feishu with adapter starters, ``start_app`` and ``processes``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Fixtures for replies that outlive their process (Slack and Feishu adapters on the loopback fakes), for starting
# Applications and bot processes.
from tests.support.apps import start_app  # noqa: F401
from tests.support.processes import processes  # noqa: F401
from tests.support.resume_support import feishu, slack, slack_edits, start_feishu, start_slack  # noqa: F401

if TYPE_CHECKING:
    from bot.store.sqlite import SQLiteStore


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def _build(root: Path, arch: str) -> Path:
    from inference.tiny import build_tiny_model

    target = root / arch
    if not (target / "config.json").exists():
        build_tiny_model(target, arch)  # type: ignore[arg-type]
    return target


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tiny_models_root: Path) -> Path:
    """A tiny random Qwen3-VL checkpoint (real tokenizer) in the standard HF layout."""
    return _build(tiny_models_root, "qwen3_vl")


@pytest.fixture(scope="session")
def tiny_qwen25_dir(tiny_models_root: Path) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (real tokenizer) in the standard HF layout."""
    return _build(tiny_models_root, "qwen2_5_vl")


@pytest.fixture(scope="session", params=["qwen2_5_vl", "qwen3_vl"])
def tiny_model_dir(request: pytest.FixtureRequest, tiny_models_root: Path) -> Path:
    """Both architectures, one after the other."""
    return _build(tiny_models_root, request.param)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_qwen3_dir: Path) -> Any:
    """The tiny Qwen3-VL model loaded once; engines made with ``loaded=`` share it."""
    from bot.settings import EngineSettings
    from inference.loader import load_model

    return load_model(EngineSettings(model=str(tiny_qwen3_dir), device="cpu"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A fresh SQLite store in the test's directory, open for the test (a module may define its own ``store``)."""
    from bot.store.sqlite import SQLiteStore

    opened = SQLiteStore(tmp_path / "state.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(autouse=True)
def _private_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own state directory (SQLite store) and no rate limit, unless it sets them itself."""
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "state"))
    # Tests ask many questions quickly as one user; the rate-limit tests switch it back on themselves.
    monkeypatch.setenv("PEEKBOT_RATE_LIMIT_PER_MINUTE", "0")
