"""The "Toy chat" adapter, built from the adapter kit: events in over a WebSocket, answers out over HTTP.

What only Toy chat has is here (its event shapes, its four REST calls); single-flight intake and the ack come
from ``adapters.kit.intake``, the streaming reply from ``adapters.kit.replies``. The protocol is described in
``tests/adapters/toy/server.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from adapters.kit.intake import Flight, Intake, NotTaken, Outcome
from adapters.kit.replies import ReplyConfig, StreamingReply
from bot.errors import UnsupportedFile
from bot.settings import Settings, SettingsSection
from bot.types import (
    AdapterHealth,
    ChatType,
    ConversationKey,
    FileRef,
    IncomingMessage,
    MessageHandler,
    MessageWithdrawn,
    TextSegment,
    User,
    WithdrawalHandler,
)
from tests.adapters.toy.surface import ToySurface

logger = logging.getLogger(__name__)

PLATFORM = "toy"


class ToySettings(SettingsSection):
    """``TOY_*``: where the Toy chat server is and how answers are shown."""

    model_config = SettingsConfigDict(env_prefix="TOY_", extra="ignore", case_sensitive=False)

    url: str = ""
    token: SecretStr | None = None
    update_interval_s: float = 0.5
    """At most one edit per message in this many seconds while an answer streams."""
    max_message_chars: int = 2000
    """Longer answers go out in several messages."""

    @property
    def configured(self) -> bool:
        return bool(self.url) and self.token is not None


class ToyAdapter:
    """``bot.types.Adapter`` for Toy chat; reports deleted messages and resumes replies after a restart."""

    name = PLATFORM

    def __init__(self, settings: Settings) -> None:
        self._toy = settings.section(ToySettings)
        self._intake = Intake(PLATFORM, wait_s=settings.core.intake_wait_s)
        self._handler: MessageHandler | None = None
        self._withdrawal_handler: WithdrawalHandler | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnects = 0

    # Adapter -------------------------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        token = self._toy.token.get_secret_value() if self._toy.token is not None else ""
        self._http = aiohttp.ClientSession(self._toy.url, headers={"Authorization": f"Bearer {token}"})
        self._handler = handler
        await self._connect()

    async def stop(self) -> None:
        self._handler = None
        await self._disconnect()
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def health(self) -> AdapterHealth:
        connected = self._ws is not None and not self._ws.closed
        return AdapterHealth(connected=connected, reconnects=self._reconnects)

    async def fetch(self, file: FileRef) -> bytes:
        raise UnsupportedFile("Toy chat carries no files; describe what you see in words.")

    async def reconnect(self) -> None:
        await self._disconnect()
        await self._connect()
        self._reconnects += 1

    # ReportsWithdrawals, ResumableReplies --------------------------------------------------------
    def use_withdrawal_handler(self, handler: WithdrawalHandler) -> None:
        self._withdrawal_handler = handler

    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> StreamingReply:
        reply = self._reply(message)
        reply.restore(state)
        return reply

    # intake --------------------------------------------------------------------------------------
    async def _connect(self) -> None:
        assert self._http is not None, "the Toy chat adapter is not started"
        self._ws = await self._http.ws_connect("/events")
        self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))

    async def _disconnect(self) -> None:
        reader, ws, self._reader, self._ws = self._reader, self._ws, None, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if ws is not None:
            await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                data = frame.json()
                self._spawn(self._deliver(ws, str(data["delivery"]), data["event"]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, ws: aiohttp.ClientWebSocketResponse, delivery: str, event: Mapping[str, Any]) -> None:
        """Take the event once; ack ``ok`` once the core has it, ``ok: false`` (sent again) if it failed."""
        outcome = await self._intake.take(lambda flight: self._take(flight, event), label=str(event.get("id")))
        if outcome is not Outcome.PENDING and not ws.closed:
            await ws.send_json({"ack": delivery, "ok": outcome is Outcome.TAKEN})

    async def _take(self, flight: Flight, event: Mapping[str, Any]) -> None:
        if not await flight.claim(str(event["id"])):
            return
        fields = event["message"]
        conversation = ConversationKey(PLATFORM, PLATFORM, str(fields["chat"]))
        if event["type"] == "deleted":
            logger.info("toy: %s deleted", fields["id"])
            if self._withdrawal_handler is not None:
                await self._withdrawal_handler(
                    MessageWithdrawn(PLATFORM, str(event["id"]), str(fields["id"]), conversation)
                )
            return
        if event["type"] != "message" or not await flight.claim(str(fields["id"])):
            return
        handler = self._handler
        if handler is None:
            raise NotTaken("the Toy chat adapter is stopping")
        message = IncomingMessage(
            event_id=str(event["id"]),
            message_id=str(fields["id"]),
            conversation=conversation,
            user=User(PLATFORM, str(fields["user"])),
            chat_type=ChatType.DIRECT,
            segments=(TextSegment(str(fields["text"])),),
            mentions_bot=True,
        )
        accepted = await handler(message, self._reply(message))
        logger.info("toy: %s %s", message.message_id, "accepted" if accepted else "was a duplicate")

    def _reply(self, message: IncomingMessage) -> StreamingReply:
        assert self._http is not None, "the Toy chat adapter is not started"
        surface = ToySurface(self._http, chat=message.conversation.channel, question=message.message_id)
        config = ReplyConfig(update_interval_s=self._toy.update_interval_s, max_chars=self._toy.max_message_chars)
        return StreamingReply(surface, config, spawn=self._spawn)
