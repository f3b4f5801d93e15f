"""Counters and rolling windows the engine reports: outcomes, throughput, latency percentiles.

Thread-safe: the worker thread records, the event loop reads.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.stats import percentile

OUTCOMES = ("answered", "failed", "busy", "timeout", "cancelled", "oom", "unavailable")

LATENCY_WINDOW_S = 3600.0
LATENCY_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
THROUGHPUT_WINDOW_S = 60.0
_MAX_SAMPLES = 100_000


def cumulative_histogram(values: Iterable[float], bounds: Iterable[float] = LATENCY_BUCKETS_S) -> dict[str, int]:
    """Prometheus-style cumulative counts: ``{"0.5": n(≤0.5 s), …, "+Inf": n}``."""
    ordered = sorted(values)
    histogram = {f"{bound:g}": bisect.bisect_right(ordered, bound) for bound in bounds}
    histogram["+Inf"] = len(ordered)
    return histogram


class _TimedSamples:
    """``(timestamp, value)`` pairs kept for ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)

    def add(self, value: float, now: float) -> None:
        self._samples.append((now, value))

    def values(self, now: float) -> list[float]:
        cutoff = now - self.window_s
        while self._samples and self._samples[0][0] < cutoff:
            self._samples.popleft()
        return [value for _, value in self._samples]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    requests_by_outcome: dict[str, int]
    generated_tokens: int
    tokens_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_histogram: dict[str, int]
    queue_wait_p50_s: float | None
    queue_wait_p95_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    batches: int
    mean_batch_size: float
    oom_events: int
    decode_steps: int = 0
    mean_step_rows: float = 0.0
    step_p50_s: float | None = None
    step_p95_s: float | None = None
    prefill_unit_p95_s: dict[str, float] = field(default_factory=dict)

    def engine_fields(self) -> dict[str, Any]:
        """The ``bot.engine.EngineStats`` fields these counters fill (the engine adds model, queue and memory)."""
        return {
            "requests_by_outcome": self.requests_by_outcome,
            "generated_tokens": self.generated_tokens,
            "tokens_per_s": self.tokens_per_s,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "latency_histogram": self.latency_histogram,
            "queue_wait_p50_s": self.queue_wait_p50_s,
            "queue_wait_p95_s": self.queue_wait_p95_s,
            "time_to_first_token_p50_s": self.ttft_p50_s,
            "time_to_first_token_p95_s": self.ttft_p95_s,
            "batches": self.batches,
            "mean_batch_size": self.mean_batch_size,
            "oom_events": self.oom_events,
            "decode_steps": self.decode_steps,
            "mean_step_rows": self.mean_step_rows,
            "step_p50_s": self.step_p50_s,
            "step_p95_s": self.step_p95_s,
            "prefill_unit_p95_s": dict(self.prefill_unit_p95_s),
        }


class EngineCounters:
    """Everything the engine counts. ``clock`` is injectable for tests."""

    def __init__(
        self,
        *,
        latency_window_s: float = LATENCY_WINDOW_S,
        throughput_window_s: float = THROUGHPUT_WINDOW_S,
        clock=time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._outcomes: Counter[str] = Counter({name: 0 for name in OUTCOMES})
        self._generated_tokens = 0
        self._recent_tokens = _TimedSamples(throughput_window_s)
        self._latency = _TimedSamples(latency_window_s)
        self._queue_wait = _TimedSamples(latency_window_s)
        self._ttft = _TimedSamples(latency_window_s)
        self._batches = 0
        self._batched_rows = 0
        self._steps = 0
        self._step_rows = 0
        self._step_seconds = _TimedSamples(throughput_window_s)
        self._unit_seconds: dict[str, _TimedSamples] = {}
        self._oom_events = 0

    def outcome(self, name: str) -> None:
        with self._lock:
            self._outcomes[name] += 1

    def tokens(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self._generated_tokens += count
            self._recent_tokens.add(count, self._clock())

    def answered(self, latency_s: float, ttft_s: float | None) -> None:
        with self._lock:
            now = self._clock()
            self._latency.add(latency_s, now)
            if ttft_s is not None:
                self._ttft.add(ttft_s, now)

    def queue_wait(self, seconds: float) -> None:
        with self._lock:
            self._queue_wait.add(seconds, self._clock())

    def batch(self, rows: int) -> None:
        """A running batch started with ``rows`` rows (0: they are counted as they join)."""
        with self._lock:
            self._batches += 1
            self._batched_rows += rows

    def joined(self) -> None:
        """A row joined the running batch."""
        with self._lock:
            self._batched_rows += 1

    def step(self, rows: int, seconds: float | None = None) -> None:
        """One decoding step of ``rows`` rows (that took ``seconds``: choosing the tokens and the forward pass)."""
        with self._lock:
            self._steps += 1
            self._step_rows += rows
            if seconds is not None:
                self._step_seconds.add(seconds, self._clock())

    def prefill_unit(self, kind: str, seconds: float) -> None:
        """One prefill unit run between steps: ``vision`` (one picture's encoder pass) or ``text`` (one chunk)."""
        with self._lock:
            samples = self._unit_seconds.setdefault(kind, _TimedSamples(self._step_seconds.window_s))
            samples.add(seconds, self._clock())

    def oom(self) -> None:
        with self._lock:
            self._oom_events += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = self._clock()
            recent = self._recent_tokens.values(now)
            span = min(self._recent_tokens.window_s, max(now - self._started, 1e-9))
            latency = self._latency.values(now)
            wait = self._queue_wait.values(now)
            ttft = self._ttft.values(now)
            steps = self._step_seconds.values(now)
            units = {kind: percentile(samples.values(now), 0.95) for kind, samples in self._unit_seconds.items()}
            return StatsSnapshot(
                requests_by_outcome=dict(self._outcomes),
                generated_tokens=self._generated_tokens,
                tokens_per_s=sum(recent) / span if recent else 0.0,
                latency_p50_s=percentile(latency, 0.5),
                latency_p95_s=percentile(latency, 0.95),
                latency_histogram=cumulative_histogram(latency),
                queue_wait_p50_s=percentile(wait, 0.5),
                queue_wait_p95_s=percentile(wait, 0.95),
                ttft_p50_s=percentile(ttft, 0.5),
                ttft_p95_s=percentile(ttft, 0.95),
                batches=self._batches,
                mean_batch_size=self._batched_rows / self._batches if self._batches else 0.0,
                oom_events=self._oom_events,
                decode_steps=self._steps,
                mean_step_rows=self._step_rows / self._steps if self._steps else 0.0,
                step_p50_s=percentile(steps, 0.5),
                step_p95_s=percentile(steps, 0.95),
                prefill_unit_p95_s={kind: value for kind, value in units.items() if value is not None},
            )
