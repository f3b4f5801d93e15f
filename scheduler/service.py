"""The maintenance service: every scheduler job of one application, started and stopped with it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.maintenance import JobRun, ScheduledJobState
from bot.ring import Snapshot, SnapshotRing
from bot.settings import SchedulerSettings
from scheduler.jobs import ConnectionWatchdog, EngineLiveness, MemoryCleanup, MetricsSnapshots, StateExpiry
from scheduler.runner import IntervalScheduler, JobResult
from scheduler.systemd import SystemdWatchdog, watchdog_interval_s

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)

CLEANUP = "memory-cleanup"
LIVENESS = "engine-liveness"
WATCHDOG = "connection-watchdog"
EXPIRY = "expiry"
SNAPSHOT = "metrics-snapshot"
SYSTEMD_WATCHDOG = "systemd-watchdog"


class MaintenanceScheduler:
    """Memory cleanup, engine liveness, connection watchdog, expiry and metrics snapshots on intervals
    (``bot.maintenance.Maintenance``, handed to the application by the composition root).

    Under systemd with ``WatchdogSec`` set, also ``WATCHDOG=1`` at half that interval (:class:`SystemdWatchdog`).
    """

    name = "scheduler"

    def __init__(self, app: Application, settings: SchedulerSettings | None = None) -> None:
        self.settings = settings or app.settings.scheduler
        self.cleanup = MemoryCleanup(app, self.settings)
        self.liveness = EngineLiveness(app, self.settings)
        self.watchdog = ConnectionWatchdog(app, self.settings)
        self.expiry = StateExpiry(app)
        self.snapshots = MetricsSnapshots(app, self.settings)
        self.jobs = IntervalScheduler()
        self.jobs.add_job(CLEANUP, self.cleanup.run, self.settings.cleanup_interval_s)
        self.jobs.add_job(LIVENESS, self.liveness.run, self.settings.health_interval_s)
        self.jobs.add_job(WATCHDOG, self.watchdog.run, self.settings.watchdog_interval_s)
        self.jobs.add_job(EXPIRY, self.expiry.run, self.settings.expiry_interval_s)
        self.jobs.add_job(SNAPSHOT, self.snapshots.run, self.settings.snapshot_interval_s)
        self.systemd_watchdog: SystemdWatchdog | None = None
        interval = watchdog_interval_s()
        if interval is not None:
            self.systemd_watchdog = SystemdWatchdog(app)
            self.jobs.add_job(SYSTEMD_WATCHDOG, self.systemd_watchdog.run, interval)

    @property
    def ring(self) -> SnapshotRing:
        return self.snapshots.ring

    # bot.maintenance.Maintenance: what /status, /cleanup, /readyz, /metrics and the status page read -------------
    @property
    def engine_alive(self) -> bool | None:
        return self.liveness.alive

    @property
    def engine_stuck_count(self) -> int:
        return self.liveness.stuck_count

    @property
    def history_s(self) -> float:
        return self.settings.snapshot_history_s

    def forced_reconnects(self) -> Mapping[str, int]:
        return self.watchdog.forced_reconnects

    def snapshots_since(self, since: float) -> list[Snapshot]:
        return self.ring.since(since)

    async def start(self) -> None:
        await self.jobs.start()
        await self.jobs.run_now(SNAPSHOT)  # the status page has a first point at once

    async def stop(self) -> None:
        await self.jobs.stop()

    async def cleanup_now(self) -> JobRun:
        """Run the memory cleanup at once, busy or not (between batches), emptying the CUDA cache."""

        async def forced() -> JobResult:
            return await self.cleanup.run(force=True)

        return await self.jobs.run_now(CLEANUP, forced)

    def job_states(self) -> list[ScheduledJobState]:
        return self.jobs.states()
