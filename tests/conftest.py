"""Shared fixtures: tiny random Qwen-VL checkpoints built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures for replies that outlive their process (Slack and Feishu adapters on the loopback fakes).
from tests.support.resume_support import feishu, slack, start_feishu, start_slack  # noqa: F401


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


@pytest.fixture(autouse=True)
def _private_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own state directory (SQLite store) and no rate limit, unless it sets them itself."""
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "state"))
    # Tests ask many questions quickly as one user; the rate-limit tests switch it back on themselves.
    monkeypatch.setenv("PEEKBOT_RATE_LIMIT_PER_MINUTE", "0")
