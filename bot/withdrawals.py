"""Deleted and recalled messages: never answer them, and forget them and their files.

When a person deletes (Slack) or recalls (Feishu) a message — say a screenshot with a secret posted by mistake —
the adapter reports a ``MessageWithdrawn`` (``bot.types``) and the application, through ``Withdrawals.handle``:

- stops the question if it is not answered yet. Being answered in this process: its generation is cancelled, its
  placeholder removed, its job finished (never retried). Journaled but not running here (left by an earlier run,
  or by a replica that died): the job is finished and the placeholder its journaled reply state names is removed.
  Being answered by another live replica: a shared marker (``ControlStore``) tells that replica, which removes its
  placeholder instead of delivering the answer.
- leaves a tombstone when the question has not arrived yet (the platform delivered the deletion first, or delivers
  the question again later): a finished job under the question's id, so the question is never answered.
- forgets the message's turns (its question and the answer to it) and its files in the thread: the stored files,
  the documents made from them (page text and transcriptions no other conversation uses) and the conversation's
  cached answers.
- audits that it happened, and nothing else: outcome ``withdrawn``, no text, no hashes, no lengths.

An answer already delivered stays; only the thread's memory of the question goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from bot.store.base import AuditRecord, Job, JobState, keep_audit
from bot.store.codec import decode_file, decode_message
from bot.types import IncomingMessage, MessageWithdrawn, ReplyHandle, ResumableReplies, RetractableReply

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)

WITHDRAWN = "withdrawn"
"""The audit outcome of a withdrawal and the journal error of a withdrawn question."""
STOP_WAIT_S = 2.0
"""How long a withdrawal waits for its cancelled question to stop (before the platform's event is acked)."""
REMEMBERED = 10_000
"""Withdrawn job ids kept in memory (a bound; each matters only until its question stops)."""


def job_id_of(platform: str, message_id: str) -> str:
    """The journal id of the question a message would be (``bot.durability.job_id_for``)."""
    return f"{platform}:{message_id}"


def is_tombstone(job: Job) -> bool:
    """True for the journal entry a withdrawal leaves for a question that had not arrived."""
    return job.error == WITHDRAWN and not job.message


def marker(job_id: str) -> str:
    """The shared control that tells the replica answering ``job_id`` that its question was withdrawn."""
    return f"withdrawn:{job_id}"


class Withdrawals:
    """The application's side of withdrawals (see the module docstring)."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self._withdrawn: OrderedDict[str, None] = OrderedDict()

    # the adapters' callback ---------------------------------------------------------------------------------------
    async def handle(self, withdrawn: MessageWithdrawn) -> None:
        """Stop, forget and audit one withdrawal. Idempotent; raises when the store cannot be written."""
        app = self._app
        job: Job | None = None
        if withdrawn.message_id:
            job = await self._question_of(withdrawn)
        acted = job is not None
        if job is not None:
            await self._stop(job)
        conversation = job.conversation if job is not None else None
        if conversation is None and withdrawn.conversation is not None and withdrawn.conversation.thread:
            conversation = str(withdrawn.conversation)
        if conversation and withdrawn.message_id:
            acted = bool(await app.store.conversations.forget_message(conversation, withdrawn.message_id)) or acted
        if withdrawn.message_id or withdrawn.file_ids:
            scope = str(withdrawn.conversation) if withdrawn.conversation is not None else (conversation or "")
            affected = await app.store.conversations.forget_files(scope, lambda ref: _covers(withdrawn, ref))
            acted = acted or bool(affected)
        logger.info(
            "%s %s withdrawn (%s): %s",
            withdrawn.platform,
            withdrawn.message_id or "files",
            withdrawn.kind,
            "forgotten" if acted else "nothing known about it",
        )
        if acted:
            await self._audit(withdrawn.platform, withdrawn.message_id or withdrawn.event_id, job, conversation or "")

    # what the application asks ------------------------------------------------------------------------------------
    def cancelled(self, job_id: str) -> bool:
        """True when ``job_id`` was withdrawn in this process (its task must take back its reply, not resume)."""
        return job_id in self._withdrawn

    async def ensure_wanted(self, job_id: str) -> None:
        """Raise ``asyncio.CancelledError`` when ``job_id`` was withdrawn, here or on another replica: the question
        then ends the way a question withdrawn while running does (reply taken back, job finished, no turns)."""
        if self.cancelled(job_id) or await self.withdrawn_elsewhere(job_id):
            self._remember(job_id)
            raise asyncio.CancelledError(f"{job_id} was withdrawn")

    async def withdrawn_elsewhere(self, job_id: str) -> bool:
        """True when another replica marked ``job_id`` withdrawn (shared stores only; never raises)."""
        if getattr(self._app.store, "single_process", False):
            return False
        try:
            return await self._app.store.controls.get(marker(job_id)) is not None
        except Exception:
            logger.warning("could not check whether job %s was withdrawn", job_id, exc_info=True)
            return False

    def guard(self, reply: ReplyHandle, job_id: str) -> ReplyHandle:
        """``reply``, checked against a withdrawal by another replica before the answer is delivered."""
        if getattr(self._app.store, "single_process", False):
            return reply
        return _GuardedReply(reply, self, job_id)

    async def question_arrived_late(self, message: IncomingMessage) -> None:
        """A question whose withdrawal came first: never answered, audited (once, as withdrawn)."""
        logger.info("%s arrived after it was withdrawn; not answered", message.message_id)
        await self._audit(message.platform, message.message_id, None, str(message.conversation), user=message.user.key)

    # internals ----------------------------------------------------------------------------------------------------
    async def _question_of(self, withdrawn: MessageWithdrawn) -> Job | None:
        """The journaled question of the withdrawn message, or None (a tombstone now stands in for it)."""
        store, app = self._app.store, self._app
        job_id = job_id_of(withdrawn.platform, withdrawn.message_id)
        job = await store.jobs.get(job_id)
        if job is None:
            now = time.time()
            tombstone = Job(
                job_id=job_id,
                platform=withdrawn.platform,
                conversation=str(withdrawn.conversation or ""),
                user="",
                message="",
                state=JobState.FAILED,
                error=WITHDRAWN,
                created_at=now,
                updated_at=now,
            )
            if await store.jobs.accept(tombstone, app.jobs.owner, app.jobs.lease_s):
                logger.info("%s withdrawn before it arrived: it will not be answered", withdrawn.message_id)
                return None
            job = await store.jobs.get(job_id)  # the question arrived meanwhile
        if job is None or is_tombstone(job):
            return None
        return job

    async def _stop(self, job: Job) -> None:
        """Make sure an unanswered question is never answered and its placeholder goes."""
        if job.state.finished:
            return  # answered (or failed) before: only forgetting is left
        app = self._app
        self._remember(job.job_id)
        task = app._question_tasks.get(job.job_id)
        if task is not None and not task.done():
            task.cancel()  # its handler in Application._run_question takes back the reply and finishes the job
            await asyncio.wait({task}, timeout=STOP_WAIT_S)  # so that it stores no turn after they are forgotten
            return
        live_elsewhere = (
            not getattr(app.store, "single_process", False)
            and job.owner != app.jobs.owner
            and job.lease_until > time.time()
        )
        if live_elsewhere:
            await app.store.controls.put(marker(job.job_id), "1", app.settings.core.dedupe_ttl_s)
            logger.info("job %s is answered by %s: told it that the question was withdrawn", job.job_id, job.owner)
            return
        await app.store.jobs.mark(job.job_id, JobState.FAILED, error=WITHDRAWN)
        app.jobs.forget(job.job_id)  # a leftover this process had claimed: no lease to keep
        await self._retract_journaled(job)

    async def _retract_journaled(self, job: Job) -> None:
        """Remove the placeholder an earlier process posted for ``job`` (from its journaled reply state)."""
        try:
            message = decode_message(job.message)
        except Exception:
            logger.warning("job %s has an unreadable message; its placeholder (if any) stays", job.job_id)
            return
        adapter = self._app.adapters.get(message.platform)
        if isinstance(adapter, ResumableReplies):
            await retract(adapter.reply_for(message, job.reply_state))

    def _remember(self, job_id: str) -> None:
        self._withdrawn[job_id] = None
        while len(self._withdrawn) > REMEMBERED:
            self._withdrawn.popitem(last=False)

    async def _audit(
        self, platform: str, withdrawn_id: str, job: Job | None, conversation: str, *, user: str = ""
    ) -> None:
        """One ``withdrawn`` record per withdrawn message (or file event), however often it is delivered."""
        store = self._app.store
        if not await store.dedupe.claim(f"{platform}:withdrawn:{withdrawn_id}", self._app.settings.core.dedupe_ttl_s):
            return
        record = AuditRecord.event(
            job_id=job_id_of(platform, withdrawn_id),
            platform=platform,
            user=job.user if job is not None else user,
            conversation=conversation,
            outcome=WITHDRAWN,
        )
        await keep_audit(store.audit, record)


async def retract(reply: ReplyHandle) -> None:
    """Take back what ``reply`` showed, when it can (never raises)."""
    if not isinstance(reply, RetractableReply):
        return
    try:
        await reply.retract()
    except Exception:
        logger.exception("could not remove the reply to a withdrawn question")


def _covers(withdrawn: MessageWithdrawn, file_ref: str) -> bool:
    try:
        return withdrawn.covers(decode_file(file_ref))
    except Exception:
        return False


class _GuardedReply:
    """A reply that, before delivering the answer, checks whether another replica saw the question withdrawn."""

    def __init__(self, inner: ReplyHandle, withdrawals: Withdrawals, job_id: str) -> None:
        self._inner = inner
        self._withdrawals = withdrawals
        self._job_id = job_id

    def __getattr__(self, name: str) -> object:  # resume_state and anything else the adapter's handle offers
        return getattr(self._inner, name)

    async def start_progress(self, queue_position: int | None = None) -> None:
        await self._inner.start_progress(queue_position)

    async def update(self, text: str) -> None:
        await self._inner.update(text)

    async def finish(self, text: str) -> None:
        await self._withdrawals.ensure_wanted(self._job_id)
        await self._inner.finish(text)

    async def fail(self, text: str) -> None:
        await self._withdrawals.ensure_wanted(self._job_id)
        await self._inner.fail(text)

    async def retract(self) -> None:
        await retract(self._inner)
