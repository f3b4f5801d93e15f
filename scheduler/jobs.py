"""The maintenance jobs: memory cleanup, engine liveness, connection watchdog, expiry, metrics snapshots.

Each job is an object with an ``async run()`` returning a :class:`JobResult` (or raising :class:`JobSkipped`);
the state it keeps (liveness, forced reconnects, snapshots) is what ``/status``, ``/readyz`` and the status page
read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

from bot.engine import EngineStats
from bot.errors import EngineError
from bot.ring import Snapshot, SnapshotRing
from bot.settings import SchedulerSettings
from bot.types import AdapterHealth
from scheduler.runner import JobResult, JobSkipped

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bot.app import Application

logger = logging.getLogger(__name__)

MIB = 2**20


class EngineStuck(RuntimeError):
    """The model's worker thread did not run a ping in time."""


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f} MiB"


def _cleanup_on_worker(device: str, settings: SchedulerSettings, force: bool) -> dict[str, Any]:
    """Runs on the model's worker thread: ``gc.collect()``, then ``empty_cache()`` past a threshold (or forced)."""
    from inference import memory

    return memory.cleanup(
        device,
        fragmentation_threshold=settings.cleanup_fragmentation,
        unused_reserved_bytes=settings.cleanup_unused_reserved_bytes,
        force=force,
    )


def describe_cleanup(figures: dict[str, Any]) -> str:
    """One sentence about what a cleanup freed."""
    before, after = figures["before"], figures["after"]
    parts = []
    if "cuda_reserved_bytes" in before:
        freed = before["cuda_reserved_bytes"] - after.get("cuda_reserved_bytes", 0.0)
        parts.append(
            f"GPU reserved {_mib(before['cuda_reserved_bytes'])} → {_mib(after.get('cuda_reserved_bytes', 0.0))} "
            f"(freed {_mib(max(freed, 0.0))}; allocated {_mib(after.get('cuda_allocated_bytes', 0.0))}, "
            f"fragmentation {after.get('cuda_fragmentation', 0.0):.0%})"
        )
        parts.append(("cache emptied: " if figures["emptied_cache"] else "cache kept: ") + figures["reason"])
    rss_delta = before["host_rss_bytes"] - after["host_rss_bytes"]
    parts.append(f"host RSS {_mib(before['host_rss_bytes'])} → {_mib(after['host_rss_bytes'])} "
                 f"(freed {_mib(max(rss_delta, 0.0))})")
    parts.append(f"gc collected {figures['gc_collected']} objects")
    return "; ".join(parts)


class MemoryCleanup:
    """GPU/host memory cleanup on the engine's worker thread; scheduled runs only when the engine is idle."""

    def __init__(self, app: Application, settings: SchedulerSettings) -> None:
        self._app = app
        self._settings = settings

    async def run(self, *, force: bool = False) -> JobResult:
        stats = self._app.engine.stats()
        if not stats.ready:
            raise JobSkipped("the engine is not ready")
        if not force and (stats.queue_depth or stats.in_flight):
            raise JobSkipped(f"the engine is busy ({stats.queue_depth} waiting, {stats.in_flight} in flight)")
        try:
            figures = await self._app.engine.run_on_worker(
                partial(_cleanup_on_worker, stats.device, self._settings, force), self._settings.cleanup_timeout_s
            )
        except NotImplementedError as exc:
            raise JobSkipped("the engine has no local model to clean up after") from exc
        return JobResult(describe_cleanup(figures), figures)


def _ping() -> float:
    return time.monotonic()


def _progress(stats: EngineStats) -> int:
    """Work only the worker thread does (tokens generated, batches started, answers completed).

    Requests settled on the event loop (deadlines passed, "busy" refusals, cancellations) go on while the worker
    hangs, so they are not progress.
    """
    return stats.generated_tokens + stats.batches + stats.requests_by_outcome.get("answered", 0)


