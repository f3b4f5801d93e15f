"""Background maintenance on APScheduler: memory cleanup, health pings, watchdog, expiry, metrics snapshots, and
systemd notifications (``scheduler.systemd``)."""

from scheduler.runner import IntervalScheduler, JobResult, JobRun, JobSkipped, ScheduledJobState
from scheduler.service import MaintenanceScheduler

__all__ = ["IntervalScheduler", "JobResult", "JobRun", "JobSkipped", "MaintenanceScheduler", "ScheduledJobState"]
