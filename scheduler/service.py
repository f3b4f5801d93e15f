"""The maintenance service: every scheduler job of one application, started and stopped with it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.ring import SnapshotRing
from bot.settings import SchedulerSettings
from scheduler.jobs import ConnectionWatchdog, EngineLiveness, MemoryCleanup, MetricsSnapshots, StateExpiry
from scheduler.runner import IntervalScheduler, JobResult, JobRun, ScheduledJobState
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
    """Memory cleanup, engine liveness, connection watchdog, expiry and metrics snapshots on intervals.

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
