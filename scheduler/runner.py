"""Interval jobs on APScheduler 3.x's ``AsyncIOScheduler``, with a record of every run.

A job is an ``async`` callable returning a :class:`JobResult`. Runs of one job never overlap (APScheduler's
``max_instances=1`` for the timer, a lock for runs started by hand), late runs are coalesced, and an exception is
logged and counted in the job's :class:`ScheduledJobState` without stopping the scheduler or the job's next runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.maintenance import JobRun, Outcome, ScheduledJobState

logger = logging.getLogger(__name__)


class JobSkipped(Exception):
    """Raised by a job that decided not to do its work this time (e.g. the engine is busy)."""


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a job reports: a sentence for people, figures for machines."""

    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


JobFunc = Callable[[], Awaitable[JobResult]]


@dataclass(slots=True)
class _ScheduledJob:
    func: JobFunc
    state: ScheduledJobState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class IntervalScheduler:
    """Runs registered jobs every ``interval_s`` seconds while started."""

    def __init__(self) -> None:
        self._jobs: dict[str, _ScheduledJob] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._running_tasks: set[asyncio.Task[Any]] = set()

    def add_job(self, name: str, func: JobFunc, interval_s: float) -> None:
        """Register a job (before or after start). Names are unique."""
        if name in self._jobs:
            raise ValueError(f"a job named {name!r} exists already")
        if interval_s <= 0:
            raise ValueError(f"the interval of {name!r} must be positive, not {interval_s}")
        self._jobs[name] = _ScheduledJob(func, ScheduledJobState(name, interval_s))
        if self._scheduler is not None:
            self._schedule(self._scheduler, name, interval_s)

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def states(self) -> list[ScheduledJobState]:
        return [job.state for job in self._jobs.values()]

    def state(self, name: str) -> ScheduledJobState:
        return self._jobs[name].state

    async def start(self) -> None:
        if self._scheduler is not None:
            return
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        for name, job in self._jobs.items():
            self._schedule(scheduler, name, job.state.interval_s)
        scheduler.start()
        self._scheduler = scheduler
        logger.info("scheduler started: %s", ", ".join(f"{j.state.name} every {j.state.interval_s:g} s"
                                                         for j in self._jobs.values()) or "no jobs")

    async def stop(self) -> None:
        """Stop the timer and cancel runs in progress (waiting for them to unwind)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop iteration
        tasks = [t for t in self._running_tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("scheduler stopped")

    async def run_now(self, name: str, func: JobFunc | None = None) -> JobRun:
        """Run a job at once (after a run in progress ends) and return its record.

        ``func`` replaces the job's function for this run (e.g. a forced variant); it counts as a run of the job.
        """
        job = self._jobs[name]
        return await self._execute(job, wait_for_lock=True, func=func)

    def _schedule(self, scheduler: AsyncIOScheduler, name: str, interval_s: float) -> None:
        scheduler.add_job(self._on_timer, "interval", seconds=interval_s, args=[name], id=name, name=name,
                          replace_existing=True)

    async def _on_timer(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is not None:
            await self._execute(job, wait_for_lock=False)

    async def _execute(self, job: _ScheduledJob, *, wait_for_lock: bool, func: JobFunc | None = None) -> JobRun:
        state = job.state
        if job.lock.locked() and not wait_for_lock:
            logger.info("job %s is still running; this run is skipped", state.name)
            run = JobRun("skipped", time.time(), 0.0, "the previous run was still going")
            state.skips += 1
            return run
        async with job.lock:
            # The run gets its own task, so that stop() cancels the run and not whoever asked for it.
            run_task = asyncio.create_task(self._run_locked(job, func or job.func), name=f"job:{state.name}")
            self._running_tasks.add(run_task)
            run_task.add_done_callback(self._running_tasks.discard)
            try:
                return await run_task
            except asyncio.CancelledError:
                caller = asyncio.current_task()
                if (caller is not None and caller.cancelling()) or state.last is None:
                    raise
                return state.last  # the run was cancelled by stop(): report it as such

    async def _run_locked(self, job: _ScheduledJob, func: JobFunc) -> JobRun:
        state = job.state
        started_at, t0 = time.time(), time.monotonic()
        state.running = True
        outcome: Outcome = "ok"
        detail, data = "", {}
        try:
            result = await func()
            detail, data = result.detail, dict(result.data)
        except JobSkipped as skipped:
            outcome, detail = "skipped", str(skipped)
        except asyncio.CancelledError:
            outcome, detail = "cancelled", "stopped with the scheduler"
            raise
        except Exception as exc:
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.exception("job %s failed", state.name)
        finally:
            run = JobRun(outcome, started_at, time.monotonic() - t0, detail, data)
            state.running = False
            state.runs += 1
            state.last = run
            if outcome == "failed":
                state.failures += 1
                state.last_failure = run
            elif outcome == "skipped":
                state.skips += 1
        logger.debug("job %s %s in %.3f s: %s", state.name, outcome, run.duration_s, detail)
        return run