class EngineLiveness:
    """Runs a tiny callable on the model's worker thread; no reply within the timeout means the worker is stuck.

    A worker stuck for ``engine_stuck_exit_s`` (no ping answered, no progress) is given up on: the application fails
    ``/healthz`` and ends the process for its supervisor to restart (:meth:`bot.app.Application.engine_stuck`).
    Any progress (a long batch generating) resets that timer. A remote model server that does not answer only
    fails ``/readyz``: restarting the bot would not bring it back.
    """

    def __init__(self, app: Application, settings: SchedulerSettings) -> None:
        self._app = app
        self._settings = settings
        self.alive: bool | None = None
        """None before the first ping, False while the worker does not answer."""
        self.stuck_count = 0
        """Pings that timed out, over the process's life."""
        self.last_ok_at: float | None = None
        self.last_round_trip_s: float | None = None
        self.stuck_since: float | None = None
        """Wall-clock time the unanswered pings began (None while the worker answers or makes progress)."""
        self.gave_up = False
        """True once the worker was stuck for ``engine_stuck_exit_s`` and the application was told to restart."""
        self._stuck_started: float | None = None

    def stuck_for_s(self) -> float:
        """How long the worker has been stuck (0 while it answers or makes progress)."""
        return 0.0 if self._stuck_started is None else time.monotonic() - self._stuck_started

    def _answers(self) -> None:
        self.alive = True
        self.stuck_since = self._stuck_started = None

    async def run(self) -> JobResult:
        stats = self._app.engine.stats()
        if not stats.ready:
            raise JobSkipped("the engine is not ready")
        timeout = self._settings.liveness_timeout_s
        ping_server = getattr(self._app.engine, "ping", None)
        if ping_server is not None:
            return await self._ping_server(ping_server, timeout)
        started = time.monotonic()
        try:
            await self._app.engine.run_on_worker(_ping, timeout)
        except NotImplementedError as exc:
            raise JobSkipped("the engine has no local worker thread to ping") from exc
        except TimeoutError as exc:
            produced = _progress(self._app.engine.stats()) - _progress(stats)
            if produced > 0:  # a long batch, not a hang: the ping waits for the batch to end
                if self.alive is False:
                    logger.warning("the model's worker thread makes progress again")
                self._answers()
                return JobResult(f"no reply within {timeout:g} s, but the worker is generating "
                                 f"({produced} tokens, batches and answers meanwhile)", {"busy": True})
            self.stuck_count += 1
            if self._stuck_started is None:
                self._stuck_started = started
                self.stuck_since = time.time() - (time.monotonic() - started)
            self.alive = False
            stuck_for = self.stuck_for_s()
            logger.error("the model's worker thread did not answer a ping within %g s (stuck for %.0f s)",
                         timeout, stuck_for)
            limit = self._settings.engine_stuck_exit_s
            if limit > 0 and stuck_for >= limit and not self.gave_up:
                self.gave_up = True
                self._app.engine_stuck(f"the model's worker thread has been stuck for {stuck_for:.0f} s")
            raise EngineStuck(f"the model's worker thread did not answer within {timeout:g} s "
                              f"(stuck for {stuck_for:.0f} s)") from exc
        self.last_round_trip_s = time.monotonic() - started
        if self.alive is False:
            logger.warning("the model's worker thread answers again")
        self._answers()
        self.last_ok_at = time.time()
        return JobResult(f"worker answered in {self.last_round_trip_s * 1000:.1f} ms",
                         {"round_trip_s": self.last_round_trip_s})

    async def _ping_server(self, ping_server: Callable[[float], Awaitable[float]], limit_s: float) -> JobResult:
        """A remote engine (``PEEKBOT_BACKEND=openai``) is alive while its server answers ``GET /models``."""
        try:
            round_trip = await ping_server(limit_s)
        except (TimeoutError, EngineError) as exc:
            reason = str(exc) or f"no answer within {limit_s:g} s"
            self.stuck_count += 1
            if self.alive is not False:
                self.stuck_since = time.time()
                self._stuck_started = time.monotonic()
            self.alive = False
            logger.error("the model server does not answer the liveness ping: %s", reason)
            raise EngineStuck(f"the model server does not answer: {reason}") from exc
        if self.alive is False:
            logger.warning("the model server answers again")
        self._answers()
        self.last_ok_at = time.time()
        self.last_round_trip_s = round_trip
        return JobResult(f"model server answered in {round_trip * 1000:.1f} ms", {"round_trip_s": round_trip})


def stale_reason(health: AdapterHealth, stale_after_s: float) -> str | None:
    """Why an adapter needs a fresh connection, or None when it looks healthy."""
    if not health.connected:
        return "not connected" + (f" ({health.detail})" if health.detail else "")
    if health.last_pong_age_s is not None and health.last_pong_age_s > stale_after_s:
        return f"no pong for {health.last_pong_age_s:.0f} s"
    return None


