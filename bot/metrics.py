"""Prometheus metrics: per-question instruments fed by the usage recorder, the rest read from the app at scrape time.

Each application has its own registry (no global state), served by ``/metrics``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.types import AdapterHealth
from bot.usage import ANSWERED, RequestRecord

if TYPE_CHECKING:
    from bot.app import Application

LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

# Engine memory figures (inference.memory) under their exported names; other figures get a derived name.
_MEMORY_NAMES = {
    "host_rss_bytes": ("peekbot_host_rss_bytes", "Resident set size of the process."),
    "cuda_allocated_bytes": ("peekbot_gpu_allocated_bytes", "GPU memory held by tensors."),
    "cuda_reserved_bytes": ("peekbot_gpu_reserved_bytes", "GPU memory reserved by the caching allocator."),
    "cuda_fragmentation": ("peekbot_gpu_fragmentation_ratio", "1 - allocated/reserved of the caching allocator."),
    "cuda_free_bytes": ("peekbot_gpu_free_bytes", "Free memory on the GPU (all processes)."),
    "cuda_total_bytes": ("peekbot_gpu_total_bytes", "Total memory of the GPU."),
}


def _memory_metric_name(key: str) -> str:
    known = _MEMORY_NAMES.get(key)
    if known:
        return known[0]
    return "peekbot_" + re.sub(r"[^a-zA-Z0-9_]", "_", key.replace("cuda_", "gpu_"))


class AppMetrics:
    """The application's Prometheus registry. ``await render()`` gives the text exposition."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self.registry = CollectorRegistry()
        self.requests = Counter("peekbot_requests", "Questions by platform and outcome.", ["platform", "outcome"],
                                registry=self.registry)
        self.errors = Counter("peekbot_errors", "Failed questions by error kind.", ["kind"], registry=self.registry)
        self.latency = Histogram("peekbot_request_latency_seconds", "Time from accepting a question to its answer.",
                                 ["platform"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("peekbot_queue_wait_seconds", "Time a question waited for the engine.",
                                    buckets=QUEUE_WAIT_BUCKETS, registry=self.registry)
        self.tokens = Counter("peekbot_tokens", "Tokens of answered and failed questions.", ["kind"],
                              registry=self.registry)
        self.feedback = Counter("peekbot_feedback", "Answers rated by people (helpful / not_helpful); a changed "
                                "rating counts under its new value.", ["platform", "rating"], registry=self.registry)
        self._state = _StateCollector(app)
        self.registry.register(self._state)
        app.usage.subscribe(self.observe)
        app.ratings.subscribe(self.rated)

    def observe(self, record: RequestRecord) -> None:
        self.requests.labels(record.platform, record.outcome).inc()
        if record.error_kind:
            self.errors.labels(record.error_kind).inc()
        if record.outcome == ANSWERED:
            self.latency.labels(record.platform).observe(record.latency_s)
        if record.queue_wait_s is not None:
            self.queue_wait.observe(record.queue_wait_s)
        if record.prompt_tokens:
            self.tokens.labels("prompt").inc(record.prompt_tokens)
        if record.generated_tokens:
            self.tokens.labels("generated").inc(record.generated_tokens)

    def rated(self, platform: str, rating: str) -> None:
        self.feedback.labels(platform, rating).inc()

    async def render(self) -> bytes:
        """The exposition text, with adapter health fetched first (health checks are async)."""
        self._state.adapter_health = await self._app.adapter_health()
        return generate_latest(self.registry)


def _gauge(name: str, documentation: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    if labels is None:
        return GaugeMetricFamily(name, documentation, value=value)
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class _StateCollector(Collector):
    """Figures the application already keeps (engine stats, counters, adapters, jobs), read at scrape time."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self.adapter_health: dict[str, AdapterHealth] = {}

    def collect(self) -> Iterator[Metric]:
        app = self._app
        stats = app.engine.stats()
        yield _gauge("peekbot_start_time_seconds", "When the application started (unix time).", app.started_at)
        yield _gauge("peekbot_uptime_seconds", "Seconds since the application started.", time.time() - app.started_at)
        yield _gauge("peekbot_paused", "1 while in maintenance mode.", float(app.paused))
        yield _gauge("peekbot_engine_ready", "1 when the model is loaded.", float(stats.ready))
        yield _gauge("peekbot_queue_depth", "Engine requests waiting for a batch slot.", stats.queue_depth)
        yield _gauge("peekbot_queue_limit", "Engine queue capacity.", stats.queue_limit)
        yield _gauge("peekbot_engine_in_flight", "Engine requests being generated.", stats.in_flight)
        yield _gauge("peekbot_questions_in_flight", "Questions and commands being handled.", app.in_flight)
        yield _gauge("peekbot_tokens_per_second", "Generated tokens per second (last minute).", stats.tokens_per_s)
        yield CounterMetricFamily("peekbot_engine_generated_tokens", "Tokens the engine generated.",
                                  value=stats.generated_tokens)
        if stats.step_p95_s is not None:
            yield _gauge("peekbot_engine_step_p95_seconds", "Time of one decoding step, p95 of the last minute.",
                         stats.step_p95_s)
        units = GaugeMetricFamily("peekbot_engine_prefill_unit_p95_seconds",
                                  "Prefill work run between two decoding steps, p95 of the last minute.",
                                  labels=["kind"])
        for kind, seconds in sorted(stats.prefill_unit_p95_s.items()):
            units.add_metric([kind], seconds)
        yield units
        outcomes = CounterMetricFamily("peekbot_engine_requests", "Engine requests by outcome.", labels=["outcome"])
        for outcome, count in sorted(stats.requests_by_outcome.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        for key, value in sorted(stats.memory.items()):
            name = _memory_metric_name(key)
            documentation = _MEMORY_NAMES.get(key, ("", f"Engine memory figure {key}."))[1]
            yield _gauge(name, documentation, value)

        for counter, name, documentation in (
            ("accepted", "peekbot_accepted_events", "Platform events accepted as new messages."),
            ("duplicates", "peekbot_deduplicated_events", "Redelivered events and messages that were dropped."),
            ("commands", "peekbot_commands", "Chat commands handled."),
        ):
            yield CounterMetricFamily(name, documentation, value=app.counters.get(counter, 0))

        yield from self._adapters()
        yield from self._maintenance()

    def _adapters(self) -> Iterator[Metric]:
        maintenance = self._app.maintenance
        forced = maintenance.forced_reconnects() if maintenance is not None else {}
        connected = GaugeMetricFamily("peekbot_adapter_connected", "1 while the platform connection is up.",
                                      labels=["adapter"])
        reconnects = CounterMetricFamily("peekbot_adapter_reconnects", "Reconnects the adapter made (any cause).",
                                         labels=["adapter"])
        watchdog = CounterMetricFamily("peekbot_watchdog_reconnects", "Reconnects the watchdog forced.",
                                       labels=["adapter"])
        for name in sorted(self._app.adapters):
            health = self.adapter_health.get(name)
            if health is not None:
                connected.add_metric([name], float(health.connected))
                reconnects.add_metric([name], health.reconnects)
            watchdog.add_metric([name], forced.get(name, 0))
        yield connected
        yield reconnects
        yield watchdog

    def _maintenance(self) -> Iterator[Metric]:
        maintenance = self._app.maintenance
        if maintenance is None:
            return
        if maintenance.engine_alive is not None:
            yield _gauge("peekbot_engine_alive", "1 when the last liveness ping came back in time.",
                         float(maintenance.engine_alive))
        yield CounterMetricFamily("peekbot_engine_stuck", "Liveness pings the worker thread did not answer.",
                                  value=maintenance.engine_stuck_count)
        runs = CounterMetricFamily("peekbot_job_runs", "Scheduler job runs.", labels=["job"])
        failures = CounterMetricFamily("peekbot_job_failures", "Scheduler job runs that raised.", labels=["job"])
        skips = CounterMetricFamily("peekbot_job_skips", "Scheduler job runs that skipped their work.",
                                    labels=["job"])
        duration = GaugeMetricFamily("peekbot_job_last_duration_seconds", "Duration of the last run.",
                                     labels=["job"])
        last_run = GaugeMetricFamily("peekbot_job_last_run_timestamp_seconds", "Start of the last run (unix time).",
                                     labels=["job"])
        for state in maintenance.job_states():
            runs.add_metric([state.name], state.runs)
            failures.add_metric([state.name], state.failures)
            skips.add_metric([state.name], state.skips)
            if state.last is not None:
                duration.add_metric([state.name], state.last.duration_s)
                last_run.add_metric([state.name], state.last.started_at)
        yield from (runs, failures, skips, duration, last_run)
