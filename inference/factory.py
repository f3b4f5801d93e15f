"""Pick the engine implementation the configuration asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import EngineUnavailable

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """The engine for ``PEEKBOT_BACKEND`` (not started yet: call ``start()``).

    ``transformers``: the model runs in this process. ``openai``: a remote OpenAI-compatible server runs it
    (``PEEKBOT_OPENAI_BASE_URL`` and ``PEEKBOT_OPENAI_MODEL`` must be set); torch is not loaded for it.
    """
    backend = settings.core.backend
    if backend == "transformers":
        from inference.transformers_engine import TransformersEngine

        return TransformersEngine(settings.engine)
    if backend == "openai":
        from inference.remote import OpenAIEngine, configuration_problem

        problem = configuration_problem(settings.core)
        if problem:
            raise EngineUnavailable(problem)
        return OpenAIEngine(settings.core, settings.engine)
    raise EngineUnavailable(f"PEEKBOT_BACKEND={backend!r} is unknown; use transformers or openai")
