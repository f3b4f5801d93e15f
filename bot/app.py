"""The application: owns the engine, the adapters and every background task, with an explicit lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Self

from bot.commands import BUILTIN_COMMANDS, Command, looks_like_command, parse_command
from bot.conversations import ConversationMemory
from bot.dedupe import SeenKeys
from bot.engine import Engine
from bot.errors import UserFacingError
from bot.logs import log_context
from bot.questions import answer_question
from bot.settings import Settings
from bot.types import Adapter, AdapterHealth, IncomingMessage, ReplyHandle, Service, User
from bot.usage import UsageRecorder

logger = logging.getLogger(__name__)

PAUSED_REPLY = "I'm down for a short maintenance and will be back soon. Please ask again in a little while."
SHUTTING_DOWN_REPLY = "I'm restarting right now. Please ask again in a minute."


def build_adapters(settings: Settings) -> list[Adapter]:
    """Every platform adapter whose credentials are set."""
    adapters: list[Adapter] = []
    if settings.slack.configured:
        from adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(settings))
    if settings.feishu.configured:
        from adapters.feishu import FeishuAdapter

        adapters.append(FeishuAdapter(settings))
    return adapters


class Application:
    """Start/stop (or ``async with``) the engine, services and adapters; ``handle`` is the adapters' callback.

    Start order: engine, services (scheduler, HTTP), adapters. Stop runs in reverse after draining answers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        adapters: Sequence[Adapter] | None = None,
        services: Sequence[Service] | None = None,
    ) -> None:
        self.settings = settings
        if engine is None:
            from inference.factory import create_engine

            engine = create_engine(settings)
        self.engine: Engine = engine
        chosen = adapters if adapters is not None else build_adapters(settings)
        self.adapters: dict[str, Adapter] = {a.name: a for a in chosen}
        self.commands: dict[str, Command] = {c.name: c for c in BUILTIN_COMMANDS}
        self.memory = ConversationMemory()
        self.seen = SeenKeys()
        self.paused = False
        self.started_at = time.time()
        self.counters: dict[str, int] = {"accepted": 0, "duplicates": 0, "answered": 0, "failed": 0, "commands": 0}
        self.usage = UsageRecorder(retention_days=settings.scheduler.usage_retention_days)
        """Every question's outcome, latency and engine figures (``/stats``, ``/metrics``, the status page)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = False
        self._started_adapters: list[Adapter] = []
        self._started_services: list[Service] = []
        if services is None:
            from bot.services import default_services

            services = default_services(self)
        self.services: list[Service] = list(services)

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.started_at = time.time()
        logger.info("starting: engine %s, adapters %s", self.settings.engine.model, sorted(self.adapters) or "none")
        await self.engine.start()
        self._accepting = True
        try:
            for service in self.services:
                await service.start()
                self._started_services.append(service)
            for adapter in self.adapters.values():
                await adapter.start(self.handle)
                self._started_adapters.append(adapter)
        except BaseException:
            await self.stop()
            raise
        logger.info("started")

    async def stop(self) -> None:
        """Stop intake, let answers in flight finish (bounded), then stop adapters and engine."""
        self._accepting = False
        await self.drain(self.settings.core.drain_timeout_s)
        for adapter in reversed(self._started_adapters):
            try:
                await adapter.stop()
            except Exception:
                logger.exception("stopping adapter %s failed", adapter.name)
        self._started_adapters.clear()
        for service in reversed(self._started_services):
            try:
                await service.stop()
            except Exception:
                logger.exception("stopping %s failed", service.name)
        self._started_services.clear()
        await self.engine.stop()
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
            logger.warning("cancelled %d answers that did not finish in time", len(still_running))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # intake --------------------------------------------------------------------------------------
    def is_admin(self, user: User) -> bool:
        return user.platform == "console" or self.settings.core.is_admin(user.key)

    async def handle(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        """Dedupe and schedule; never waits for the answer. Returns False for a duplicate."""
        keys = (f"{message.platform}:event:{message.event_id}", f"{message.platform}:msg:{message.message_id}")
        if any(key in self.seen for key in keys):
            self.counters["duplicates"] += 1
            logger.info("duplicate %s ignored", message.message_id)
            return False
        for key in keys:
            self.seen.add(key)
        self.counters["accepted"] += 1
        if message.is_command or looks_like_command(message.text):
            self._spawn(self._run_command(message, reply), message)
        else:
            self._spawn(self._run_question(message, reply), message)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], message: IncomingMessage) -> None:
        ids = {"request_id": message.message_id, "platform": message.platform}
        with log_context(**ids, conversation=str(message.conversation)):
            task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, message: IncomingMessage, reply: ReplyHandle) -> None:
        self.counters["commands"] += 1
        name, argument = parse_command(message.text)
        command = self.commands.get(name)
        try:
            if command is None:
                text = f"I don't know the command /{name}. Type /help to see what I can do."
            elif command.admin_only and not self.is_admin(message.user):
                text = f"Sorry, /{name} is for peekbot admins only."
                logger.warning("non-admin %s tried /%s", message.user.key, name)
            else:
                text = await command.handler(self, message, argument)
            await reply.finish(text)
        except Exception:
            logger.exception("command /%s failed", name)
            await self._safe_fail(reply, f"Sorry, /{name} failed on my side. The logs have the details.")

    async def _run_question(self, message: IncomingMessage, reply: ReplyHandle) -> None:
        adapter = self.adapters.get(message.platform)
        try:
            if not self._accepting:
                await reply.fail(SHUTTING_DOWN_REPLY)
                return
            if self.paused:
                await reply.finish(PAUSED_REPLY)
                return
            await reply.start_progress(None)
            if adapter is None:
                raise RuntimeError(f"no adapter named {message.platform}")
            with self.usage.track(message):
                question, answer = await answer_question(
                    message,
                    reply,
                    adapter=adapter,
                    engine=self.engine,
                    settings=self.settings,
                    history=self.memory.history(message.conversation),
                )
            self.memory.record(message.conversation, question, answer)
            self.counters["answered"] += 1
        except UserFacingError as exc:
            self.counters["failed"] += 1
            logger.info("answered with an error (%s): %s", exc.kind, exc)
            await self._safe_fail(reply, exc.user_message)
        except asyncio.CancelledError:
            self.counters["failed"] += 1
            await self._safe_fail(reply, SHUTTING_DOWN_REPLY)
            raise
        except Exception:
            self.counters["failed"] += 1
            logger.exception("question failed")
            await self._safe_fail(reply, "Sorry, something went wrong on my side. Please try again; if it keeps "
                                  f"happening, tell an admin (reference {message.message_id}).")

    async def _safe_fail(self, reply: ReplyHandle, text: str) -> None:
        try:
            await reply.fail(text)
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
