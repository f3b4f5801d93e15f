"""Background maintenance on APScheduler: memory cleanup, health pings, watchdog, expiry, metrics snapshots, and
systemd notifications (``scheduler.systemd``)."""

from bot.maintenance import JobRun, ScheduledJobState
from scheduler.runner import IntervalScheduler, JobResult, JobSkipped
from scheduler.service import MaintenanceScheduler

__all__ = ["IntervalScheduler", "JobResult", "JobRun", "JobSkipped", "MaintenanceScheduler", "ScheduledJobState"]
