"""Usage of the bot: one record per question, kept in memory for ``/stats``, ``/status`` and ``/metrics``.

The application wraps each question in :meth:`UsageRecorder.track`; the question path reports the engine's
figures for the request (queue wait, tokens) with :func:`note_engine_usage`. Per-day totals are kept for
``retention_days``; individual records only for the last ``window_s`` (latency percentiles, status charts).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bot.engine import Usage
from bot.errors import UserFacingError
from bot.stats import percentile
from bot.types import IncomingMessage

logger = logging.getLogger(__name__)

ANSWERED = "answered"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished question."""

    finished_at: float
    platform: str
    channel: str
    user: str
    outcome: str
    error_kind: str | None
    latency_s: float
    queue_wait_s: float | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass(slots=True)
class RequestTrace:
    """A question being answered; becomes a :class:`RequestRecord` when it ends."""

    message: IncomingMessage
    started: float = field(default_factory=time.monotonic)
    engine_usage: Usage | None = None


@dataclass(slots=True)
class DayUsage:
    requests: int = 0
    failed: int = 0
    generated_tokens: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)


_current_trace: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("usage_trace", default=None)


def note_engine_usage(usage: Usage) -> None:
    """Attach the engine's figures (filled in as the answer streams) to the question being tracked, if any."""
    trace = _current_trace.get()
    if trace is not None:
        trace.engine_usage = usage


def channel_of(message: IncomingMessage) -> str:
    conversation = message.conversation
    return f"{conversation.platform}:{conversation.workspace}:{conversation.channel}"


class UsageRecorder:
    """Collects :class:`RequestRecord` s; listeners (metrics) are called with each new record."""

    def __init__(self, *, window_s: float = 3600.0, retention_days: int = 30) -> None:
        self.window_s = window_s
        self.retention_days = retention_days
        self._recent: deque[RequestRecord] = deque()
        self._days: dict[str, DayUsage] = {}
        self._listeners: list[Callable[[RequestRecord], None]] = []

    # recording ----------------------------------------------------------------------------------
    @contextmanager
    def track(self, message: IncomingMessage) -> Iterator[RequestTrace]:
        """Record the question answered inside the block; an exception marks it failed (and propagates)."""
        trace = RequestTrace(message)
        token = _current_trace.set(trace)
        outcome, kind = ANSWERED, None
        try:
            yield trace
        except UserFacingError as exc:
            outcome, kind = FAILED, exc.kind
            raise
        except asyncio.CancelledError:
            outcome, kind = CANCELLED, "cancelled"
            raise
        except Exception:
            outcome, kind = FAILED, "internal"
            raise
        finally:
            _current_trace.reset(token)
            self.record(self._finish(trace, outcome, kind))

    @staticmethod
    def _finish(trace: RequestTrace, outcome: str, kind: str | None) -> RequestRecord:
        usage = trace.engine_usage
        # The queue wait is known once the engine took the request up.
        started_generating = usage is not None and (outcome == ANSWERED or usage.time_to_first_token_s is not None)
        return RequestRecord(
            finished_at=time.time(),
            platform=trace.message.platform,
            channel=channel_of(trace.message),
            user=trace.message.user.key,
            outcome=outcome,
            error_kind=kind,
            latency_s=time.monotonic() - trace.started,
            queue_wait_s=usage.queue_wait_s if started_generating else None,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            generated_tokens=usage.generated_tokens if usage is not None else 0,
        )

    def record(self, record: RequestRecord) -> None:
        self._recent.append(record)
        self._prune_recent(record.finished_at)
        day = self._days.setdefault(_day(record.finished_at), DayUsage())
        day.requests += 1
        day.failed += record.outcome != ANSWERED
        day.generated_tokens += record.generated_tokens
        day.channels[record.channel] += 1
        day.users[record.user] += 1
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                logger.exception("usage listener failed")

    def subscribe(self, listener: Callable[[RequestRecord], None]) -> None:
        self._listeners.append(listener)

    # reading ------------------------------------------------------------------------------------
    def recent(self, since: float | None = None) -> list[RequestRecord]:
        """Records finished after ``since`` (default: within the window)."""
        self._prune_recent(time.time())
        if since is None:
            return list(self._recent)
        return [r for r in self._recent if r.finished_at > since]

    def latency_percentiles(self, since: float | None = None) -> tuple[float | None, float | None]:
        """p50 and p95 of the end-to-end latency of answered questions since ``since`` (default: the window)."""
        latencies = [r.latency_s for r in self.recent(since) if r.outcome == ANSWERED]
        return percentile(latencies, 0.50), percentile(latencies, 0.95)

    def days(self, count: int = 7, now: float | None = None) -> list[tuple[str, DayUsage]]:
        """The last ``count`` days (today first), days without questions included."""
        now = time.time() if now is None else now
        result = []
        for offset in range(count):
            name = _day(now - offset * 86400)
            result.append((name, self._days.get(name, DayUsage())))
        return result

    def top(self, what: str, count: int = 10, days: int = 7, now: float | None = None) -> list[tuple[str, int]]:
        """Most active ``"channels"`` or ``"users"`` over the last ``days`` days."""
        total: Counter[str] = Counter()
        for _, usage in self.days(days, now):
            total.update(getattr(usage, what))
        return total.most_common(count)

    # upkeep -------------------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Drop per-day totals older than ``retention_days``; returns how many days were dropped."""
        now = time.time() if now is None else now
        oldest = _day(now - self.retention_days * 86400)
        stale = [name for name in self._days if name < oldest]
        for name in stale:
            del self._days[name]
        self._prune_recent(now)
        return len(stale)

    def _prune_recent(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._recent and self._recent[0].finished_at < cutoff:
            self._recent.popleft()


def _day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))
