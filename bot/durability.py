"""The job journal's side of the application: accept before ack, lease while answering, resume after a restart.

Every accepted question is written to the journal (``accepted``) before the adapter acks the platform. While it is
answered the job is ``running`` and leased to this process; the lease is renewed in the background. A job whose
owner died (kill -9, a lost node) keeps its lease until it runs out, then another process (or the next start of
this one) takes it over, fetches its files again and answers it through ``adapter.reply_for`` — editing the same
placeholder when the first process had posted one. A job interrupted ``max_job_attempts`` times gets an apology
instead of another try, so one poisonous question cannot crash-loop the bot.

A lease is ownership. Only the owner may change a job (``mark`` with the owner is one atomic step in the store);
``renew`` answers which jobs are still ours. A process that stalled past its lease (a paused VM, a blocked loop)
may find its job taken over: it then stops generating and leaves the reply to the new owner, without an error
message and without finishing anything. Between renewals the keeper knows how long its leases surely hold (the
local deadline, a margin inside the lease); past it, the reply waits for the store to confirm before it touches
the chat.

Exactly once, also for the final answer. The core answers through a ``TrackedReply``: before the final answer goes
out its text is journaled (``journal.final``), after it went out in full ``journal.delivered`` is recorded at once.
A reply that can say which parts of a long answer it already posted (``bot.types.JournaledReply``) saves that
after each part. A restart or take-over that finds a delivered job finishes it without regenerating or posting; one
that finds a journaled final text delivers that same text again, and the adapter skips the parts already out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.i18n import CATALOGUE
from bot.settings import CoreSettings
from bot.store.base import Job, JobState, Store
from bot.store.codec import decode_message, encode_message
from bot.types import IncomingMessage, JournaledReply, ReplyHandle, ResumableReply

logger = logging.getLogger(__name__)

GAVE_UP_REPLY = CATALOGUE["app.gave_up"]["en"]
"""The apology for a question interrupted too often (``{attempts}``); ``bot.i18n`` key ``app.gave_up``."""

FINAL_TEXT = "journal.final"
"""Reply-state key: the final text (answer or error sentence) about to be, or being, delivered."""
FINAL_KIND = "journal.final_kind"
"""Reply-state key: ``finish`` (an answer) or ``fail`` (an error sentence)."""
DELIVERED = "journal.delivered"
"""Reply-state key: ``1`` once the final text was delivered in full."""
LEASE_MARGIN = 0.1
UNSURE_RETRY_S = 1.0
"""After the store failed to confirm a lease, how long streamed text is held back before asking again."""
"""Part of the lease not trusted locally (request latency, clock rate): the local deadline ends this much earlier."""

ResumeCallback = Callable[[Job, IncomingMessage], Awaitable[None]]
LostCallback = Callable[[str], None]


class LeaseLost(Exception):
    """Another process owns the job now: stop and leave its reply alone."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is owned by another process now")
        self.job_id = job_id


def job_id_for(message: IncomingMessage) -> str:
    return f"{message.platform}:{message.message_id}"


def was_delivered(job: Job) -> bool:
    """True when the job's final reply went out in full (only ``finished`` was left to do)."""
    return job.reply_state.get(DELIVERED) == "1"


def recorded_final(job: Job) -> tuple[str, str] | None:
    """The final text and kind (``finish``/``fail``) journaled before delivery, if any."""
    text = job.reply_state.get(FINAL_TEXT)
    if text is None:
        return None
    kind = job.reply_state.get(FINAL_KIND, "finish")
    return text, "fail" if kind == "fail" else "finish"


