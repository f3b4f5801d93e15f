"""The job journal's side of the application: accept before ack, lease while answering, resume after a restart.

Every accepted question is written to the journal (``accepted``) before the adapter acks the platform. While it is
answered the job is ``running`` and leased to this process; the lease is renewed in the background. A job whose
owner died (kill -9, a lost node) keeps its lease until it runs out, then another process (or the next start of
this one) takes it over, fetches its files again and answers it through ``adapter.reply_for`` — editing the same
placeholder when the first process had posted one. A job interrupted ``max_job_attempts`` times gets an apology
instead of another try, so one poisonous question cannot crash-loop the bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.settings import CoreSettings
from bot.store.base import Job, JobState, Store
from bot.store.codec import decode_message, encode_message
from bot.types import IncomingMessage, ReplyHandle, ResumableReply

logger = logging.getLogger(__name__)

GAVE_UP_REPLY = (
    "Sorry, I was interrupted {attempts} times while answering this (I restarted), so I've stopped trying. "
    "Please ask again; if it keeps happening, tell an admin."
)

ResumeCallback = Callable[[Job, IncomingMessage], Awaitable[None]]


def job_id_for(message: IncomingMessage) -> str:
    return f"{message.platform}:{message.message_id}"


class JobKeeper:
    """Journals this process's jobs and keeps their leases alive."""

    def __init__(self, store: Store, settings: CoreSettings) -> None:
        self._store = store
        self._settings = settings
        self.owner = settings.instance_id
        self._live: set[str] = set()
        self.resumed = 0
        self.gave_up = 0

    @property
    def lease_s(self) -> float:
        return self._settings.job_lease_s

    async def accept(self, message: IncomingMessage) -> Job | None:
        """Journal a new question; None when its job already exists (a duplicate delivery)."""
        now = time.time()
        job = Job(
            job_id=job_id_for(message),
            platform=message.platform,
            conversation=str(message.conversation),
            user=message.user.key,
            message=encode_message(message),
            created_at=now,
            updated_at=now,
        )
        if not await self._store.jobs.accept(job, self.owner, self.lease_s):
            return None
        self._live.add(job.job_id)
        return job

    def adopt(self, job: Job) -> None:
        self._live.add(job.job_id)

    async def running(self, job: Job, reply: ReplyHandle) -> None:
        state = reply.resume_state() if isinstance(reply, ResumableReply) else None
        await self._store.jobs.mark(job.job_id, JobState.RUNNING, reply_state=state)

    async def finished(self, job: Job, *, answered: bool, error: str = "") -> None:
        self._live.discard(job.job_id)
        state = JobState.ANSWERED if answered else JobState.FAILED
        try:
            await self._store.jobs.mark(job.job_id, state, error=error)
        except Exception:
            logger.exception("could not mark job %s %s", job.job_id, state)

    async def release(self, job: Job) -> None:
        """Leave an unfinished job for the next process: its lease ends now."""
        self._live.discard(job.job_id)
        try:
            await self._store.jobs.renew(self.owner, [job.job_id], 0.0)
        except Exception:
            logger.exception("could not release job %s", job.job_id)

    async def renew(self) -> None:
        if self._live:
            await self._store.jobs.renew(self.owner, sorted(self._live), self.lease_s)

    async def take_over(self, *, include_live: bool) -> list[tuple[Job, IncomingMessage | None]]:
        """Claim unfinished jobs (expired leases, or all of them at the start of a single-process store)."""
        jobs = await self._store.jobs.take_over(self.owner, self.lease_s, include_live=include_live)
        claimed: list[tuple[Job, IncomingMessage | None]] = []
        for job in jobs:
            if job.job_id in self._live:
                # Our own lease ran out (a stalled loop) while we are still answering it: keep going, once.
                logger.warning("job %s: lease lapsed while answering; renewed", job.job_id)
                continue
            try:
                message: IncomingMessage | None = decode_message(job.message)
            except Exception:
                logger.exception("job %s has an unreadable message; marking it failed", job.job_id)
                await self._store.jobs.mark(job.job_id, JobState.FAILED, error="unreadable journal entry")
                continue
            self._live.add(job.job_id)
            claimed.append((job, message))
        return claimed

    def exhausted(self, job: Job) -> bool:
        return job.attempts >= self._settings.max_job_attempts

    async def lease_loop(
        self,
        on_orphans: ResumeCallback,
        *,
        take_over: Callable[[], bool] = lambda: True,
        interval_s: float | None = None,
    ) -> None:
        """Renew our leases and (while ``take_over()``) pick up jobs whose owner stopped renewing theirs."""
        interval = interval_s if interval_s is not None else max(0.5, self.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
                if not take_over():
                    continue
                for job, message in await self.take_over(include_live=False):
                    if message is not None:
                        self.resumed += 1
                        await on_orphans(job, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("journal lease upkeep failed; trying again in %.0f s", interval)
