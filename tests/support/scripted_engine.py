"""An engine for tests about what the core does around generation: it counts, can hold answers back, sees cancels.

``GatedEngine`` answers every request with ``answer N`` (N counts the requests), streamed in two chunks. While
``hold`` is set, a request streams its first chunk and then waits for ``release()``: a question is "being answered"
for as long as the test likes. Cancelled requests are counted in ``cancelled``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from bot.engine import EngineStats, GenerationRequest, Usage

T = TypeVar("T")


class GatedEngine:
    def __init__(self, model: str = "scripted") -> None:
        self.model = model
        self.requests: list[GenerationRequest] = []
        self.cancelled: list[str] = []
        self.hold = False
        self._gate = asyncio.Event()
        self.started = asyncio.Event()
        """Set when a held request has streamed its first chunk."""

    def release(self) -> None:
        self.hold = False
        self._gate.set()

    @property
    def generations(self) -> int:
        return len(self.requests)

    async def start(self) -> None:
        return None

    async def stop(self, timeout_s: float | None = None) -> None:
        self._gate.set()

    def submit(self, request: GenerationRequest) -> _Stream:
        self.requests.append(request)
        return _Stream(self, request.request_id, f"answer {len(self.requests)}", held=self.hold)

    def stats(self) -> EngineStats:
        return EngineStats(self.model, "cpu", True, 0, 32, 0, {}, 0, 0.0, None, None)

    async def run_on_worker(self, fn: Callable[[], T], timeout_s: float) -> T:
        return fn()

    def running_requests(self) -> list[GenerationRequest]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"backend": "scripted", "model": self.model}


class _Stream:
    def __init__(self, engine: GatedEngine, request_id: str, text: str, *, held: bool) -> None:
        self.request_id = request_id
        self.queue_position = 0
        self.usage = Usage()
        self._engine = engine
        self._text = text
        self._held = held

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        head, _, tail = self._text.partition(" ")
        yield head + " "
        if self._held:
            self._engine.started.set()
            await asyncio.wait_for(self._engine._gate.wait(), 30)
        yield tail

    async def text(self) -> str:
        return self._text

    def cancel(self) -> None:
        self._engine.cancelled.append(self.request_id)
