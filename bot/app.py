"""The application: owns the engine, the adapters and every background task, with an explicit lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from bot.access import REFUSAL_REPEAT_S, AccessPolicy
from bot.commands import BUILTIN_COMMANDS, Command, looks_like_command, parse_command
from bot.conversations import StoredConversations
from bot.durability import JobKeeper, LeaseLost, job_id_for, recorded_final, was_delivered
from bot.engine import Engine, answering_job
from bot.errors import UserFacingError
from bot.fairness import FairShare, engine_slots
from bot.i18n import lang_for, say
from bot.logs import log_context
from bot.maintenance import Maintenance
from bot.questions import answer_question
from bot.ratelimit import QuotaChecker, RateLimiter, UserLimits, zone
from bot.ratings import Ratings, answer_action
from bot.settings import Settings
from bot.stops import STOPPED, Stops
from bot.store import open_store
from bot.store.base import AuditRecord, Job, Store, keep_audit
from bot.types import (
    Adapter,
    AdapterHealth,
    AnswerAction,
    IncomingMessage,
    MessageWithdrawn,
    ReplyHandle,
    ReportsAnswerActions,
    ReportsWithdrawals,
    ResumableReplies,
    Service,
    StartStop,
    User,
    UsesConversationDirectory,
)
from bot.usage import UsageRecorder
from bot.withdrawals import WITHDRAWN, Withdrawals, is_tombstone, retract

if TYPE_CHECKING:
    from bot.media.pool import MediaPool

logger = logging.getLogger(__name__)

PAUSED_REPLY = say("app.paused")
PAUSE_CONTROL = "paused"
"""The shared control (``store.controls``) that holds the pause flag: set while paused."""
CONTROLS_REFRESH_S = 10.0
"""How often a replica re-reads the shared pause flag for ``/status`` (questions read it every time)."""
STALLED_REPLY = say("app.stalled")
"""The answer to a question the model's worker hung on (it is not tried again)."""
ENGINE_STUCK_EXIT_CODE = 75
"""``peekbot run`` exits with this (EX_TEMPFAIL) after the model's worker hung, for its supervisor to restart it."""
STUCK_ENGINE_STOP_S = 1.0
"""How long stopping waits for a hung worker's batch (it will not finish)."""


