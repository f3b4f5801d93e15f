"""The Feishu/Lark adapter: our long connection in, lark-oapi REST out.

An event frame is acked (code 200) only after the core's handler returned, i.e. after the question was
journaled. When the handler raises, the frame is answered with code 500 and Feishu sends the event again;
the connection stays up. A recalled message (``im.message.recalled_v1``) goes to the core's withdrawal handler
the same way: acked once the core has stopped and forgotten it. A press on an answer's button
(``card.action.trigger``, as an EVENT or a CARD frame) goes to ``adapters.feishu.actions`` and is answered on its
frame with a toast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

from adapters.feishu.actions import CardActions
from adapters.feishu.buttons import is_card_action
from adapters.feishu.connection import FatalConnectionError, InboundFrame, LongConnection
from adapters.feishu.events import Addressed, EventTranslator, merge_files, parse_event, parse_recall
from adapters.feishu.replies import FeishuReply
from adapters.feishu.rest import BotIdentity, DownloadTooLarge, FeishuApiError, FeishuRest
from adapters.feishu.settings import FeishuSettings
from adapters.kit.intake import Flight, Intake, NotTaken, Outcome
from adapters.kit.longanswers import LongAnswers
from adapters.kit.text import size_text
from bot.errors import FileAccessDenied, FileTooLarge, UnsupportedFile
from bot.i18n import lang_for
from bot.settings import Settings
from bot.types import (
    AdapterHealth,
    AnswerActionHandler,
    FileRef,
    IncomingMessage,
    MessageHandler,
    MessageWithdrawn,
    ReplyHandle,
    WithdrawalHandler,
)

logger = logging.getLogger(__name__)

# Feishu error codes that mean "the bot may not read this file" (not in the chat, no scope, no access).
PERMISSION_CODES = frozenset({234004, 234009, 234037, 230027, 99991672, 99991679})
STOP_GRACE_S = 5.0


class FeishuStartupError(RuntimeError):
    """Feishu refused the app at start-up; the message says what to check."""


class FeishuAdapter:
    """``bot.types.Adapter`` for Feishu and Lark (``FEISHU_DOMAIN`` chooses which, or a test server)."""

    name = "feishu"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._feishu = settings.section(FeishuSettings)
        self._handler: MessageHandler | None = None
        self._rest: FeishuRest | None = None
        self._connection: LongConnection | None = None
        self._translator: EventTranslator | None = None
        self.identity: BotIdentity | None = None
        self._intake = Intake(self.name, wait_s=settings.core.intake_wait_s)
        self._long_answers = LongAnswers.from_settings(settings.core)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._withdrawal_handler: WithdrawalHandler | None = None
        self._actions = CardActions(settings, self._rest_client, self._spawn)

    # Adapter -------------------------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        if not self._feishu.configured:
            raise FeishuStartupError("Feishu is not configured: set FEISHU_APP_ID and FEISHU_APP_SECRET.")
        self._handler = handler
        self._rest = FeishuRest(self._feishu)
        await self._rest.start()
        try:
            self.identity = await self._rest.bot_info()
        except FeishuApiError as exc:
            await self._close_rest()
            raise FeishuStartupError(
                f"Feishu refused to tell the bot who it is ({exc}). Check FEISHU_APP_ID, FEISHU_APP_SECRET and "
                f"FEISHU_DOMAIN ({self._feishu.domain}), and that the app has the bot capability enabled."
            ) from exc
        self._translator = EventTranslator(
            self.identity.open_id, max_context_files=self._settings.images.max_images_per_question
        )
        logger.info("feishu: signed in as bot %s (%s)", self.identity.name or "?", self.identity.open_id)
        self._connection = LongConnection(self._feishu, self._on_inbound)
        try:
            await self._connection.start()
        except FatalConnectionError as exc:
            self._connection = None
            await self._close_rest()
            raise FeishuStartupError(str(exc)) from exc

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.stop()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._close_rest()
        self._handler = None

    async def _close_rest(self) -> None:
        rest, self._rest = self._rest, None
        if rest is not None:
            await rest.close()

    async def reconnect(self) -> None:
        if self._connection is not None:
            await self._connection.reconnect()

    async def health(self) -> AdapterHealth:
        connection = self._connection
        if connection is None:
            return AdapterHealth(connected=False, detail="not started")
        detail = str(connection.fatal_error) if connection.fatal_error else ""
        return AdapterHealth(
            connected=connection.connected,
            connected_since=connection.connected_since,
            reconnects=connection.reconnects,
            last_event_age_s=connection.last_event_age_s,
            last_pong_age_s=connection.last_pong_age_s,
            detail=detail,
        )

    async def fetch(self, file: FileRef) -> bytes:
        """Download a message's image or file (``GET /im/v1/messages/{id}/resources/{key}``)."""
        name = file.name or "this file"
        limit = self._settings.images.max_file_bytes
        kind = file.source.get("type", "file")
        message_id = file.source.get("message_id", "")
        if kind not in ("image", "file") or not message_id:
            raise UnsupportedFile(key="feishu.unsupported", name=name)
        if file.size is not None and file.size > limit:
            raise _too_large(name, file.size, limit)
        if self._rest is None:
            raise FileAccessDenied(key="feishu.offline", name=name)
        try:
            download = await self._rest.download(message_id, file.file_id, kind, max_bytes=limit)
        except DownloadTooLarge as exc:
            raise _too_large(name, exc.size, limit) from exc
        except FeishuApiError as exc:
            if exc.status in (401, 403) or exc.code in PERMISSION_CODES:
                raise FileAccessDenied(key="feishu.not_allowed", name=name, detail=str(exc)) from exc
            reason = exc.message or "unknown error"
            raise FileAccessDenied(key="feishu.download_failed", name=name, reason=reason, detail=str(exc)) from exc
        if len(download.data) > limit:
            raise _too_large(name, len(download.data), limit)
        return download.data

    # ReportsWithdrawals --------------------------------------------------------------------------
    def use_withdrawal_handler(self, handler: WithdrawalHandler) -> None:
        """Where recalled messages go (the core stops and forgets them) before their event is acked."""
        self._withdrawal_handler = handler

    # ReportsAnswerActions ------------------------------------------------------------------------
    def use_answer_action_handler(self, handler: AnswerActionHandler) -> None:
        """Where presses on an answer's buttons (Stop, 👍/👎 and the reason after a 👎) go."""
        self._actions.handler = handler

    # ResumableReplies ----------------------------------------------------------------------------
    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> ReplyHandle:
        """The reply handle for a journaled message; keeps streaming into the card ``state`` names, if any.

        Needs the REST client, i.e. a started adapter.
        """
        in_thread = state["in_thread"] == "1" if "in_thread" in state else self._feishu.reply_in_thread
        return FeishuReply.resumed(
            self._rest_client(),
            message.message_id,
            state,
            settings=self._feishu,
            in_thread=in_thread,
            spawn=self._spawn,
            long_answers=self._long_answers,
        ).speaking(lang_for(message))

    # intake --------------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_inbound(self, inbound: InboundFrame) -> None:
        """Called in arrival order: parse and translate now (no I/O), deliver and ack in a task."""
        if inbound.kind == "card" or is_card_action(inbound.payload):
            self._spawn(self._actions.answer(inbound))
            return
        event = parse_event(inbound.payload)
        if event is None and (withdrawn := parse_recall(inbound.payload)) is not None:
            if self._translator is not None:
                self._translator.memory.forget(withdrawn.message_id)
            self._spawn(self._deliver_withdrawal(inbound, withdrawn))
            return
        addressed: Addressed | None = None
        if event is not None and self._translator is not None:
            try:
                addressed = self._translator.translate(event)
            except Exception:
                logger.exception("feishu: event %s could not be translated", inbound.transport_id)
        if addressed is None:
            self._spawn(self._ack_only(inbound))
            return
        self._spawn(self._deliver(inbound, addressed))

    async def _ack_only(self, inbound: InboundFrame) -> None:
        await inbound.ack(200)

    async def _deliver_withdrawal(self, inbound: InboundFrame, withdrawn: MessageWithdrawn) -> None:
        """Hand a recalled message to the core; ack 200 once it is forgotten, 500 (sent again) if that failed."""
        code = 200
        handler = self._withdrawal_handler
        if handler is not None:
            try:
                await handler(withdrawn)
                logger.info("feishu: %s was recalled; the core forgot it", withdrawn.message_id)
            except Exception:
                logger.exception("feishu: the core did not take the recall of %s; the server will send it again",
                                 withdrawn.message_id)
                code = 500
        await inbound.ack(code)

    async def _deliver(self, inbound: InboundFrame, addressed: Addressed) -> None:
        """Hand a message to the core once (``adapters.kit.intake``); ack 200 once it is taken, 500 (sent again) if
        the core failed, nothing while an earlier copy is still on its way (the server sends it again later)."""
        outcome = await self._intake.take(
            lambda flight: self._hand_over(flight, addressed), label=addressed.message.message_id
        )
        if outcome is not Outcome.PENDING:
            await inbound.ack(200 if outcome is Outcome.TAKEN else 500)

    async def _hand_over(self, flight: Flight, addressed: Addressed) -> None:
        message = addressed.message
        if not await flight.claim(message.event_id, message.message_id):
            logger.info("feishu: %s was delivered again; acknowledged", message.message_id)
            return
        handler = self._handler
        if handler is None:
            raise NotTaken("the Feishu adapter is stopping")
        if addressed.parent_id:
            message = await self._with_parent(addressed)
        reply = FeishuReply(
            self._rest_client(),
            message.message_id,
            settings=self._feishu,
            in_thread=self._feishu.reply_in_thread,
            spawn=self._spawn,
            long_answers=self._long_answers,
        ).speaking(lang_for(message))
        accepted = await handler(message, reply)
        logger.info("feishu: %s %s", message.message_id, "accepted" if accepted else "was a duplicate")

    def _rest_client(self) -> FeishuRest:
        if self._rest is None:
            raise RuntimeError("the Feishu adapter is not started")
        return self._rest

    async def _with_parent(self, addressed: Addressed) -> IncomingMessage:
        """Add the files of the message replied to (read by REST, bounded in time; best effort)."""
        message = addressed.message
        assert addressed.parent_id is not None and self._translator is not None
        timeout = self._feishu.context_lookup_timeout_s
        try:
            parent = await asyncio.wait_for(
                self._rest_client().get_message(addressed.parent_id, max_wait_s=timeout / 2), timeout
            )
        except (TimeoutError, FeishuApiError) as exc:
            logger.warning("feishu: could not read the message %s replies to: %s", message.message_id, exc)
            return message
        if parent is None:
            return message
        files = self._translator.parent_files(message.conversation.channel, parent)
        if not files:
            return message
        context = merge_files(files, message.context_files, limit=self._translator.max_context_files)
        return replace(message, context_files=context)


def _too_large(name: str, size: int | None, limit: int) -> FileTooLarge:
    """The refusal of a file over ``limit`` bytes (``size`` None: how much larger is unknown)."""
    if size is None:
        return FileTooLarge(key="file.over_limit", name=name, limit=size_text(limit))
    return FileTooLarge(key="file.too_large", name=name, size=size_text(size), limit=size_text(limit))
