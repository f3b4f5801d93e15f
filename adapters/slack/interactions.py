"""What people do with the bot besides asking: press its answers' buttons, open its DM, use its message shortcut.

- Button presses (``block_actions`` in Socket Mode ``interactive`` envelopes, acked at once): the core's answer
  action handler gets each one (``adapters.slack.buttons``) and its sentence is shown to the presser only
  (``chat.postEphemeral``); a 👎 adds the "what was wrong?" choice.
- Opening the DM: suggested prompts, for the agent view (``app_home_opened`` with ``tab == "messages"``, prompts
  without a thread) and the older assistant view (``assistant_thread_started``, prompts for that thread).
- The message shortcut (``message_action``): a question about that message, answered in its thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit.outbound import RetryPolicy
from adapters.slack import events
from adapters.slack.buttons import Press, pressed, reason_blocks
from adapters.slack.events import Identity
from adapters.slack.locales import UserLocales
from adapters.slack.replies import web_call
from bot.i18n import lang_of_locale, say
from bot.types import AnswerActionHandler, ChatType, ConversationKey, FileRef, IncomingMessage, TextSegment, User

logger = logging.getLogger(__name__)

EPHEMERAL_POLICY = RetryPolicy(retries=2, transient_attempts=3)
MAX_PROMPTS = 4
"""Slack shows at most four suggested prompts."""
PROMPT_TITLE_CHARS = 75
DM_OPENED_EVENTS = frozenset({"app_home_opened", "assistant_thread_started"})


def suggested_prompts(prompts: Sequence[str]) -> list[dict[str, str]]:
    """The configured prompts as ``setSuggestedPrompts`` takes them (title shortened, message whole)."""
    return [
        {"title": p if len(p) <= PROMPT_TITLE_CHARS else p[: PROMPT_TITLE_CHARS - 1] + "…", "message": p}
        for p in prompts[:MAX_PROMPTS]
    ]


def prompt_target(event: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(channel, thread or None) to offer prompts in for a DM-opening event; None for other events."""
    if event.get("type") == "app_home_opened":
        channel = str(event.get("channel") or "")
        return (channel, None) if event.get("tab") == "messages" and channel else None
    if event.get("type") == "assistant_thread_started":
        thread = event.get("assistant_thread") or {}
        channel, thread_ts = str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or "")
        return (channel, thread_ts) if channel and thread_ts else None
    return None


class Interactions:
    """Answers button presses and DM openings for one started adapter."""

    def __init__(
        self, web: AsyncWebClient, me: Identity, *, prompts: Sequence[str], locales: UserLocales | None = None
    ) -> None:
        self._web = web
        self._me = me
        self._prompts = suggested_prompts(prompts)
        self._locales = locales
        self.handler: AnswerActionHandler | None = None

    async def offer_prompts(self, event: Mapping[str, Any]) -> None:
        """Suggested prompts where someone opened the bot's DM (best effort: a refusal is only logged)."""
        target = prompt_target(event)
        if target is None or not self._prompts:
            return
        channel, thread_ts = target
        try:
            await self._web.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, prompts=self._prompts
            )
        except Exception as exc:
            logger.info("slack: no suggested prompts in %s: %s", channel, exc)

    async def on_block_actions(self, body: Mapping[str, Any]) -> None:
        """Hand each press of the bot's buttons to the core and show its sentence to the presser."""
        for press in pressed(body, self._me.team_id):
            await self._press(press)

    async def _press(self, press: Press) -> None:
        action = press.action
        handler = self.handler
        if handler is None:
            return
        try:
            sentence = await handler(action)
        except Exception:
            logger.exception("slack: the %s press on %s could not be recorded", action.kind, action.question_id)
            locale = await self._locales.of(action.user.user_id) if self._locales is not None else ""
            await self._tell(press, say("press.failed", lang_of_locale(locale) or "en"), None)
            return
        logger.info("slack: %s pressed on %s by %s", action.kind, action.question_id, action.user.user_id)
        await self._tell(press, sentence, reason_blocks(sentence, action.question_id) if press.asks_reason else None)

    async def _tell(self, press: Press, text: str, blocks: list[dict[str, Any]] | None) -> None:
        try:
            await web_call(
                self._web.chat_postEphemeral,
                what="chat.postEphemeral",
                policy=EPHEMERAL_POLICY,
                channel=press.channel,
                user=press.action.user.user_id,
                text=text,
                **({"thread_ts": press.thread_ts} if press.thread_ts else {}),
                **({"blocks": blocks} if blocks else {}),
            )
        except Exception as exc:
            logger.warning("slack: could not answer a button press in %s: %s", press.channel, exc)


def shortcut_target(body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(channel, message) a ``message_action`` was used on; None when the payload lacks them."""
    channel = str((body.get("channel") or {}).get("id") or "")
    message = body.get("message") or {}
    if not channel or not isinstance(message, Mapping) or not message.get("ts"):
        return None
    return channel, message


def shortcut_question(
    body: Mapping[str, Any], files: Sequence[FileRef], *, me: Identity, question: str
) -> IncomingMessage:
    """The question the shortcut asks: ``question`` about the message's files and text, from the presser, in the
    message's thread. Its ids are the shortcut's own (the presser may ask about a message that was asked before)."""
    target = shortcut_target(body)
    assert target is not None
    channel, message = target
    presser = body.get("user") or {}
    team = str((body.get("team") or {}).get("id") or me.team_id)
    thread = str(message.get("thread_ts") or message.get("ts"))
    trigger = str(body.get("trigger_id") or body.get("action_ts") or message.get("ts"))
    quoted = events.clean_text(str(message.get("text") or ""), me.user_id)
    text = f"{question}\n\n> {quoted}" if quoted and not files else question
    segments: list[Any] = [TextSegment(text)]
    segments.extend(events.segments({}, files, me, False))
    return IncomingMessage(
        event_id=f"shortcut:{trigger}",
        message_id=f"shortcut:{channel}:{message.get('ts')}:{presser.get('id', '')}",
        conversation=ConversationKey(platform=events.PLATFORM, workspace=team, channel=channel, thread=thread),
        user=User(
            platform=events.PLATFORM,
            user_id=str(presser.get("id") or ""),
            display_name=str(presser.get("name") or presser.get("username") or ""),
            org=str(presser.get("team_id") or team),
        ),
        chat_type=ChatType.DIRECT if channel.startswith("D") else ChatType.GROUP,
        segments=tuple(segments),
        mentions_bot=True,
    )
