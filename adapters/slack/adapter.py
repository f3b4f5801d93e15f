"""The Slack adapter: Socket Mode in, the core's types out, answers in threads.

An event envelope is acked only after the core's handler returned, i.e. after the question was journaled:
Bolt runs with ``process_before_response``, so it sends the ack when our listener returns (Bolt's default
acks events *before* the listener runs). The listener dedupes, filters (a reply in a thread this process has not
answered costs one bounded look in the core's conversation directory: the thread may have been answered by an
earlier run or another replica), translates (a ``files.info`` or ``conversations.replies`` call at most) and calls
the handler, which journals and returns at once. When anything there fails, Bolt answers 500 internally and sends
no ack, so Slack delivers the event again.
A copy that arrives while the first is still on its way waits for the first copy's outcome.
The slash command is acked first thing, as Slack shows the user an error after 3 s.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit.intake import Flight, Intake, Outcome
from adapters.kit.longanswers import LongAnswers
from adapters.slack import events
from adapters.slack.buttons import ACTION_PREFIX
from adapters.slack.connection import SlackStartupError, SocketModeConnection
from adapters.slack.events import AnsweredThreads, Identity
from adapters.slack.files import FileFetcher
from adapters.slack.interactions import DM_OPENED_EVENTS, Interactions, shortcut_question, shortcut_target
from adapters.slack.locales import UserLocales
from adapters.slack.replies import AssistantStatus, EphemeralReply, ReplyOptions, ThreadReply
from adapters.slack.settings import SlackSettings
from adapters.slack.streaming import NativeStreaming, StreamingThread
from bot.i18n import lang_for
from bot.logs import log_context
from bot.settings import Settings
from bot.types import (
    AdapterHealth,
    AnswerActionHandler,
    ChatType,
    ConversationDirectory,
    ConversationKey,
    FileRef,
    IncomingMessage,
    MessageHandler,
    ReplyHandle,
    TextSegment,
    User,
    WithdrawalHandler,
)

logger = logging.getLogger(__name__)

THREAD_HISTORY_LIMIT = 200
DIRECTORY_TIMEOUT_S = 1.0
"""How long a thread reply waits for the conversation directory (it runs before the ack); then it counts as chatter."""


class EventNotTaken(Exception):
    """The core did not take an event (e.g. its journal failed): the envelope stays unacked."""


class _KnownBoltNotices(logging.Filter):
    """Drops Bolt's start-up warnings about the token being unused: we hand it a client and an authorize
    function on purpose, and SLACK_BOT_TOKEN in the environment would otherwise make Bolt warn at every start."""

    NOTICES = ("As you gave `client` as well", "As `installation_store` or `authorize` has been used")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


def _bolt_logger() -> logging.Logger:
    bolt_logger = logging.getLogger("adapters.slack.bolt")
    if not any(isinstance(f, _KnownBoltNotices) for f in bolt_logger.filters):
        bolt_logger.addFilter(_KnownBoltNotices())
    return bolt_logger


class SlackAdapter:
    """Slack over Socket Mode (slack-bolt ``AsyncApp`` + our own connection owner and watchdog)."""

    name = "slack"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._slack = settings.section(SlackSettings)
        self._handler: MessageHandler | None = None
        self._http: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None
        self._files: FileFetcher | None = None
        self._connection: SocketModeConnection | None = None
        self._assistant_status: AssistantStatus | None = None
        self._me: Identity | None = None
        self._bot_token = ""
        self._intake = Intake(self.name, wait_s=settings.core.intake_wait_s)
        self._threads = AnsweredThreads(self._slack.thread_memory)
        """Threads answered in this process: a fast local cache in front of the conversation directory."""
        self._directory: ConversationDirectory | None = None
        self._withdrawal_handler: WithdrawalHandler | None = None
        self._answer_handler: AnswerActionHandler | None = None
        self._interactions: Interactions | None = None
        self._locales: UserLocales | None = None
        """Each asker's Slack locale (``users.info``), for the language of peekbot's own sentences."""
        self._native = NativeStreaming(self._slack.native_streaming)
        """Native streaming on, and the workspaces that refused it (``adapters.slack.streaming``)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._reply_options = ReplyOptions(
            update_interval_s=self._slack.update_interval_s,
            first_words_after_s=self._slack.first_words_after_s,
            max_chars=self._slack.max_message_chars,
            reaction=self._slack.progress_reaction,
            retries=self._slack.rate_limit_retries,
            long_answers=LongAnswers.from_settings(settings.core),
        )

    @property
    def identity(self) -> Identity | None:
        """The bot's team and user id once started."""
        return self._me

    # Adapter -------------------------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        bot_token, app_token = self._tokens()
        self._bot_token = bot_token
        self._http = aiohttp.ClientSession()
        try:
            self._web = AsyncWebClient(
                token=bot_token,
                base_url=self._slack.api_url,
                session=self._http,
                timeout=int(self._slack.rest_timeout_s),
            )
            self._me = await self._check_bot_token(self._web)
            self._files = FileFetcher(
                self._web,
                self._http,
                bot_token=bot_token,
                max_bytes=self._settings.images.max_file_bytes,
                timeout_s=self._slack.download_timeout_s,
                api_url=self._slack.api_url,
                file_hosts=self._slack.file_hosts,
            )
            self._assistant_status = AssistantStatus(self._web)
            self._locales = UserLocales(
                self._web, ttl_s=self._slack.locale_cache_s, timeout_s=self._slack.locale_timeout_s
            )
            buttons = self._slack.answer_buttons and self._answer_handler is not None
            self._reply_options = replace(self._reply_options, buttons=buttons)
            self._interactions = Interactions(
                self._web, self._me, prompts=self._slack.suggested_prompts, locales=self._locales
            )
            self._interactions.handler = self._answer_handler
            self._handler = handler
            self._connection = SocketModeConnection(
                self._build_app(self._web), app_token=app_token, web=self._web, settings=self._slack
            )
            await self._connection.open()
        except BaseException:
            self._handler = None
            await self._http.close()
            self._http = None
            raise
        logger.info("slack: started as %s in %s", self._me.user_id, self._me.team_id)

    async def stop(self) -> None:
        self._handler = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        logger.info("slack: stopped")

    async def health(self) -> AdapterHealth:
        if self._connection is None:
            return AdapterHealth(connected=False, detail="not started")
        return await self._connection.health()

    async def fetch(self, file: FileRef) -> bytes:
        if self._files is None:
            raise RuntimeError("the Slack adapter is not started")
        return await self._files.fetch(file)

    async def reconnect(self) -> None:
        if self._connection is not None:
            await self._connection.reconnect("requested")

    # UsesConversationDirectory -------------------------------------------------------------------
    def use_conversation_directory(self, directory: ConversationDirectory) -> None:
        """Where to ask whether a thread unknown to this process was answered before (earlier run, other replica)."""
        self._directory = directory

    def use_withdrawal_handler(self, handler: WithdrawalHandler) -> None:
        """Where deleted messages and files go (the core stops and forgets them) before their event is acked."""
        self._withdrawal_handler = handler

    def use_answer_action_handler(self, handler: AnswerActionHandler) -> None:
        """Where presses of the answers' buttons go (ratings, Stop); answers carry buttons only with one."""
        self._answer_handler = handler
        if self._interactions is not None:
            self._interactions.handler = handler

    # ResumableReplies ----------------------------------------------------------------------------
    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> ReplyHandle:
        """The reply handle for a journaled message, continuing the placeholder named in ``state`` if any.

        Without one in ``state`` (the earlier process may have died between posting and journaling it) the handle
        looks in the thread for the placeholder that process posted for this question and adopts it
        (``adapters.slack.replies``). Needs the Web API client, i.e. a started adapter.
        """
        web = self._require_web()
        if message.is_command or state.get("kind") == "ephemeral":
            if self._http is None:
                raise RuntimeError("the Slack adapter is not started")
            return EphemeralReply(
                web,
                self._http,
                channel=state.get("channel") or message.conversation.channel,
                user_id=state.get("user_id") or message.user.user_id,
                response_url=state.get("response_url") or None,
                options=self._reply_options,
            )
        message_channel, _, message_ts = message.message_id.rpartition(":")
        channel = state.get("channel") or message.conversation.channel or message_channel
        question_ts = state.get("question_ts") or message_ts
        direct = state["direct"] == "1" if "direct" in state else message.chat_type is ChatType.DIRECT
        reply = self._thread_reply(
            message,
            channel=channel,
            thread_ts=state.get("thread_ts") or message.conversation.thread or question_ts,
            question_ts=question_ts,
            direct=direct,
        )
        reply.restore(state)
        self._threads.add(reply.channel, reply.thread_ts)  # follow-ups there still need no mention
        return reply

    def _thread_reply(
        self, message: IncomingMessage, *, channel: str, thread_ts: str, question_ts: str, direct: bool
    ) -> ThreadReply:
        me = self._me
        workspace = message.conversation.workspace
        thread = StreamingThread(
            self._require_web(),
            native=self._native,
            team=workspace,
            recipient_user_id=message.user.user_id,
            recipient_team_id=message.user.org or workspace,
            question_id=message.message_id,
            channel=channel,
            thread_ts=thread_ts,
            question_ts=question_ts,
            direct=direct,
            options=self._reply_options,
            assistant_status=self._assistant_status,
            bot_user_id=me.user_id if me is not None else "",
            bot_id=me.bot_id if me is not None else "",
        )
        return ThreadReply(thread, spawn=self._spawn).speaking(lang_for(message))

    # start-up ------------------------------------------------------------------------------------
    def _tokens(self) -> tuple[str, str]:
        if self._slack.bot_token is None or self._slack.app_token is None:
            raise SlackStartupError("Slack needs both SLACK_BOT_TOKEN (xoxb-…) and SLACK_APP_TOKEN (xapp-…).")
        bot_token = self._slack.bot_token.get_secret_value().strip()
        app_token = self._slack.app_token.get_secret_value().strip()
        if app_token.startswith("xox"):
            raise SlackStartupError(
                "SLACK_APP_TOKEN holds a bot or user token; it must be the app-level token (xapp-…) from your app's "
                "Basic Information page, with the connections:write scope."
            )
        if bot_token.startswith("xapp-"):
            raise SlackStartupError(
                "SLACK_BOT_TOKEN holds an app-level token; it must be the Bot User OAuth Token (xoxb-…) from your "
                "app's OAuth & Permissions page."
            )
        return bot_token, app_token

    @staticmethod
    async def _check_bot_token(web: AsyncWebClient) -> Identity:
        try:
            auth = await web.auth_test()
        except SlackApiError as exc:
            code = exc.response.get("error", "unknown error") if exc.response is not None else "unknown error"
            raise SlackStartupError(
                f"Slack refused SLACK_BOT_TOKEN ({code}). Use the Bot User OAuth Token (xoxb-…) from your app's "
                "OAuth & Permissions page and reinstall the app if it was revoked: see deploy/slack/README.md."
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SlackStartupError(f"Could not reach the Slack API at {web.base_url}: {exc}") from exc
        bot_id = str(auth.get("bot_id") or "")
        return Identity(team_id=str(auth["team_id"]), user_id=str(auth["user_id"]), bot_id=bot_id)

    def _build_app(self, web: AsyncWebClient) -> AsyncApp:
        me = self._me
        assert me is not None
        token = self._bot_token

        async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            # auth.test ran once at start-up; Bolt need not repeat it before acking each envelope.
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id or me.team_id,
                bot_user_id=me.user_id,
                bot_id=me.bot_id or None,
                bot_token=token,
            )

        app = AsyncApp(
            client=web,
            authorize=authorize,
            logger=_bolt_logger(),
            request_verification_enabled=False,  # Socket Mode: no HTTP signatures
            ssl_check_enabled=False,
            url_verification_enabled=False,
            process_before_response=True,  # ack when the listener returned, not before it ran
        )

        async def on_event(body: dict[str, Any]) -> None:
            await self._process_event(body)

        async def on_command(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            self._spawn(self._process_command(body))

        async def on_button(ack: Any, body: dict[str, Any]) -> None:
            await ack()  # at once: the core's answer comes as an ephemeral message
            if self._interactions is not None:
                self._spawn(self._interactions.on_block_actions(body))

        async def on_shortcut(ack: Any, body: dict[str, Any]) -> None:
            await ack()  # Slack does not deliver a shortcut again: it is taken up in the background
            self._spawn(self._process_shortcut(body))

        async def on_error(error: Exception) -> None:
            # Bolt has set the response to 500: the envelope is not acked and Slack sends it again.
            if not isinstance(error, EventNotTaken):
                logger.error("slack: an envelope could not be handled; left unacked", exc_info=error)

        app.event(re.compile(".*"))(on_event)
        app.command(self._slack.command)(on_command)
        app.action(re.compile(f"^{re.escape(ACTION_PREFIX)}"))(on_button)
        app.shortcut(self._slack.shortcut_callback_id)(on_shortcut)
        app.error(on_error)
        return app

    # events --------------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("slack: background task failed", exc_info=task.exception())

    async def _process_event(self, body: Mapping[str, Any]) -> None:
        """Dedupe, filter, translate and hand one event to the core (``adapters.kit.intake``). Returning acks the
        envelope; ``EventNotTaken`` leaves it unacked (the core failed, or an earlier copy is still on its way)."""
        me, handler = self._me, self._handler
        event = body.get("event")
        if not isinstance(event, Mapping):
            return
        if me is None or handler is None:
            raise EventNotTaken("the Slack adapter is stopping")
        if event.get("type") in DM_OPENED_EVENTS:
            if self._interactions is not None:
                self._spawn(self._interactions.offer_prompts(event))
            return
        event_id = str(body.get("event_id") or "")
        outcome = await self._intake.take(
            lambda flight: self._take(flight, handler, body, event, me, event_id), label=f"event {event_id}"
        )
        if outcome is not Outcome.TAKEN:
            raise EventNotTaken(f"event {event_id}: {outcome}")

    async def _take(
        self,
        flight: Flight,
        handler: MessageHandler,
        body: Mapping[str, Any],
        event: Mapping[str, Any],
        me: Identity,
        event_id: str,
    ) -> None:
        if not await flight.claim(event_id):
            logger.info("slack: event %s delivered again; acked", event_id)
            return
        if await self._withdrawn(body, event, me):
            return
        verdict = events.classify(event, me, self._threads)
        if await self._thread_answered_before(body, event, me, verdict):
            verdict = events.classify(event, me, self._threads)
        if not verdict.answer:
            logger.debug("slack: ignored %s event %s: %s", event.get("type"), event_id, verdict.reason)
            return
        message_id = events.message_id(event)
        if not await flight.claim(message_id):
            logger.info("slack: message %s arrived again as %s; acked", message_id, event.get("type"))
            return
        await self._hand_over(handler, body, event, me, verdict)

    async def _withdrawn(self, body: Mapping[str, Any], event: Mapping[str, Any], me: Identity) -> bool:
        """True when the event deleted a message or file: the core has stopped and forgotten it (its failure
        propagates, leaving the envelope unacked)."""
        team_id = str(body.get("team_id") or event.get("team") or me.team_id)
        event_id = str(body.get("event_id") or "")
        withdrawn = events.withdrawal(event, me, event_id=event_id, team_id=team_id)
        if withdrawn is None:
            return False
        handler = self._withdrawal_handler
        if handler is not None:
            logger.info("slack: %s %s withdrawn (%d files)", withdrawn.kind, withdrawn.message_id or "-",
                        len(withdrawn.file_ids))
            await handler(withdrawn)
        return True

    async def _thread_answered_before(
        self, body: Mapping[str, Any], event: Mapping[str, Any], me: Identity, verdict: events.Verdict
    ) -> bool:
        """For a thread reply that would be a follow-up in an answered thread: was this thread answered before,
        by an earlier run or another replica? One bounded directory lookup; remembered locally when it was."""
        directory = self._directory
        if directory is None or not events.may_follow_up_unknown_thread(event, verdict, self._threads):
            return False
        conversation = self._conversation(body, event, me)
        try:
            answered = await asyncio.wait_for(directory.answered_before(conversation), DIRECTORY_TIMEOUT_S)
        except TimeoutError:
            logger.debug("slack: no answer from the conversation directory for %s within %.1f s; taken as chatter",
                         conversation, DIRECTORY_TIMEOUT_S)
            return False
        except Exception:
            logger.debug("slack: the conversation directory failed for %s; taken as chatter", conversation,
                         exc_info=True)
            return False
        if not answered:
            return False
        self._threads.add(str(event.get("channel", "")), events.thread_root(event))
        return True

    @staticmethod
    def _conversation(body: Mapping[str, Any], event: Mapping[str, Any], me: Identity) -> ConversationKey:
        """The conversation of an event, as the core sees it (``IncomingMessage.conversation``)."""
        return events.conversation(event, str(body.get("team_id") or event.get("team") or me.team_id))

    async def _hand_over(
        self,
        handler: MessageHandler,
        body: Mapping[str, Any],
        event: Mapping[str, Any],
        me: Identity,
        verdict: events.Verdict,
    ) -> None:
        message = await self._translate(body, event, me, verdict)
        with log_context(request_id=message.message_id, platform=self.name, conversation=str(message.conversation)):
            reply = self._thread_reply(
                message,
                channel=str(event.get("channel", "")),
                thread_ts=events.thread_root(event),
                question_ts=str(event.get("ts", "")),
                direct=message.chat_type is ChatType.DIRECT,
            )
            logger.info("slack: %s (%s event, %d files, %d earlier files)", verdict.reason, event.get("type"),
                        len(message.files), len(message.context_files))
            accepted = await handler(message, reply)
        if accepted:
            self._threads.add(reply.channel, reply.thread_ts)

    async def _translate(
        self, body: Mapping[str, Any], event: Mapping[str, Any], me: Identity, verdict: events.Verdict
    ) -> IncomingMessage:
        files = self._require_files()
        own = [await files.complete(f) for f in events.usable_files(event.get("files"))]
        context: list[FileRef] = []
        if events.is_in_thread(event):
            context = await self._thread_context(event)
        asker = events.user(event)
        return IncomingMessage(
            event_id=str(body.get("event_id") or events.message_id(event)),
            message_id=events.message_id(event),
            conversation=self._conversation(body, event, me),
            user=asker,
            chat_type=events.chat_type(event),
            segments=events.segments(event, own, me, verdict.mentions_bot),
            mentions_bot=verdict.mentions_bot,
            context_files=tuple(context),
            locale=await self._locale(asker.user_id),
        )

    async def _thread_context(self, event: Mapping[str, Any]) -> list[FileRef]:
        """Images and PDFs posted earlier in the thread (newest first); best effort."""
        channel, root = str(event.get("channel", "")), events.thread_root(event)
        try:
            response = await self._require_web().conversations_replies(
                channel=channel, ts=root, limit=THREAD_HISTORY_LIMIT
            )
        except SlackApiError as exc:
            logger.warning("slack: conversations.replies failed in %s: %s", channel, exc.response.get("error"))
            return []
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("slack: conversations.replies failed in %s: %s", channel, exc)
            return []
        earlier = events.earlier_files(response.get("messages") or [], str(event.get("ts", "")))
        limit = self._settings.images.max_images_per_question
        files = self._require_files()
        return [await files.complete(f) for f in earlier[:limit]]

    async def _process_shortcut(self, body: Mapping[str, Any]) -> None:
        """"Ask peekbot about this" on a message: a question about it from the presser, answered in its thread
        under the same access rules as any question."""
        me, handler = self._me, self._handler
        target = shortcut_target(body)
        if me is None or handler is None or target is None:
            return
        channel, shared = target
        files = self._require_files()
        own = [await files.complete(f) for f in events.usable_files(shared.get("files"))]
        message = shortcut_question(body, own, me=me, question=self._slack.shortcut_question)
        message = replace(message, locale=await self._locale(message.user.user_id))
        thread_ts = message.conversation.thread or str(shared["ts"])
        with log_context(request_id=message.message_id, platform=self.name, conversation=str(message.conversation)):
            reply = self._thread_reply(
                message, channel=channel, thread_ts=thread_ts, question_ts=str(shared["ts"]),
                direct=message.chat_type is ChatType.DIRECT,
            )
            logger.info("slack: message shortcut by %s (%d files)", message.user.user_id, len(own))
            if await handler(message, reply):
                self._threads.add(channel, thread_ts)

    async def _process_command(self, body: Mapping[str, Any]) -> None:
        me, handler, http = self._me, self._handler, self._http
        if me is None or handler is None or http is None:
            return
        trigger = str(body.get("trigger_id") or uuid.uuid4().hex)
        channel = str(body.get("channel_id", ""))
        user_id = str(body.get("user_id", ""))
        # Slack escapes &, < and > and wraps links and mentions: "/peekbot instructions set …" keeps the plain text.
        text = events.clean_text(str(body.get("text") or ""), me.user_id) or "help"
        direct = channel.startswith("D") or body.get("channel_name") == "directmessage"
        message = IncomingMessage(
            event_id=f"command:{trigger}",
            message_id=f"command:{trigger}",
            conversation=ConversationKey(
                platform=events.PLATFORM, workspace=str(body.get("team_id") or me.team_id), channel=channel
            ),
            user=User(platform=events.PLATFORM, user_id=user_id, display_name=str(body.get("user_name") or "")),
            chat_type=ChatType.DIRECT if direct else ChatType.GROUP,
            segments=(TextSegment(text),),
            mentions_bot=True,
            is_command=True,
            locale=await self._locale(user_id),
        )
        reply = EphemeralReply(
            self._require_web(),
            http,
            channel=channel,
            user_id=user_id,
            response_url=str(body.get("response_url") or "") or None,
            options=self._reply_options,
        )
        logger.info("slack: command %s %s from %s", self._slack.command, text.split(" ", 1)[0], user_id)
        await handler(message, reply)

    async def _locale(self, user_id: str) -> str:
        """The asker's Slack locale, ``""`` when Slack does not tell it in time (``adapters.slack.locales``)."""
        return await self._locales.of(user_id) if self._locales is not None else ""

    def _require_web(self) -> AsyncWebClient:
        if self._web is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._web

    def _require_files(self) -> FileFetcher:
        if self._files is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._files
