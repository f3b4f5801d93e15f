"""Per-channel instructions: admins set them from the chat, every question asked there carries them.

``/instructions set <text>`` (Slack: ``/peekbot instructions set <text>``), ``show`` and ``clear`` are an admin
command (``bot/commands.py``). The text is kept in the state store per channel or chat — the conversation key
without its thread — so every thread of the channel, every replica and every restart sees it. A question's
``GenerationRequest.instructions`` carries it to the engine, which adds it to the system prompt after its own rules
(``inference.prompts.system_text``); the answer cache key covers it, so changed instructions never serve an answer
cached under the old ones. ``status`` shows them in that channel. Each change is audited — who, when, which channel,
``set`` or ``cleared`` — never the text itself.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.i18n import CATALOGUE, lang_for, say
from bot.store.base import ADMIN_EVENTS, AuditRecord, ChannelInstructions, keep_audit
from bot.types import ConversationKey, IncomingMessage

if TYPE_CHECKING:
    from bot.app import Application
    from bot.store.base import Store

logger = logging.getLogger(__name__)

SET_OUTCOME, CLEARED_OUTCOME = ADMIN_EVENTS
"""The audit outcomes of a change (the record holds who, when and where; never the text)."""
USAGE = CATALOGUE["instructions.usage"]["en"]
STATUS_PREVIEW_CHARS = 300
"""How much of the instructions ``status`` shows."""


def channel_of(conversation: ConversationKey) -> str:
    """The channel or chat of a conversation (its key without the thread): where instructions apply."""
    return str(ConversationKey(conversation.platform, conversation.workspace, conversation.channel))


async def instructions_for(store: Store, conversation: ConversationKey) -> str:
    """The instructions of the conversation's channel ("" when none). A store failure is logged and answers "":
    the question is answered without them rather than not at all."""
    channel = channel_of(conversation)
    try:
        stored = await store.instructions.get_instructions(channel)
    except Exception:
        logger.warning("could not read the instructions of %s; answering without them", channel, exc_info=True)
        return ""
    return stored.text if stored is not None else ""


async def instructions_command(app: Application, message: IncomingMessage, argument: str) -> str:
    """``/instructions set <text> | show | clear`` in the channel the command was sent in (admins only)."""
    words = argument.strip().split(None, 1)  # the text may start on the next line
    action = words[0].lower() if words else ""
    text = words[1].strip() if len(words) > 1 else ""
    channel = channel_of(message.conversation)
    store = app.store.instructions
    lang = lang_for(message)
    if action == "set":
        limit = app.settings.core.max_instructions_chars
        if not text:
            return say("instructions.set_empty", lang)
        if len(text) > limit:
            return say("instructions.too_long", lang, length=len(text), limit=limit)
        await store.set_instructions(channel, text, message.user.key)
        await _audit(app.store, message, SET_OUTCOME, channel)
        logger.info("%s set the instructions of %s (%d characters)", message.user.key, channel, len(text))
        return say("instructions.set", lang, length=len(text))
    if action == "clear" and not text:
        cleared = await store.clear_instructions(channel)
        if not cleared:
            return say("instructions.nothing_to_clear", lang)
        await _audit(app.store, message, CLEARED_OUTCOME, channel)
        logger.info("%s cleared the instructions of %s", message.user.key, channel)
        return say("instructions.cleared", lang)
    if action in ("show", "") and not text:
        stored = await store.get_instructions(channel)
        if stored is None:
            return say("instructions.none", lang) + " " + say("instructions.usage", lang)
        return say("instructions.show", lang, who=_who_and_when(stored, lang)) + f"\n{stored.text}"
    return say("instructions.unknown", lang, action=action) + " " + say("instructions.usage", lang)


async def status_line(app: Application, message: IncomingMessage) -> str | None:
    """What ``status`` says about the channel's instructions (admins also see who set them and when)."""
    channel = channel_of(message.conversation)
    lang = lang_for(message)
    try:
        stored = await app.store.instructions.get_instructions(channel)
    except Exception:
        logger.warning("could not read the instructions of %s for status", channel, exc_info=True)
        return say("instructions.unreadable", lang)
    if stored is None:
        return None
    preview = stored.text if len(stored.text) <= STATUS_PREVIEW_CHARS else stored.text[:STATUS_PREVIEW_CHARS] + "…"
    preview = " ".join(preview.split())
    if app.is_admin(message.user):
        return say("instructions.status_admin", lang, who=_who_and_when(stored, lang), preview=preview)
    return say("instructions.status", lang, preview=preview)


def _who_and_when(stored: ChannelInstructions, lang: str) -> str:
    when = datetime.fromtimestamp(stored.set_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return say("instructions.who", lang, by=stored.set_by, when=when)


async def _audit(store: Store, message: IncomingMessage, outcome: str, channel: str) -> None:
    """Who changed the channel's instructions, when and where: no text, no lengths."""
    record = AuditRecord.event(
        job_id=f"{message.platform}:{message.message_id}",
        platform=message.platform,
        user=message.user.key,
        conversation=channel,
        outcome=outcome,
    )
    await keep_audit(store.audit, record)
