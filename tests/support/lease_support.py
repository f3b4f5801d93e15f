"""One tiny model lent to several Applications in a test (replicas, restarts), and a gate that stalls a replica.

Loading the model once per test keeps tests with several "processes" fast; the engine is not what they test.
``SharedModel.lend()`` gives each Application an engine of its own (its own ``requests``, optionally gated); the
model is started by the first and stopped by ``close()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from bot.settings import Settings
from tests.support.helpers import RecordingEngine


class GatedStream:
    """An answer stream that yields nothing until its gate opens (the replica is stalled meanwhile)."""

    def __init__(self, inner: Any, gate: asyncio.Event) -> None:
        self._inner = inner
        self._gate = gate
        self.request_id = inner.request_id
        self.queue_position = inner.queue_position
        self.usage = inner.usage

    async def __aiter__(self) -> AsyncIterator[str]:
        await self._gate.wait()
        async for chunk in self._inner:
            yield chunk

    async def text(self) -> str:
        return "".join([chunk async for chunk in self])

    def cancel(self) -> None:
        self._inner.cancel()


class SharedModel:
    """The tiny model, loaded once and lent to every Application of a test."""

    def __init__(self, settings: Settings) -> None:
        from inference.transformers_engine import TransformersEngine

        self.inner = TransformersEngine(settings.engine)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.inner.start()

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.inner.stop()

    def lend(self, gate: asyncio.Event | None = None) -> LentEngine:
        return LentEngine(self, gate)


class LentEngine(RecordingEngine):
    """One Application's engine: the shared model, the requests this Application made, and an optional gate."""

    def __init__(self, model: SharedModel, gate: asyncio.Event | None) -> None:
        super().__init__(model.inner)
        self._model = model
        self.gate = gate

    async def start(self) -> None:
        await self._model.start()

    async def stop(self, timeout_s: float | None = None) -> None:
        """The model outlives the Application (``SharedModel.close`` stops it)."""

    def submit(self, request: Any) -> Any:
        stream = super().submit(request)
        return stream if self.gate is None else GatedStream(stream, self.gate)
