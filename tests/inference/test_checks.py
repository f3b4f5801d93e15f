"""``peekbot doctor``'s engine checks: the model setting is read without loading or downloading anything."""

from __future__ import annotations

import pytest

from bot.settings import Settings
from inference.checks import engine_checks


def test_a_model_that_is_neither_a_directory_nor_an_id_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEEKBOT_MODEL", "/models/not-here/")
    monkeypatch.delenv("PEEKBOT_BACKEND", raising=False)
    model = engine_checks(Settings())[0]
    assert (model.name, model.status) == ("model", "FAIL")
    assert model.detail == "/models/not-here/ is neither a local directory nor a Hugging Face model id (PEEKBOT_MODEL)"


def test_a_remote_backend_needs_no_gpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"PEEKBOT_BACKEND": "openai", "PEEKBOT_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                       "PEEKBOT_OPENAI_MODEL": "m"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    assert [(c.name, c.status) for c in engine_checks(Settings())] == [("model", "OK"), ("gpu", "OK")]