class JobKeeper:
    """Journals this process's jobs and keeps their leases alive; knows which jobs it still owns."""

    def __init__(self, store: Store, settings: CoreSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self.owner = settings.instance_id
        self._live: dict[str, float] = {}
        """Our unfinished jobs and, for each, the local time until which its lease surely holds."""
        self._lost: set[str] = set()
        self.resumed = 0
        self.gave_up = 0
        self.lost = 0
        """Jobs another process took over from this one (it stalled past their leases)."""

    @property
    def lease_s(self) -> float:
        return self._settings.job_lease_s

    def _hold(self, job_id: str, since: float) -> None:
        self._live[job_id] = since + self.lease_s * (1 - LEASE_MARGIN)

    def holds(self, job_id: str) -> bool:
        """True while the job's lease surely holds without asking the store."""
        deadline = self._live.get(job_id)
        return deadline is not None and self._clock() < deadline

    def is_lost(self, job_id: str) -> bool:
        """True when another process took this job over from us."""
        return job_id in self._lost

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
        since = self._clock()
        if not await self._store.jobs.accept(job, self.owner, self.lease_s):
            return None
        self._hold(job.job_id, since)
        return job

    def adopt(self, job: Job) -> None:
        self._hold(job.job_id, self._clock())

    def track(self, job: Job, reply: ReplyHandle) -> TrackedReply:
        """The reply handle the core answers ``job`` through (see ``TrackedReply``)."""
        return reply if isinstance(reply, TrackedReply) else TrackedReply(self, job, reply)

    async def running(self, job: Job, reply: ReplyHandle) -> None:
        """Mark the job running with the reply's state; ``LeaseLost`` when it is not ours any more."""
        state = reply.resume_state() if isinstance(reply, ResumableReply) else None
        if not await self._store.jobs.mark(job.job_id, JobState.RUNNING, owner=self.owner, reply_state=state):
            self._forget_lost(job.job_id)
            raise LeaseLost(job.job_id)

    async def save_state(self, job: Job, reply_state: dict[str, str]) -> bool:
        """Journal the reply's state while the job is ours; False (and the job counts as lost) when it is not."""
        if await self._store.jobs.mark(job.job_id, JobState.RUNNING, owner=self.owner, reply_state=reply_state):
            return True
        self._forget_lost(job.job_id)
        return False

    async def confirm(self, job: Job) -> None:
        """Renew this one lease now; ``LeaseLost`` when another process owns the job."""
        if job.job_id in self._lost:
            raise LeaseLost(job.job_id)
        since = self._clock()
        ours = await self._store.jobs.renew(self.owner, [job.job_id], self.lease_s)
        if job.job_id not in ours:
            self._forget_lost(job.job_id)
            raise LeaseLost(job.job_id)
        if job.job_id in self._live:
            self._hold(job.job_id, since)

    async def finished(self, job: Job, *, answered: bool, error: str = "") -> bool:
        """Mark the job answered or failed if it is still ours; returns whether it was."""
        self._live.pop(job.job_id, None)
        state = JobState.ANSWERED if answered else JobState.FAILED
        try:
            done = await self._store.jobs.mark(job.job_id, state, owner=self.owner, error=error)
        except Exception:
            logger.exception("could not mark job %s %s", job.job_id, state)
            return False
        if not done:
            logger.warning("job %s was taken over by another process; not marked %s here", job.job_id, state)
        return done

    async def release(self, job: Job) -> None:
        """Leave an unfinished job for the next process: its lease ends now (if it is still ours)."""
        self._live.pop(job.job_id, None)
        try:
            await self._store.jobs.renew(self.owner, [job.job_id], 0.0)
        except Exception:
            logger.exception("could not release job %s", job.job_id)

    async def renew(self) -> set[str]:
        """Renew our leases; returns the ids of jobs another process took from us (forgotten here)."""
        if not self._live:
            return set()
        since = self._clock()
        asked = sorted(self._live)
        ours = await self._store.jobs.renew(self.owner, asked, self.lease_s)
        lost: set[str] = set()
        for job_id in asked:
            if job_id not in self._live:
                continue  # finished or released meanwhile
            if job_id in ours:
                self._hold(job_id, since)
            else:
                lost.add(job_id)
                self._forget_lost(job_id)
        return lost

    def _forget_lost(self, job_id: str) -> None:
        self._live.pop(job_id, None)
        if job_id not in self._lost:
            self._lost.add(job_id)
            self.lost += 1
            logger.warning("job %s: another process took it over; leaving its reply to that process", job_id)

    def forget(self, job_id: str) -> None:
        """Done with a job (answered, released or lost): forget it."""
        self._live.pop(job_id, None)
        self._lost.discard(job_id)

    async def take_over(self, *, include_live: bool) -> list[tuple[Job, IncomingMessage | None]]:
        """Claim unfinished jobs (expired leases, or all of them at the start of a single-process store)."""
        since = self._clock()
        jobs = await self._store.jobs.take_over(self.owner, self.lease_s, include_live=include_live)
        claimed: list[tuple[Job, IncomingMessage | None]] = []
        for job in jobs:
            if job.job_id in self._live:
                # Our own lease ran out (a stalled loop) while we are still answering it: keep going, once.
                logger.warning("job %s: lease lapsed while answering; renewed", job.job_id)
                self._hold(job.job_id, since)
                continue
            try:
                message: IncomingMessage | None = decode_message(job.message)
            except Exception:
                logger.exception("job %s has an unreadable message; marking it failed", job.job_id)
                await self._store.jobs.mark(
                    job.job_id, JobState.FAILED, owner=self.owner, error="unreadable journal entry"
                )
                continue
            self._lost.discard(job.job_id)
            self._hold(job.job_id, since)
            claimed.append((job, message))
        return claimed

    def exhausted(self, job: Job) -> bool:
        return job.attempts >= self._settings.max_job_attempts

    async def lease_loop(
        self,
        on_orphans: ResumeCallback,
        *,
        on_lost: LostCallback | None = None,
        take_over: Callable[[], bool] = lambda: True,
        interval_s: float | None = None,
    ) -> None:
        """Renew our leases, report jobs taken from us (``on_lost``), and (while ``take_over()``) pick up jobs
        whose owner stopped renewing theirs."""
        interval = interval_s if interval_s is not None else max(0.5, self.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                for job_id in sorted(await self.renew()):
                    if on_lost is not None:
                        on_lost(job_id)
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


class TrackedReply:
    """The reply handle the core answers a journaled job through: it touches the chat only while the job is ours.

    Progress and streamed text pass through while the lease surely holds (else after the store confirmed it, or
    ``LeaseLost``). ``finish``/``fail`` journal the final text first (owner-checked: a process that lost the job
    posts nothing), deliver it, and record ``delivered`` at once. Only one final text is ever delivered; later
    calls are ignored. ``resume_state()`` is the wrapped reply's state (or, for a reply that has none, what the
    journal held) plus those journal keys. Anything else is the wrapped handle's.
    """

    def __init__(self, keeper: JobKeeper, job: Job, inner: ReplyHandle) -> None:
        self._keeper = keeper
        self.job = job
        self.inner = inner
        self._journal = {k: v for k, v in job.reply_state.items() if k in (FINAL_TEXT, FINAL_KIND, DELIVERED)}
        self._closed = False
        self._unsure_until = 0.0
        self.delivered = False
        if isinstance(inner, JournaledReply):
            inner.bind_journal(self._checkpoint, self._may_edit)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def resume_state(self) -> dict[str, str]:
        if isinstance(self.inner, ResumableReply):
            state = dict(self.inner.resume_state())
        else:
            state = {k: v for k, v in self.job.reply_state.items() if not k.startswith("journal.")}
        state.update(self._journal)
        return state

    async def start_progress(self, queue_position: int | None = None) -> None:
        if await self._may_touch():
            await self.inner.start_progress(queue_position)

    async def update(self, text: str) -> None:
        if await self._may_touch():
            await self.inner.update(text)

    async def finish(self, text: str) -> None:
        await self._final(text, "finish")

    async def fail(self, text: str) -> None:
        await self._final(text, "fail")

    def abandon(self) -> None:
        """The job is another process's now: stop background edits and touch nothing more."""
        self._closed = True
        if isinstance(self.inner, JournaledReply):
            self.inner.abandon()

    async def _may_touch(self) -> bool:
        """True when the reply may be shown new text now; ``LeaseLost`` when the job is another process's.

        While the store cannot confirm the lease, nothing is shown (another replica may have taken over).
        """
        if self._keeper.is_lost(self.job.job_id):
            raise LeaseLost(self.job.job_id)
        if self._closed or self._keeper.holds(self.job.job_id):
            return True
        if time.monotonic() < self._unsure_until:
            return False
        try:
            await self._keeper.confirm(self.job)
        except LeaseLost:
            raise
        except Exception:
            self._unsure_until = time.monotonic() + UNSURE_RETRY_S
            logger.warning("job %s: could not confirm its lease; showing nothing until it is", self.job.job_id)
            return False
        return True

    def _may_edit(self) -> bool:
        return not self._closed and self._keeper.holds(self.job.job_id)

    async def _checkpoint(self) -> None:
        """Journal the reply's progress through a long final answer; ``LeaseLost`` when the job is not ours."""
        try:
            if await self._keeper.save_state(self.job, self.resume_state()):
                return
        except Exception:
            logger.exception("job %s: could not journal the reply's progress; going on", self.job.job_id)
            return
        raise LeaseLost(self.job.job_id)

    async def _final(self, text: str, kind: str) -> None:
        if self._closed:
            logger.info("job %s: its reply is closed; a second final text was dropped", self.job.job_id)
            return
        self._closed = True
        self._journal.update({FINAL_TEXT: text, FINAL_KIND: kind})
        try:
            saved = await self._keeper.save_state(self.job, self.resume_state())
        except Exception:
            # The store is unreachable; deliver anyway while the lease surely holds (an answer beats a silence).
            logger.exception("job %s: could not journal the final text", self.job.job_id)
            saved = self._keeper.holds(self.job.job_id)
        if not saved:
            raise LeaseLost(self.job.job_id)
        await (self.inner.finish if kind == "finish" else self.inner.fail)(text)
        self.delivered = True
        self._journal[DELIVERED] = "1"
        try:
            await self._keeper.save_state(self.job, self.resume_state())
        except Exception:
            logger.exception("job %s: could not journal the delivery", self.job.job_id)