class Application(StartStop):
    """Start/stop (or ``async with``) the store, engine, services and adapters; ``handle`` is the adapters' callback.

    Start order: store, engine, services (scheduler, HTTP), adapters, then journaled jobs left unfinished by an
    earlier process. Stop runs in reverse after draining answers (bounded); what could not finish stays in the
    journal for the next start.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        adapters: Sequence[Adapter] = (),
        services: Sequence[Service] = (),
        store: Store | None = None,
        media: MediaPool | None = None,
        resume_jobs: bool = True,
    ) -> None:
        """The composition root (``bot.wiring``) builds the parts; ``store`` defaults to ``PEEKBOT_STORE_URL``'s and
        ``media`` to a pool of ``PEEKBOT_MEDIA_WORKERS`` processes."""
        self.settings = settings
        self.engine: Engine = engine
        self.store: Store = store if store is not None else open_store(settings)
        self.adapters: dict[str, Adapter] = {a.name: a for a in adapters}
        self.commands: dict[str, Command] = {c.name: c for c in BUILTIN_COMMANDS}
        self.paused = False
        self.started_at = time.time()
        self.counters: dict[str, int] = {
            "accepted": 0, "duplicates": 0, "answered": 0, "failed": 0, "commands": 0, "refused": 0,
            "rate_limited": 0, "cached": 0, "resumed": 0,
        }
        self.usage = UsageRecorder(retention_days=settings.scheduler.usage_retention_days)
        """Every question's outcome, latency and engine figures (``/stats``, ``/metrics``, the status page)."""
        self.access = AccessPolicy(settings.access, settings.core.admins)
        self.rate_limiter = RateLimiter(
            settings.access.rate_limit_per_minute, settings.access.rate_limit_burst, buckets=self.store.controls
        )
        self.quota = QuotaChecker(
            settings.access.daily_quota, self._questions_since, zone(settings.access.quota_timezone)
        )
        self.limits = UserLimits(
            self.rate_limiter, self.quota, max_pending=settings.access.max_pending_per_user, pending=self._pending
        )
        """What a person meets before a question is accepted (rate limit, pending questions, daily quota)."""
        self.fair = FairShare(
            slots=engine_slots(
                settings.engine.max_batch_size,
                continuous=settings.core.backend == "transformers" and settings.engine.scheduling == "continuous",
            ),
            max_pending_per_user=settings.access.max_pending_per_user,
        )
        self.jobs = JobKeeper(self.store, settings.core)
        self.conversations = StoredConversations(self.store)
        """Each conversation's turns and files (also the adapters' conversation directory)."""
        if media is None:
            from bot.media.pool import MediaPool  # Pillow/pypdfium2 only; no process starts before the first file

            media = MediaPool(settings.images)
        self.media = media
        """Worker processes that open files (started on first use; stopped by ``stop``)."""
        self.withdrawals = Withdrawals(self)
        """Deleted and recalled messages: stopped, forgotten and audited (``withdraw`` is the adapters' callback)."""
        self.ratings = Ratings(self)
        """Answers rated helpful or not (``answer_action`` is the adapters' callback for answer buttons)."""
        self.stops = Stops(self)
        """Answers stopped while they stream by the asker or an admin (the Stop button)."""
        self._resume_jobs = resume_jobs
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._accepting = False
        self._ready = False
        self._store_open = False
        self._started_adapters: list[Adapter] = []
        self._started_services: list[Service] = []
        self.unhealthy: str | None = None
        """Why this process must be restarted (``/healthz`` fails with it); None while it is healthy."""
        self.exit_code: int | None = None
        """Set with :attr:`exit_requested`: the code the process should end with."""
        self.exit_requested = asyncio.Event()
        """Set when the application cannot go on (the model's worker hangs); ``peekbot run`` then stops and exits."""
        self._question_tasks: dict[str, asyncio.Task[Any]] = {}
        self._stalled: set[str] = set()
        self.services: list[Service] = list(services)
        """Background parts started after the engine and stopped before it (the composition root adds the
        maintenance scheduler and the HTTP server)."""
        self.maintenance: Maintenance | None = None
        """The maintenance service the composition root attached (also one of :attr:`services`): ``/status``,
        ``/cleanup``, ``/readyz``, ``/metrics`` and the status page read it. None runs without one."""

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.started_at = time.time()
        described = self.engine.describe()
        model = described.get("model", self.settings.engine.model)
        logger.info("starting: %s engine, model %s, adapters %s", described.get("backend", "transformers"), model,
                    sorted(self.adapters) or "none")
        try:
            await self.store.open()
            self._store_open = True
            logger.info("state: %s", self.store.describe())
            await self.engine.start()
            # Claim what an earlier run left unfinished BEFORE intake opens, so a new event accepted in the
            # meantime is never mistaken for a leftover. A store used by one process only (SQLite) hands over every
            # unfinished job: their leases belonged to this bot's previous run. A shared store waits for leases to
            # run out. The claimed jobs are answered once the adapters can reply.
            leftovers = []
            if self._resume_jobs:
                single = bool(getattr(self.store, "single_process", False))
                leftovers = await self.jobs.take_over(include_live=single)
            # Leases are renewed from now on (adapters may take a while to connect); orphans of other replicas are
            # taken over only once the adapters can reply.
            self._keep(
                self.jobs.lease_loop(
                    self._resume_one, on_lost=self._lost_job, take_over=lambda: self._resume_jobs and self._ready
                )
            )
            await self.refresh_paused()
            self._keep(self._watch_controls())
            self._keep(self.stops.follow_shared())  # Stops clicked on other replicas
            self._accepting = True
            for service in self.services:
                await service.start()
                self._started_services.append(service)
            for adapter in self.adapters.values():
                if isinstance(adapter, UsesConversationDirectory):
                    adapter.use_conversation_directory(self.conversations)
                if isinstance(adapter, ReportsWithdrawals):
                    adapter.use_withdrawal_handler(self.withdraw)
                if isinstance(adapter, ReportsAnswerActions):
                    adapter.use_answer_action_handler(self.answer_action)
                await adapter.start(self.handle)
                self._started_adapters.append(adapter)
            self._ready = True
            await self._resume(leftovers)
        except BaseException:
            await self.stop()
            raise
        logger.info("started")

    async def stop(self) -> None:
        """Stop intake, let answers in flight finish (bounded), then stop adapters, engine and store."""
        self._accepting = False
        self._ready = False
        await self.drain(self.settings.core.drain_timeout_s)
        await _stop_all(self._started_adapters, "stopping adapter %s failed")
        await _stop_all(self._started_services, "stopping %s failed")
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.unhealthy is not None:
            await self.engine.stop(timeout_s=STUCK_ENGINE_STOP_S)  # a hung worker will not finish its batch
        else:
            await self.engine.stop()
        try:
            await self.media.close()
        except Exception:
            logger.exception("stopping the media workers failed")
        if self._store_open:
            self._store_open = False
            await self.store.close()
        logger.info("stopped")

    async def drain(self, timeout_s: float) -> None:
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return
        logger.info("waiting up to %.0f s for %d answers in flight", timeout_s, len(pending))
        _, still_running = await asyncio.wait(pending, timeout=timeout_s)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.gather(*still_running, return_exceptions=True)
            logger.warning("left %d unfinished answers for the next start", len(still_running))

    async def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no question or command is being handled (answers delivered and recorded); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while pending := [t for t in self._tasks if not t.done()]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(pending, timeout=remaining)
        return True

    def engine_stuck(self, reason: str) -> None:
        """The model's worker hangs: fail ``/healthz``, apologise for what it was generating, ask for an exit.

        The questions of the batch the worker is stuck on are answered with :data:`STALLED_REPLY` and finished as
        failed, not retried: one of them is likely what hung it. Intake stops; ``peekbot run`` then drains the
        other questions (bounded), which stay in the journal for the next start, and exits with
        :data:`ENGINE_STUCK_EXIT_CODE`.
        """
        if self.unhealthy is not None:
            return
        self.unhealthy = reason
        self._accepting = False
        try:
            stalled = sorted({r.job_id for r in self.engine.running_requests() if r.job_id})
        except Exception:
            logger.exception("could not tell which questions the model was generating")
            stalled = []
        others = sorted(set(self._question_tasks) - set(stalled))
        logger.error(
            "%s: restarting (exit code %d). Stalled on %s (answered with an apology, not retried); "
            "%d other questions in flight stay in the journal for the next start: %s",
            reason, ENGINE_STUCK_EXIT_CODE, ", ".join(stalled) or "no question", len(others),
            ", ".join(others) or "none",
        )
        for job_id in stalled:
            task = self._question_tasks.get(job_id)
            if task is not None and not task.done():
                self._stalled.add(job_id)
                task.cancel()
        self.exit_code = ENGINE_STUCK_EXIT_CODE
        self.exit_requested.set()

    def _keep(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # intake --------------------------------------------------------------------------------------
    def is_admin(self, user: User) -> bool:
        return user.platform == "console" or self.settings.core.is_admin(user.key)

    async def handle(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        """Dedupe, check access, journal and schedule; never waits for the answer. False for a duplicate.

        A question is deduplicated by its journal entry (one job per chat message, created atomically), so nothing
        is marked seen before it is safely journaled: a crash or a store error before that point leaves the event
        un-acked, and the platform's redelivery is answered. Commands and refusals, which are not journaled, are
        deduplicated by their event and message ids. Raises when the store cannot be written, so that the adapter
        does not ack and the platform delivers the event again.
        """
        existing = await self.store.jobs.get(job_id_for(message))
        if existing is not None:
            if is_tombstone(existing):  # deleted or recalled before it arrived: never answered
                await self.withdrawals.question_arrived_late(message)
            return self._duplicate(message)
        is_command = message.is_command or looks_like_command(message.text)
        refusal = self.access.check(message, is_command=is_command)
        if refusal is not None:
            if not await self._first_delivery(message):
                return self._duplicate(message)
            logger.info("refused (%s) for %s", refusal.reason, message.user.key)
            text = None if refusal.silent else refusal.text(lang_for(message))
            return await self._refuse(message, reply, "refused", text)
        if is_command:
            if not await self._first_delivery(message):
                return self._duplicate(message)
            if not self.is_admin(message.user):  # commands count against the same per-user rate limit
                limited = await self.limits.refusal(message.user.key, command=True, lang=lang_for(message))
                if limited is not None:
                    return await self._refuse(message, reply, "rate_limited", limited)
            self.counters["accepted"] += 1
            self._spawn(self._run_command(message, reply), message)
            return True
        if not self.is_admin(message.user):
            limited = await self.limits.refusal(message.user.key, lang=lang_for(message))
            if limited is not None:
                if not await self._first_delivery(message):
                    return self._duplicate(message)
                return await self._refuse(message, reply, "rate_limited", limited)
        job = await self.jobs.accept(message)
        if job is None:  # another delivery of the same message (another event id, another replica) won
            return self._duplicate(message)
        self.counters["accepted"] += 1
        if not self._accepting:
            await self.jobs.release(job)  # stopping: the next start (or another replica) answers it
            return True
        self._spawn(self._run_question(message, reply, job), message)
        return True

    async def _first_delivery(self, message: IncomingMessage) -> bool:
        """Claim the event and message ids of something answered without a journal entry."""
        ttl = self.settings.core.dedupe_ttl_s
        # Short-circuit: a copy that lost the event key must not take the message key, or two replicas racing on
        # one event could each win one key and both drop it.
        return await self.store.dedupe.claim(
            f"{message.platform}:event:{message.event_id}", ttl
        ) and await self.store.dedupe.claim(f"{message.platform}:msg:{message.message_id}", ttl)

    async def _refuse(self, message: IncomingMessage, reply: ReplyHandle, outcome: str, text: str | None) -> bool:
        """Count and audit a refusal (``outcome``), and say ``text`` (None: refuse silently)."""
        self.counters[outcome] += 1
        await self._audit(message, outcome)
        if text is not None:
            await self._say_refusal(message, reply, text)
        return True

    async def _say_refusal(self, message: IncomingMessage, reply: ReplyHandle, text: str) -> None:
        """Tell a refused or rate-limited person why, at most once per ``REFUSAL_REPEAT_S`` (on every replica);
        later refusals are silent (still counted and audited)."""
        if await self.store.dedupe.claim(f"refusal-said:{message.user.key}", REFUSAL_REPEAT_S):
            self._spawn(self._safe_fail(reply, text), message)
        else:
            logger.info("%s was told why within the last %.0f s; refused silently", message.user.key,
                        REFUSAL_REPEAT_S)

    async def withdraw(self, withdrawn: MessageWithdrawn) -> None:
        """The adapters' callback for a deleted or recalled message (``bot.withdrawals``). Raises when the store
        cannot be written, so that the adapter does not ack and the platform delivers the event again."""
        where = str(withdrawn.conversation) if withdrawn.conversation is not None else "-"
        with log_context(request_id=withdrawn.message_id or "-", platform=withdrawn.platform, conversation=where):
            await self.withdrawals.handle(withdrawn)

    async def answer_action(self, action: AnswerAction) -> str:
        """The adapters' callback for answer buttons (a rating or Stop, ``bot.ratings``): the sentence to show the
        person who clicked. Raises when the store cannot be written (the adapter answers with an error toast)."""
        where = str(action.conversation) if action.conversation is not None else "-"
        with log_context(request_id=action.question_id or "-", platform=action.platform, conversation=where):
            return await answer_action(self, action)

    def _duplicate(self, message: IncomingMessage) -> bool:
        self.counters["duplicates"] += 1
        logger.info("duplicate %s ignored", message.message_id)
        return False

    async def _pending(self, user: str) -> int:
        """The user's unanswered questions on every replica (the journal's unfinished jobs)."""
        try:
            return await self.store.jobs.pending_for(user)
        except Exception:
            logger.warning("could not count the pending questions of %s; counting this replica's", user, exc_info=True)
            return self.fair.pending(user)

    # controls shared by every replica -----------------------------------------------------------------
    async def set_paused(self, paused: bool) -> None:
        """Pause or resume answering on every replica, kept across restarts (``/pause``, ``/resume``)."""
        await self.store.controls.put(PAUSE_CONTROL, "1" if paused else None)
        self.paused = paused
        logger.warning("answering %s by an admin", "paused" if paused else "resumed")

    async def refresh_paused(self) -> bool:
        """Read the shared pause flag (``paused`` keeps the last value read when the store fails)."""
        try:
            self.paused = await self.store.controls.get(PAUSE_CONTROL) is not None
        except Exception:
            logger.warning("could not read the pause flag; keeping %s", self.paused, exc_info=True)
        return self.paused

    async def _watch_controls(self) -> None:
        """Follow the pause flag another replica (or an earlier run) set, for ``/status`` and the metrics."""
        while True:
            await asyncio.sleep(CONTROLS_REFRESH_S)
            await self.refresh_paused()

    def _lost_job(self, job_id: str) -> None:
        """Another process took the job over (we stalled past its lease): stop answering it here."""
        task = self._question_tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()

    async def _questions_since(self, user: str, since: float) -> int:
        return await self.store.audit.count_for_user(user, since)

    def _spawn(self, coro: Coroutine[Any, Any, None], message: IncomingMessage) -> None:
        ids = {"request_id": message.message_id, "platform": message.platform}
        with log_context(**ids, conversation=str(message.conversation)):
            task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume(self, claimed: Sequence[tuple[Job, IncomingMessage | None]]) -> None:
        for job, message in claimed:
            if message is not None:
                await self._resume_one(job, message)

    async def _resume_one(self, job: Job, message: IncomingMessage) -> None:
        if self.withdrawals.cancelled(job.job_id):  # deleted or recalled while it waited: already taken care of
            self.jobs.forget(job.job_id)
            return
        final = recorded_final(job)
        if was_delivered(job):  # the reply went out in full before the restart: nothing to generate or post
            logger.info("job %s: its reply was delivered before; finishing it", job.job_id)
            await self.jobs.finished(job, answered=final is None or final[1] == "finish")
            return
        adapter = self.adapters.get(message.platform)
        if not isinstance(adapter, ResumableReplies):
            logger.warning("job %s: no adapter %s to answer it; marking it failed", job.job_id, message.platform)
            await self.jobs.finished(job, answered=False, error=f"no adapter {message.platform}")
            return
        reply = self.jobs.track(job, adapter.reply_for(message, job.reply_state))
        self.counters["resumed"] += 1
        logger.info("resuming job %s (attempt %d)", job.job_id, job.attempts + 1)
        if self.jobs.exhausted(job):
            await self._safe_fail(reply, say("app.gave_up", lang_for(message), attempts=job.attempts))
            await self.jobs.finished(job, answered=False, error="too many attempts")
            return
        if final is not None:  # the answer was complete: deliver the same text; the reply skips parts already out
            self._spawn(self._deliver_recorded(job, reply, *final), message)
            return
        self._spawn(self._run_question(message, reply, job, resumed=True), message)

    async def _deliver_recorded(self, job: Job, reply: ReplyHandle, text: str, kind: str) -> None:
        """Deliver the final text an earlier owner journaled but had not delivered in full, without regenerating."""
        tracked = self.jobs.track(job, reply)
        try:
            await (tracked.finish if kind == "finish" else tracked.fail)(text)
            await self.jobs.finished(job, answered=kind == "finish")
        except LeaseLost:
            tracked.abandon()
        except asyncio.CancelledError:
            await self.jobs.release(job)
            raise
        except Exception:
            logger.exception("job %s: could not deliver its journaled answer; leaving it for another try", job.job_id)
            await self.jobs.release(job)

    async def _run_command(self, message: IncomingMessage, reply: ReplyHandle) -> None:
        self.counters["commands"] += 1
        name, argument = parse_command(message.text)
        command = self.commands.get(name)
        lang = lang_for(message)
        try:
            if command is None:
                text = say("app.unknown_command", lang, name=name)
            elif command.admin_only and not self.is_admin(message.user):
                text = say("app.admin_only", lang, name=name)
                logger.warning("non-admin %s tried /%s", message.user.key, name)
            else:
                text = await command.handler(self, message, argument)
            await reply.finish(text)
        except Exception:
            logger.exception("command /%s failed", name)
            await self._safe_fail(reply, say("app.command_failed", lang, name=name))

    async def _run_question(
        self, message: IncomingMessage, reply: ReplyHandle, job: Job, *, resumed: bool = False
    ) -> None:
        adapter = self.adapters.get(message.platform)
        reply = tracked = self.jobs.track(job, reply)  # touches the chat only while the job is ours
        reply = self.withdrawals.guard(reply, job.job_id)  # another replica may learn that it was withdrawn
        reply = self.stops.watch(reply, job.job_id)  # keeps the text so far for Stop
        started = time.monotonic()
        lang = lang_for(message)
        outcome, answer_chars, image_hashes = "failed", 0, ()
        task = asyncio.current_task()
        if task is not None:
            self._question_tasks[job.job_id] = task
        answering_job.set(job.job_id)  # engine requests made for this question carry its job id
        try:
            await self.withdrawals.ensure_wanted(job.job_id)  # withdrawn before it started: stop here
            if await self.refresh_paused():
                await reply.finish(say("app.paused", lang))
                outcome = "paused"
                await self.jobs.finished(job, answered=True)
                return
            await reply.start_progress(None)
            await self.jobs.running(job, reply)
            if adapter is None:
                raise RuntimeError(f"no adapter named {message.platform}")
            conversation = str(message.conversation)
            with self.usage.track(message):
                result = await answer_question(
                    message,
                    reply,
                    adapter=adapter,
                    engine=self.engine,
                    settings=self.settings,
                    history=await self.conversations.history(conversation),
                    conversation_files=await self.conversations.files(conversation),
                    store=self.store,
                    media=self.media,
                    engine_turn=lambda: self._engine_turn(message.user.key, reply),
                )
            image_hashes = tuple(result.image_hashes)
            answer_chars = len(result.answer)
            outcome = "cached" if result.cached else "answered"
            self.counters[outcome] += 1
            await self.conversations.remember(conversation, result, message.message_id)
            await self.jobs.finished(job, answered=True)
        except LeaseLost:
            outcome = "lost"  # another process answers it; this one leaves the reply alone
            tracked.abandon()
        except UserFacingError as exc:
            self.counters["failed"] += 1
            logger.info("answered with an error (%s): %s", exc.kind, exc)
            await self._safe_fail(reply, exc.text(lang))
            await self.jobs.finished(job, answered=False, error=exc.kind)
        except asyncio.CancelledError:
            if job.job_id in self._stalled:  # the model hung on it: apologise, never retry it
                outcome = "stalled"
                self.counters["failed"] += 1
                try:
                    await self._safe_fail(reply, say("app.stalled", lang))
                finally:
                    await self.jobs.finished(job, answered=False, error="stalled the model")
                raise
            if self.withdrawals.cancelled(job.job_id):  # deleted or recalled: take back the reply, never retry
                outcome = WITHDRAWN
                self._spawn(retract(reply), message)
                await self.jobs.finished(job, answered=False, error=WITHDRAWN)
                raise
            if self.jobs.is_lost(job.job_id):  # taken over while we stalled: the new owner answers it
                outcome = "lost"
                tracked.abandon()
                raise
            if self.stops.stopped_by(job.job_id) is not None:  # Stop: keep the text so far, never resume
                outcome = STOPPED
                await self.stops.finish(job.job_id, lang)
                await self.jobs.finished(job, answered=True)
                raise
            # Stopping: leave the job for the next start, which continues the same reply.
            outcome = "interrupted"
            await self.jobs.release(job)
            raise
        except Exception:
            self.counters["failed"] += 1
            logger.exception("question failed")
            await self._safe_fail(reply, say("app.internal", lang, reference=message.message_id))
            await self.jobs.finished(job, answered=False, error="internal")
        finally:
            self._question_tasks.pop(job.job_id, None)
            self.stops.done(job.job_id)
            if self.jobs.is_lost(job.job_id):
                outcome = "lost"
            self.jobs.forget(job.job_id)
            if outcome not in ("interrupted", "lost", WITHDRAWN):  # a withdrawal audits itself, without content
                await self._audit(
                    message, outcome, latency_s=time.monotonic() - started, image_hashes=image_hashes,
                    answer_chars=answer_chars, job_id=job.job_id,
                )

    @contextlib.asynccontextmanager
    async def _engine_turn(self, user: str, reply: ReplyHandle) -> AsyncIterator[None]:
        """The user's fair share of the model (``bot.fairness``), showing the place in line while waiting."""
        waiting = self.fair.ahead_of_new_turn(user)
        if waiting:
            await reply.start_progress(waiting)
        async with self.fair.turn(user):
            yield

    async def _audit(
        self,
        message: IncomingMessage,
        outcome: str,
        *,
        latency_s: float = 0.0,
        image_hashes: tuple[str, ...] = (),
        answer_chars: int = 0,
        job_id: str = "",
    ) -> None:
        record = AuditRecord(
            job_id=job_id or f"{message.platform}:{message.message_id}",
            platform=message.platform,
            user=message.user.key,
            conversation=str(message.conversation),
            image_hashes=image_hashes,
            question_chars=len(message.text),
            answer_chars=answer_chars,
            latency_s=latency_s,
            outcome=outcome,
            created_at=time.time(),
        )
        await keep_audit(self.store.audit, record)

    async def _safe_fail(self, reply: ReplyHandle, text: str) -> None:
        try:
            await reply.fail(text)
        except LeaseLost:
            logger.info("the error reply was left to the process that owns the question now")
        except Exception:
            logger.exception("could not deliver the error reply")

    # status --------------------------------------------------------------------------------------
    async def adapter_health(self) -> dict[str, AdapterHealth]:
        result: dict[str, AdapterHealth] = {}
        for name, adapter in self.adapters.items():
            try:
                result[name] = await asyncio.wait_for(adapter.health(), timeout=5)
            except Exception as exc:
                result[name] = AdapterHealth(connected=False, detail=f"health check failed: {exc}")
        return result

    @property
    def in_flight(self) -> int:
        return sum(1 for t in self._tasks if not t.done())


async def _stop_all(parts: list[Adapter] | list[Service], failed: str) -> None:
    """Stop ``parts`` in the reverse order of their start; a failure is logged (``failed`` % name), the rest stop."""
    for part in reversed(parts):
        try:
            await part.stop()
        except Exception:
            logger.exception(failed, part.name)
    parts.clear()
