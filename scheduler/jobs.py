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
from typing import TYPE_CHECKING

from bot.engine import EngineStats
from bot.errors import EngineError
from bot.maintenance import describe_cleanup
from bot.ring import Snapshot, SnapshotRing
from bot.settings import SchedulerSettings
from bot.types import AdapterHealth
from scheduler.runner import JobResult, JobSkipped

if TYPE_CHECKING:

    from bot.app import Application

logger = logging.getLogger(__name__)

class EngineStuck(RuntimeError):
    """The model's worker thread did not run a ping in time."""


class MemoryCleanup:
    """The engine's memory cleanup (``Engine.cleanup``, between batches); scheduled runs only when it is idle."""

    def __init__(self, app: Application, settings: SchedulerSettings) -> None:
        self._app = app
        self._settings = settings

    async def run(self, *, force: bool = False) -> JobResult:
        engine = self._app.engine
        stats = engine.stats()
        if not stats.ready:
            raise JobSkipped("the engine is not ready")
        if not force and (stats.queue_depth or stats.in_flight):
            raise JobSkipped(f"the engine is busy ({stats.queue_depth} waiting, {stats.in_flight} in flight)")
        report = await engine.cleanup(
            force=force,
            fragmentation_threshold=self._settings.cleanup_fragmentation,
            unused_reserved_bytes=self._settings.cleanup_unused_reserved_bytes,
            timeout_s=self._settings.cleanup_timeout_s,
        )
        if report.skipped is not None:
            raise JobSkipped(report.skipped)
        return JobResult(describe_cleanup(report.figures), report.figures)


def _progress(stats: EngineStats) -> int:
    """Work only the worker thread does (tokens generated, batches started, answers completed).

    Requests settled on the event loop (deadlines passed, "busy" refusals, cancellations) go on while the worker
    hangs, so they are not progress.
    """
    return stats.generated_tokens + stats.batches + stats.requests_by_outcome.get("answered", 0)


class EngineLiveness:
    """Pings the engine (``Engine.ping``: the model's worker thread between batches, or the remote server); no reply
    within the timeout means it is stuck.

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
        engine = self._app.engine
        stats = engine.stats()
        if not stats.ready:
            raise JobSkipped("the engine is not ready")
        timeout = self._settings.liveness_timeout_s
        what = "the model's worker thread" if engine.in_process else "the model server"
        started = time.monotonic()
        try:
            round_trip = await engine.ping(timeout)
        except TimeoutError as exc:
            produced = _progress(engine.stats()) - _progress(stats)
            if engine.in_process and produced > 0:  # a long batch, not a hang: the ping waits for the batch to end
                if self.alive is False:
                    logger.warning("the model's worker thread makes progress again")
                self._answers()
                return JobResult(f"no reply within {timeout:g} s, but the worker is generating "
                                 f"({produced} tokens, batches and answers meanwhile)", {"busy": True})
            raise self._stuck(started, what, f"did not answer within {timeout:g} s") from exc
        except EngineError as exc:  # not running, or a remote server that is down or refuses us
            raise self._stuck(started, what, f"does not answer: {exc}") from exc
        self.last_round_trip_s = round_trip
        if self.alive is False:
            logger.warning("%s answers again", what)
        self._answers()
        self.last_ok_at = time.time()
        who = "worker" if engine.in_process else "model server"
        return JobResult(f"{who} answered in {round_trip * 1000:.1f} ms", {"round_trip_s": round_trip})

    def _stuck(self, started: float, what: str, problem: str) -> EngineStuck:
        """Count an unanswered ping; an in-process worker stuck past ``engine_stuck_exit_s`` is given up on."""
        self.stuck_count += 1
        if self._stuck_started is None:
            self._stuck_started = started
            self.stuck_since = time.time() - (time.monotonic() - started)
        self.alive = False
        stuck_for = self.stuck_for_s()
        logger.error("%s %s (stuck for %.0f s)", what, problem, stuck_for)
        limit = self._settings.engine_stuck_exit_s
        if self._app.engine.in_process and limit > 0 and stuck_for >= limit and not self.gave_up:
            self.gave_up = True
            self._app.engine_stuck(f"{what} has been stuck for {stuck_for:.0f} s")
        return EngineStuck(f"{what} {problem} (stuck for {stuck_for:.0f} s)")


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
    """Forgets dedupe keys, finished jobs, idle conversations, old audit records and ratings, and per-day usage."""

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
            "ratings": await store.ratings.expire_ratings(core.audit_retention_days * day_s),
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
            rss_bytes=int(rss) if rss is not None else None,
            gpu_allocated_bytes=memory.get("cuda_allocated_bytes"),
            gpu_reserved_bytes=memory.get("cuda_reserved_bytes"),
        )
