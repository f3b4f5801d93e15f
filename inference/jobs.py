"""Engine-side state of each request, the queue the event loop and the worker share, and the delivery of text to the
answer streams (no torch here).

* :class:`EngineJob`: one submitted request (limits, deadline, prepared inputs, what was already sent).
* :class:`JobQueue`: waiting and active jobs under one lock (the event loop submits and cancels, the worker admits).
* :class:`RowText`: one attempt at generating a job's answer: its token ids and the text it produced; a retry
  after an out-of-memory error starts a new one and sends only what the earlier attempts had not sent.
* :class:`Outbox`: stream events gathered over decoding steps, delivered with one wake-up per event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from bot.engine import GenerationRequest, Usage
from inference.scheduling import fairness_key
from inference.streams import StreamEnd, TextStream

if TYPE_CHECKING:
    from inference.prefill import RowPrefill
    from inference.prompts import PreparedPrompt

_REPLACEMENT = "\ufffd"
_sequence = itertools.count()


class IncrementalDecoder:
    """Token ids in, text deltas out; never splits a multi-byte character.

    Decodes a small window (the last emitted text plus the new tokens) and holds back text that ends
    in U+FFFD, which is what an incomplete UTF-8 sequence decodes to.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        if len(current) <= len(before) or current.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return current[len(before) :]

    def flush(self) -> str:
        """Whatever is held back (the answer ended), replacement characters included."""
        before = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return current[len(before) :] if len(current) > len(before) else ""


class EngineJob:
    """Engine-side state of one request."""

    def __init__(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        *,
        max_new_tokens: int,
        min_new_tokens: int,
        timeout_s: float,
        max_pixels: int,
    ) -> None:
        self.request = request
        self.loop = loop
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.timeout_s = timeout_s
        self.max_pixels = max_pixels
        self.pixel_reductions = 0
        self.sequence = next(_sequence)
        self.fairness_key = fairness_key(request.user, request.job_id, request.request_id)
        self.submitted_at = time.monotonic()
        self.deadline = self.submitted_at + timeout_s
        self.started_at: float | None = None
        self.first_text_at: float | None = None
        self.usage = Usage()
        self.stream: TextStream | None = None
        self.prep_future: concurrent.futures.Future[PreparedPrompt | None] | None = None
        self.prepared: PreparedPrompt | None = None
        self.image_hashes: list[str] = []
        """Content hash per image (the request's own, or of the pixels), for the image-embedding cache."""
        self.prefill: RowPrefill | None = None
        self.text: RowText | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sent_chars = 0
        self.done = False
        self.outcome: str | None = None

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt's length once its inputs are prepared (what the scheduler budgets)."""
        return self.prepared.prompt_tokens if self.prepared is not None else None

    def reset_attempt(self) -> None:
        """Forget the current attempt (its prefill and text); the job waits to start again."""
        self.prefill = None
        self.text = None


class JobQueue:
    """Waiting jobs (oldest first) and active ones (prefilling or decoding), under one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waiting: deque[EngineJob] = deque()
        self.active: list[EngineJob] = []

    def depth(self) -> int:
        with self.cond:
            return len(self.waiting)

    def waiting_now(self) -> list[EngineJob]:
        with self.cond:
            return [job for job in self.waiting if not job.done]

    def active_now(self) -> list[EngineJob]:
        with self.cond:
            return [job for job in self.active if not job.done]

    def take(self, jobs: Iterable[EngineJob]) -> list[EngineJob]:
        """Move ``jobs`` from waiting to active (those still waiting); returns the ones moved."""
        moved = []
        with self.cond:
            for job in jobs:
                if job.done or job not in self.waiting:
                    continue
                self.waiting.remove(job)
                self.active.append(job)
                moved.append(job)
        return moved

    def requeue(self, jobs: Iterable[EngineJob]) -> None:
        """Move active ``jobs`` back to waiting (in submission order)."""
        with self.cond:
            for job in jobs:
                with contextlib.suppress(ValueError):
                    self.active.remove(job)
                if not job.done:
                    self.waiting.append(job)
            self.waiting = deque(sorted(self.waiting, key=lambda job: job.sequence))
            self.cond.notify_all()

    def leave(self, jobs: Iterable[EngineJob]) -> None:
        with self.cond:
            for job in jobs:
                with contextlib.suppress(ValueError):
                    self.active.remove(job)

    def settle(self, job: EngineJob) -> bool:
        """Mark ``job`` done (under the lock); False when it already was. Removes it from waiting."""
        with self.cond:
            if job.done:
                return False
            job.done = True
            with contextlib.suppress(ValueError):
                self.waiting.remove(job)
            self.cond.notify_all()
            return True


class Outbox:
    """Stream events gathered over decoding steps, delivered with one wake-up per event loop."""

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[TextStream, str | StreamEnd]]] = {}
        self.flushed_at = time.monotonic()

    def put(self, job: EngineJob, item: str | StreamEnd) -> None:
        if job.stream is not None:
            self._items.setdefault(job.loop, []).append((job.stream, item))

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        items, self._items = self._items, {}
        for loop, events in items.items():
            post(loop, events)


def _deliver_all(events: list[tuple[TextStream, str | StreamEnd]]) -> None:
    for stream, item in events:
        stream._deliver(item)


def post(loop: asyncio.AbstractEventLoop, events: list[tuple[TextStream, str | StreamEnd]]) -> None:
    """Deliver ``events`` on ``loop`` (dropped when the loop is closed: nobody is listening any more)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_deliver_all, events)


class RowText:
    """One attempt at a job's answer: the token ids generated and the text they decode to."""

    __slots__ = ("decoder", "job", "text_chars", "token_ids")

    def __init__(self, job: EngineJob, decode: Callable[[Sequence[int]], str]) -> None:
        self.job = job
        self.decoder = IncrementalDecoder(decode)
        self.text_chars = 0
        self.token_ids: list[int] = []

    def push(self, token: int, outbox: Outbox, now: float) -> None:
        self.token_ids.append(token)
        self.emit(self.decoder.push(token), outbox, now)

    def emit(self, text: str, outbox: Outbox, now: float) -> None:
        """Send the part of ``text`` not yet sent to the consumer (a retry repeats what was already sent)."""
        if not text:
            return
        job = self.job
        start = self.text_chars
        self.text_chars += len(text)
        if self.text_chars <= job.sent_chars:
            return
        piece = text[max(0, job.sent_chars - start) :]
        job.sent_chars += len(piece)
        if job.first_text_at is None:
            job.first_text_at = now
            job.usage.time_to_first_token_s = now - job.submitted_at
        outbox.put(job, piece)

    def complete(self, outbox: Outbox) -> None:
        """The answer ended: send what the decoder held back and record the ids."""
        job = self.job
        self.emit(self.decoder.flush(), outbox, time.monotonic())
        job.usage.generated_tokens = len(self.token_ids)
        if job.stream is not None:
            job.stream.token_ids = list(self.token_ids)
