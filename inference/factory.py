"""Pick the engine implementation the configuration asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import EngineUnavailable

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """``PEEKBOT_BACKEND=transformers`` → the in-process engine (not started yet: call ``start()``)."""
    backend = settings.core.backend
    if backend == "transformers":
        from inference.engine import TransformersEngine

        return TransformersEngine(settings.engine)
    if backend == "openai":
        raise EngineUnavailable(
            "the remote OpenAI-compatible backend (PEEKBOT_BACKEND=openai) is not part of this build yet; "
            "set PEEKBOT_BACKEND=transformers to run the model in this process"
        )
    raise EngineUnavailable(f"PEEKBOT_BACKEND={backend!r} is unknown; use transformers")
