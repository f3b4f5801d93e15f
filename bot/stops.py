"""Stop: the person who asked (or an admin) ends an answer while it streams; what was written so far stays.

The adapter shows a Stop button while an answer streams and reports a click as an ``AnswerAction`` of kind
``stop``. :meth:`Stops.request` checks who clicked and stops the generation:

- being answered in this process: its task is cancelled (the engine drops the request), and the application finishes
  the reply with the text streamed so far and a line "(stopped by <name>)", and the job as answered — never
  retried, never resumed;
- answered by another replica (a shared store): a shared marker (``store.controls``, ``stop:<job id>``) tells that
  replica, which looks for markers of the questions it answers about once a second (:meth:`Stops.follow_shared`,
  :data:`POLL_S`) and stops the same way; so does a question that starts later (or is taken over from a replica
  that died). In one process, a question stopped before its task started stops as it starts.

Every Stop is logged with the job id and who asked for it, never with text.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from bot.durability import LeaseLost
from bot.i18n import CATALOGUE, say
from bot.ratings import job_lang, job_of
from bot.types import AnswerAction, ReplyHandle
from bot.withdrawals import retract

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)

STOPPED = "stopped"
"""The audit outcome of a stopped question."""
POLL_S = 1.0
"""How often a replica looks in the shared store for Stops, made on other replicas, of the answers it streams."""
REMEMBERED = 10_000
"""Stopped job ids kept in memory (a bound; each matters only until its question ends)."""

STOPPING = CATALOGUE["stop.stopping"]["en"]
ALREADY_COMPLETE = CATALOGUE["stop.complete"]["en"]
NOT_YOURS = CATALOGUE["stop.not_yours"]["en"]
UNKNOWN = CATALOGUE["stop.unknown"]["en"]


def marker(job_id: str) -> str:
    """The shared control that tells the replica answering ``job_id`` to stop (its value: who stopped it)."""
    return f"stop:{job_id}"


def stopped_line(name: str, lang: str = "en") -> str:
    return say("stop.stopped_by", lang, name=name)


class Stops:
    """The application's side of Stop (see the module docstring)."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self._stopped: OrderedDict[str, str] = OrderedDict()
        self._replies: dict[str, StoppableReply] = {}

    @property
    def _shared(self) -> bool:
        return not getattr(self._app.store, "single_process", False)

    # the adapters' callback (through bot.ratings.answer_action) ------------------------------------------------
    async def request(self, action: AnswerAction) -> str:
        """Stop the answer to ``action.question_id``; returns the sentence for the person who clicked."""
        app = self._app
        job = await job_of(app, action)
        if job is None:
            return UNKNOWN
        job_id, lang = job.job_id, job_lang(job)
        reply = self._replies.get(job_id)
        if job.state.finished or (reply is not None and reply.finishing):
            return say("stop.complete", lang)
        if action.user.key != job.user and not app.is_admin(action.user):
            logger.info("job %s: stop refused to %s (not the asker)", job_id, action.user.key)
            return say("stop.not_yours", lang)
        name = action.user.display_name or action.user.user_id
        logger.info("job %s: stopped by %s", job_id, action.user.key)
        self._remember(job_id, name)
        task = app._question_tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()  # Application._run_question finishes the reply with the text so far
        elif self._shared:  # another replica answers it (or will): it reads the marker
            await app.store.controls.put(marker(job_id), name, app.settings.core.dedupe_ttl_s)
        return say("stop.stopping", lang)

    # what the application asks ---------------------------------------------------------------------------------
    def watch(self, reply: ReplyHandle, job_id: str) -> StoppableReply:
        """``reply``, keeping the text streamed so far (what a Stop keeps) and refusing to start once stopped."""
        watched = StoppableReply(reply, self, job_id)
        self._replies[job_id] = watched
        return watched

    def stopped_by(self, job_id: str) -> str | None:
        """Who stopped ``job_id`` (None when nobody did)."""
        return self._stopped.get(job_id)

    async def finish(self, job_id: str, lang: str = "en") -> None:
        """Finish a stopped answer: the text so far and who stopped it, said in ``lang`` (never raises)."""
        reply = self._replies.get(job_id)
        name = self._stopped.get(job_id)
        if reply is None or name is None:
            return
        text = reply.text.rstrip()
        final = f"{text}\n\n{stopped_line(name, lang)}" if text else stopped_line(name, lang)
        try:
            await reply.finish(final)
        except LeaseLost:
            logger.info("job %s: the stopped reply was left to the process that owns the question now", job_id)
        except Exception:
            logger.exception("job %s: could not finish the stopped reply", job_id)

    def done(self, job_id: str) -> None:
        """The question ended (however): forget its reply."""
        self._replies.pop(job_id, None)

    def check(self, job_id: str) -> None:
        """Raise ``asyncio.CancelledError`` when ``job_id`` was stopped before its question started here."""
        if job_id in self._stopped:
            raise asyncio.CancelledError(f"{job_id} was stopped")

    async def follow_shared(self) -> None:
        """On a shared store, every :data:`POLL_S`: stop the answers streaming here that were stopped on another
        replica (runs until cancelled; returns at once on a store of one process)."""
        if not self._shared:
            return
        while True:
            await asyncio.sleep(POLL_S)
            for job_id, task in list(self._app._question_tasks.items()):
                reply = self._replies.get(job_id)
                if job_id in self._stopped or task.done() or (reply is not None and reply.finishing):
                    continue
                name = await self._stopped_elsewhere(job_id)
                if name is not None:
                    logger.info("job %s: stopped on another replica", job_id)
                    self._remember(job_id, name)
                    task.cancel()

    async def _stopped_elsewhere(self, job_id: str) -> str | None:
        try:
            return await self._app.store.controls.get(marker(job_id))
        except Exception:
            logger.warning("could not check whether job %s was stopped", job_id, exc_info=True)
            return None

    def _remember(self, job_id: str, name: str) -> None:
        self._stopped[job_id] = name
        while len(self._stopped) > REMEMBERED:
            self._stopped.popitem(last=False)


class StoppableReply:
    """A reply that keeps the text streamed so far and knows when the final text is on its way."""

    def __init__(self, inner: ReplyHandle, stops: Stops, job_id: str) -> None:
        self._inner = inner
        self._stops = stops
        self._job_id = job_id
        self.text = ""
        """The answer streamed so far."""
        self.finishing = False
        """True once the final text (or an error) is on its way: too late to stop."""

    def __getattr__(self, name: str) -> object:  # resume_state and anything else the adapter's handle offers
        return getattr(self._inner, name)

    async def start_progress(self, queue_position: int | None = None) -> None:
        self._stops.check(self._job_id)  # stopped before its question started
        await self._inner.start_progress(queue_position)

    async def update(self, text: str) -> None:
        self.text = text
        await self._inner.update(text)

    async def finish(self, text: str) -> None:
        self.finishing = True
        await self._inner.finish(text)

    async def fail(self, text: str) -> None:
        self.finishing = True
        await self._inner.fail(text)

    async def retract(self) -> None:
        await retract(self._inner)
