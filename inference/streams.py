"""An answer as an async stream of text deltas, shared by the in-process and the remote engine (no torch here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from bot.engine import Usage


class StreamEnd:
    """The last item of a stream: how it ended (``error`` None for a complete answer)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class TextStream:
    """One request's answer as an async stream of text deltas (implements ``bot.engine.AnswerStream``).

    Lives on the event loop that submitted the request; the in-process engine's worker thread feeds it through
    ``loop.call_soon_threadsafe``, the remote engine's request task directly. Abandoning the iteration (``break``,
    task cancelled) cancels the request.
    """

    def __init__(self, request_id: str, queue_position: int, usage: Usage, cancel: Callable[[], None]) -> None:
        self.request_id = request_id
        self.queue_position = queue_position
        self.usage = usage
        self.token_ids: list[int] = []
        """The generated token ids (set when the answer is complete)."""
        self._cancel = cancel
        self._events: asyncio.Queue[str | StreamEnd] = asyncio.Queue()
        self._parts: list[str] = []
        self._closed = False
        self._end: StreamEnd | None = None

    def _deliver(self, item: str | StreamEnd) -> None:
        if self._closed:
            return
        if isinstance(item, StreamEnd):
            self._closed = True
        self._events.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        finished = False
        try:
            while self._end is None:
                item = await self._events.get()
                if isinstance(item, StreamEnd):
                    self._end = item
                    break
                self._parts.append(item)
                yield item
            finished = True
            if self._end.error is not None:
                raise self._end.error
        finally:
            if not finished:
                self.cancel()

    async def text(self) -> str:
        async for _ in self:
            pass
        return "".join(self._parts)

    def cancel(self) -> None:
        self._cancel()

    @property
    def done(self) -> bool:
        return self._closed
