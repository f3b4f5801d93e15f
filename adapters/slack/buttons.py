"""Buttons on the bot's answers in Slack: Stop while an answer streams, 👍/👎 (``feedback_buttons``) on the final
answer, and after a 👎 a short "what was wrong?" choice shown only to the person who pressed it.

Every button's value names the question (``IncomingMessage.message_id``) and what the press means, so a click is
read from its own value alone (``pressed``); the core decides whether the presser may do it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.kit.ratings import reasons
from adapters.slack.events import PLATFORM
from bot.i18n import lang_of_text, say
from bot.types import AnswerAction, AnswerActionKind, ConversationKey, User

ACTION_PREFIX = "peekbot_"
"""Every action id of the bot's buttons starts with this (Bolt routes them to the adapter by it)."""
STOP_ACTION = "peekbot_stop"
RATING_ACTION = "peekbot_rating"
REASON_ACTION = "peekbot_reason"
SECTION_CHARS = 3000
"""The most text one section block holds."""
MAX_TEXT_BLOCKS = 45
"""Text blocks in one message (Slack allows 50 blocks; room is left for the buttons)."""


def encode(kind: AnswerActionKind, question_id: str, reason: str = "") -> str:
    """A button's value: what pressing it means, for which question."""
    value = {"k": kind.value, "q": question_id}
    if reason:
        value["r"] = reason
    return json.dumps(value, separators=(",", ":"))


def decode(value: object) -> tuple[AnswerActionKind, str, str] | None:
    """(kind, question id, reason) from a button's value; None for anything that is not one of ours."""
    try:
        data = json.loads(str(value))
        kind = AnswerActionKind(data["k"])
        question_id = str(data["q"])
    except (ValueError, TypeError, KeyError):
        return None
    reason = str(data.get("r") or "")
    return (kind, question_id, reason) if question_id else None


def text_blocks(text: str) -> list[dict[str, Any]]:
    """``text`` as section blocks (mrkdwn, as ``text`` renders): a message with blocks shows only its blocks."""
    chunks = [text[i : i + SECTION_CHARS] for i in range(0, len(text), SECTION_CHARS)][:MAX_TEXT_BLOCKS]
    return [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in chunks if chunk.strip()]


def stop_block(question_id: str, lang: str = "en") -> dict[str, Any]:
    """The Stop button shown while an answer streams (labelled in ``lang``, ``bot.i18n``)."""
    button = {
        "type": "button",
        "action_id": STOP_ACTION,
        "text": {"type": "plain_text", "text": say("button.stop", lang)},
        "value": encode(AnswerActionKind.STOP, question_id),
    }
    return {"type": "actions", "block_id": "peekbot_stop", "elements": [button]}


def rating_block(question_id: str, lang: str = "en") -> dict[str, Any]:
    """👍/👎 under a final answer (a ``context_actions`` block with a ``feedback_buttons`` element); the labels
    screen readers read are in ``lang``."""
    feedback = {
        "type": "feedback_buttons",
        "action_id": RATING_ACTION,
        "positive_button": {
            "text": {"type": "plain_text", "text": "👍"},
            "accessibility_label": say("button.helpful", lang),
            "value": encode(AnswerActionKind.HELPFUL, question_id),
        },
        "negative_button": {
            "text": {"type": "plain_text", "text": "👎"},
            "accessibility_label": say("button.not_helpful", lang),
            "value": encode(AnswerActionKind.NOT_HELPFUL, question_id),
        },
    }
    return {"type": "context_actions", "block_id": "peekbot_rating", "elements": [feedback]}


def reason_blocks(sentence: str, question_id: str) -> list[dict[str, Any]]:
    """The handler's sentence and the "what was wrong?" choice, for an ephemeral message after a 👎 (in the
    sentence's language: the core says it in the asker's)."""
    lang = lang_of_text(sentence)
    buttons = [
        {
            "type": "button",
            "action_id": f"{REASON_ACTION}_{index}",
            "text": {"type": "plain_text", "text": label},
            "value": encode(AnswerActionKind.NOT_HELPFUL, question_id, reason),
        }
        for index, (reason, label) in enumerate(reasons(lang))
    ]
    asking = sentence if sentence.rstrip().endswith(("?", "？")) else f"{sentence} {say('rating.what_was_wrong', lang)}"
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": asking}},
        {"type": "actions", "block_id": "peekbot_reason", "elements": buttons},
    ]


@dataclass(frozen=True, slots=True)
class Press:
    """One press of one of the bot's buttons, and where to answer the presser."""

    action: AnswerAction
    channel: str
    thread_ts: str | None

    @property
    def asks_reason(self) -> bool:
        """A 👎 without a reason yet: offer the "what was wrong?" choice."""
        return self.action.kind is AnswerActionKind.NOT_HELPFUL and not self.action.reason


def pressed(body: Mapping[str, Any], default_team: str) -> list[Press]:
    """The presses of the bot's buttons in a ``block_actions`` payload (others' and malformed ones are left out)."""
    user = body.get("user") or {}
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    team = str((body.get("team") or {}).get("id") or default_team)
    container = body.get("container") or {}
    message = body.get("message") or {}
    thread_ts = container.get("thread_ts") or message.get("thread_ts") or None
    presser = User(
        platform=PLATFORM,
        user_id=str(user.get("id") or ""),
        display_name=str(user.get("username") or user.get("name") or ""),
        org=str(user.get("team_id") or team),
    )
    presses = []
    for action in body.get("actions") or []:
        if not str(action.get("action_id") or "").startswith(ACTION_PREFIX):
            continue
        decoded = decode(action.get("value"))
        if decoded is None or not presser.user_id or not channel:
            continue
        kind, question_id, reason = decoded
        conversation = ConversationKey(PLATFORM, team, channel, str(thread_ts) if thread_ts else None)
        answer_action = AnswerAction(PLATFORM, question_id, presser, kind, reason, conversation)
        presses.append(Press(answer_action, channel, str(thread_ts) if thread_ts else None))
    return presses