class ConnectionWatchdog:
    """Reconnects adapters that are disconnected or stale (platform liveness is each adapter's ``health()``)."""

    def __init__(self, app: Application, settings: SchedulerSettings) -> None:
        self._app = app
        self._settings = settings
        self.forced_reconnects: Counter[str] = Counter()
        self.failed_reconnects: Counter[str] = Counter()
        self.last_health: dict[str, AdapterHealth] = {}
        self._disconnected_checks: Counter[str] = Counter()

    async def run(self) -> JobResult:
        self.last_health = await self._app.adapter_health()
        reconnected: list[str] = []
        notes: list[str] = []
        failed = False
        for name, health in self.last_health.items():
            reason = stale_reason(health, self._settings.watchdog_stale_after_s)
            if reason is None:
                self._disconnected_checks.pop(name, None)
                continue
            if not health.connected:
                self._disconnected_checks[name] += 1
                if self._disconnected_checks[name] < self._settings.watchdog_disconnected_checks:
                    notes.append(f"{name} {reason}: giving its own reconnect until the next check")
                    continue
            self._disconnected_checks.pop(name, None)
            logger.warning("adapter %s is stale (%s): reconnecting", name, reason)
            self.forced_reconnects[name] += 1
            try:
                await asyncio.wait_for(self._app.adapters[name].reconnect(),
                                       self._settings.watchdog_reconnect_timeout_s)
            except Exception as exc:
                self.failed_reconnects[name] += 1
                failed = True
                logger.exception("forced reconnect of %s failed", name)
                notes.append(f"{name} ({reason}): reconnect failed: {exc or type(exc).__name__}")
                continue
            reconnected.append(name)
            notes.append(f"reconnected {name} ({reason})")
        if failed:
            raise RuntimeError("; ".join(notes))
        if not notes:
            return JobResult("healthy: " + (", ".join(self.last_health) or "no adapters"))
        return JobResult("; ".join(notes), {"reconnected": reconnected})


class StateExpiry:
    """Forgets dedupe keys, finished jobs, idle conversations, old audit records and per-day usage."""

    def __init__(self, app: Application) -> None:
        self._app = app

    async def run(self) -> JobResult:
        core = self._app.settings.core
        store = self._app.store
        day_s = 24 * 3600.0
        figures = {
            "dedupe_keys": await store.dedupe.expire_keys(),
            "finished_jobs": await store.jobs.expire_jobs(core.dedupe_ttl_s),
            "conversations": await store.conversations.expire_conversations(core.conversation_retention_days * day_s),
            "audit_records": await store.audit.expire_audit(core.audit_retention_days * day_s),
            "usage_days": self._app.usage.expire(),
        }
        detail = ", ".join(f"{count} {what.replace('_', ' ')}" for what, count in figures.items())
        return JobResult(f"expired {detail}", figures)


class MetricsSnapshots:
    """Records queue, latency and memory figures into a ring buffer covering ``snapshot_history_s``."""

    def __init__(self, app: Application, settings: SchedulerSettings) -> None:
        self._app = app
        capacity = max(2, int(settings.snapshot_history_s / settings.snapshot_interval_s) + 1)
        self.ring = SnapshotRing(capacity)

    async def run(self) -> JobResult:
        snapshot = self.take()
        self.ring.append(snapshot)
        return JobResult(f"queue {snapshot.queue_depth}, {snapshot.requests} requests since the last snapshot")

    def take(self) -> Snapshot:
        from inference.memory import host_rss_bytes

        now = time.time()
        previous = self.ring.latest()
        since = previous.ts if previous is not None else now - 60.0
        finished = self._app.usage.recent(since)
        p50, p95 = self._app.usage.latency_percentiles(since)
        stats = self._app.engine.stats()
        memory = stats.memory
        rss = memory.get("host_rss_bytes")
        return Snapshot(
            ts=now,
            queue_depth=stats.queue_depth,
            in_flight=stats.in_flight,
            requests=len(finished),
            latency_p50_s=p50,
            latency_p95_s=p95,
            rss_bytes=int(rss) if rss is not None else host_rss_bytes(),
            gpu_allocated_bytes=memory.get("cuda_allocated_bytes"),
            gpu_reserved_bytes=memory.get("cuda_reserved_bytes"),
        )
