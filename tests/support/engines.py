"""Engines for tests: :class:`FakeEngine`, a torch-free stand-in for the model, and :class:`RecordingEngine`, the real
engine with the requests it was given.

``FakeEngine`` implements ``bot.engine.Engine`` without loading torch: tests about what the core does around
generation (what is sent, when answers stream, what is cancelled, cached or refused) run in milliseconds with it.

* **Scripted answers:** ``answer N`` by default (N counts the requests), or what ``answer(request)`` returns; a
  transcription request (``bot.library`` reading a picture) is answered from ``reads``, the picture's centre colour →
  its text ("" for a colour not listed). An exception the script raises fails that answer's stream.
* **Recorded requests:** ``requests`` (in order), ``cancelled`` (request ids), ``pings``, ``cleanups``.
* **Streaming in chunks:** one word at a time (``"answer "``, ``"1"``); ``usage`` counts words as tokens.
* **A gate:** ``hold()`` makes every answer stream its first chunk and then wait for ``release()``; ``waiting`` is set
  once an answer waits there. ``FakeEngine(gate=event, chunks_before_gate=0)`` takes a gate the test opens and
  closes itself (``event.set()`` / ``clear()``) and holds answers before their first chunk: a stalled replica.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from bot.engine import CleanupReport, EngineStats, GenerationRequest, Usage
from bot.library import TRANSCRIBE_PROMPT

RGB = tuple[int, int, int]
WAIT_S = 30.0
"""The longest a held answer waits for its gate: a test that forgets ``release()`` fails instead of hanging."""


class FakeEngine:
    """A scripted engine that records what reaches it (see the module docstring)."""

    in_process = True

    def __init__(
        self,
        answer: Callable[[GenerationRequest], str] | None = None,
        *,
        reads: Mapping[RGB, str] | None = None,
        model: str = "fake",
        gate: asyncio.Event | None = None,
        chunks_before_gate: int = 1,
        queue_limit: int = 32,
    ) -> None:
        self.model = model
        self.answer = answer
        self.reads = dict(reads or {})
        self.gate = gate
        self.chunks_before_gate = chunks_before_gate
        self.queue_limit = queue_limit
        self.requests: list[GenerationRequest] = []
        self.cancelled: list[str] = []
        self.pings = 0
        self.cleanups: list[bool] = []
        """The ``force`` flag of each cleanup asked for."""
        self.waiting = asyncio.Event()
        """Set once an answer waits at a closed gate."""
        self.started = False
        self._streaming: dict[str, GenerationRequest] = {}
        self._outcomes: Counter[str] = Counter()
        self._generated = 0

    # the gate ---------------------------------------------------------------------------------------------------
    def hold(self, *, after_chunks: int = 1) -> None:
        """From now on every answer streams ``after_chunks`` chunks, then waits for :meth:`release`."""
        self.gate = asyncio.Event()
        self.chunks_before_gate = after_chunks
        self.waiting.clear()

    def release(self) -> None:
        """Let every held answer (and every later one) go on."""
        if self.gate is not None:
            self.gate.set()

    @property
    def generations(self) -> int:
        """How many requests reached the engine."""
        return len(self.requests)

    # the Engine protocol ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.started = True

    async def stop(self, timeout_s: float | None = None) -> None:
        self.started = False
        self.release()

    def submit(self, request: GenerationRequest) -> FakeStream:
        self.requests.append(request)
        return FakeStream(self, request)

    def script(self, request: GenerationRequest) -> str:
        """The answer to ``request``: a picture's text for a transcription, else the script's or ``answer N``."""
        if request.question == TRANSCRIBE_PROMPT and request.images:
            image = request.images[0]
            return self.reads.get(image.getpixel((image.width // 2, image.height // 2)), "")
        if self.answer is not None:
            return self.answer(request)
        return f"answer {len(self.requests)}"

    def stats(self) -> EngineStats:
        return EngineStats(
            model=self.model,
            device="cpu",
            ready=True,
            queue_depth=0,
            queue_limit=self.queue_limit,
            in_flight=len(self._streaming),
            requests_by_outcome=dict(self._outcomes),
            generated_tokens=self._generated,
            tokens_per_s=0.0,
            latency_p50_s=None,
            latency_p95_s=None,
        )

    async def ping(self, timeout_s: float) -> float:
        self.pings += 1
        return 0.0

    async def cleanup(
        self, *, force: bool, fragmentation_threshold: float, unused_reserved_bytes: int, timeout_s: float
    ) -> CleanupReport:
        self.cleanups.append(force)
        return CleanupReport(skipped="a fake engine holds no model")

    def running_requests(self) -> list[GenerationRequest]:
        return list(self._streaming.values())

    def describe(self) -> dict[str, Any]:
        return {"backend": "fake", "model": self.model}


class FakeStream:
    """One scripted answer, streamed a word at a time, past the engine's gate."""

    def __init__(self, engine: FakeEngine, request: GenerationRequest) -> None:
        self.request_id = request.request_id
        self.queue_position = 0
        self.usage = Usage(prompt_tokens=len(request.question.split()))
        self._engine = engine
        self._request = request
        self._submitted = time.monotonic()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        engine = self._engine
        engine._streaming[self.request_id] = self._request
        outcome = "failed"
        try:
            text = engine.script(self._request)
            words = text.split(" ")
            for index, word in enumerate(words):
                if index == engine.chunks_before_gate:
                    await self._pass_gate()
                self.usage.generated_tokens += 1
                engine._generated += 1
                if self.usage.time_to_first_token_s is None:
                    self.usage.time_to_first_token_s = time.monotonic() - self._submitted
                yield word if index == len(words) - 1 else word + " "
            outcome = "answered"
        finally:
            engine._streaming.pop(self.request_id, None)
            engine._outcomes["cancelled" if self.request_id in engine.cancelled else outcome] += 1
            self.usage.total_s = time.monotonic() - self._submitted

    async def _pass_gate(self) -> None:
        gate = self._engine.gate
        if gate is None or gate.is_set():
            return
        self._engine.waiting.set()
        await asyncio.wait_for(gate.wait(), WAIT_S)

    async def text(self) -> str:
        return "".join([chunk async for chunk in self])

    def cancel(self) -> None:
        self._engine.cancelled.append(self.request_id)


class RecordingEngine:
    """The real engine, plus the requests it was given (to see what reached the model)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[Any] = []

    def submit(self, request: Any) -> Any:
        self.requests.append(request)
        return self.inner.submit(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
