"""The maintenance service: every scheduler job of one application, started and stopped with it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.ring import SnapshotRing
from bot.settings import SchedulerSettings
from scheduler.jobs import ConnectionWatchdog, EngineLiveness, MemoryCleanup, MetricsSnapshots, StateExpiry
from scheduler.runner import IntervalScheduler, JobResult, JobRun, JobState

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)

CLEANUP = "memory-cleanup"
LIVENESS = "engine-liveness"
WATCHDOG = "connection-watchdog"
EXPIRY = "expiry"
SNAPSHOT = "metrics-snapshot"


class MaintenanceScheduler:
    """Memory cleanup, engine liveness, connection watchdog, expiry and metrics snapshots on intervals."""

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

    def job_states(self) -> list[JobState]:
        return self.jobs.states()
