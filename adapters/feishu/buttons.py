"""The buttons on an answer card and what a press on one says (``card.action.trigger``).

While an answer streams its card shows **Stop**; the final answer shows **👍 / 👎**, and a 👎 on a CardKit card turns
the row into a short "what was wrong?" choice. Every button's ``value`` names the question (its ``message_id``) and
what the button means; a rating on a CardKit card also names the card and the sequence number it was drawn with,
so that the press can change the row (CardKit wants sequence numbers strictly increasing per card).

A press arrives over the long connection as an EVENT frame (``{"schema": "2.0", "header": {"event_type":
"card.action.trigger", …}, "event": {…}}``) or, in some app configurations, as a CARD frame with the same body or
the older flat one (``open_id``, ``tenant_key``, ``open_message_id``, ``action`` at the top). It is answered on the
same frame, within 3 s, with ``{"toast": …, "card": …}`` (``response``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from lark_oapi.core.json import JSON
from lark_oapi.event.callback.model.p2_card_action_trigger import (
    CallBackToast,
    P2CardActionTrigger,
    P2CardActionTriggerResponse,
)

from adapters.kit.ratings import reasons
from bot.i18n import say
from bot.types import AnswerActionKind

CARD_ACTION = "card.action.trigger"
BUTTONS_ELEMENT = "buttons"
"""The element id of the row of buttons under an answer (Stop, then the ratings, then the reason choice)."""
VALUE_VERSION = 1
MAX_ID_CHARS = 200


class MalformedPress(ValueError):
    """A card callback that cannot be read (no JSON, no operator, not one of our buttons); the message says why."""


@dataclass(frozen=True, slots=True)
class ButtonValue:
    """What one of our buttons carries back: the question, what it means and, on a CardKit card, where to draw."""

    question_id: str
    kind: AnswerActionKind
    reason: str = ""
    card_id: str = ""
    sequence: int = 0
    drawn_at: float = 0.0
    """Wall-clock time (seconds) the row holding the button was drawn with ``sequence``."""
    lang: str = ""
    """The language the card speaks (``bot.i18n``): a toast peekbot says before the core answers speaks it too."""

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"v": VALUE_VERSION, "q": self.question_id, "k": self.kind.value}
        if self.reason:
            value["r"] = self.reason
        if self.lang:
            value["l"] = self.lang
        if self.card_id:
            value.update(c=self.card_id, s=self.sequence, t=round(self.drawn_at, 1))
        return value

    @classmethod
    def from_json(cls, raw: object) -> ButtonValue:
        if isinstance(raw, str):  # a value may come back as the JSON text of an object
            try:
                raw = json.loads(raw)
            except ValueError:
                raise MalformedPress("the button value is not JSON") from None
        if not isinstance(raw, dict) or raw.get("v") != VALUE_VERSION:
            raise MalformedPress("not one of peekbot's answer buttons")
        question_id, kind = raw.get("q"), raw.get("k")
        if not isinstance(question_id, str) or not question_id or len(question_id) > MAX_ID_CHARS:
            raise MalformedPress("the button names no question")
        try:
            action = AnswerActionKind(kind)
        except ValueError:
            raise MalformedPress("the button's kind is unknown") from None
        reason, card_id = raw.get("r", ""), raw.get("c", "")
        sequence, drawn_at = raw.get("s", 0), raw.get("t", 0.0)
        if not isinstance(reason, str) or not isinstance(card_id, str) or len(card_id) > MAX_ID_CHARS:
            raise MalformedPress("the button's reason or card is not text")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or not isinstance(drawn_at, int | float):
            raise MalformedPress("the button's sequence is not a number")
        lang = raw.get("l", "")
        lang = lang[:8] if isinstance(lang, str) else ""
        return cls(question_id, action, reason[:100], card_id, sequence, float(drawn_at), lang)


@dataclass(frozen=True, slots=True)
class CardPress:
    """One press on one of our buttons, with who pressed it and where."""

    value: ButtonValue
    open_id: str
    tenant_key: str
    chat_id: str
    message_id: str
    """The card message's id (``open_message_id``)."""


def _button(label: str, value: ButtonValue, *, kind: str = "default") -> dict[str, Any]:
    return {
        "tag": "button",
        "text": {"tag": "plain_text", "content": label},
        "type": kind,
        "size": "small",
        "behaviors": [{"type": "callback", "value": value.to_json()}],
    }


def _row(*cells: dict[str, Any]) -> dict[str, Any]:
    """A row (``column_set``) that the ``BUTTONS_ELEMENT`` id names, one cell per column."""
    return {
        "tag": "column_set",
        "element_id": BUTTONS_ELEMENT,
        "flex_mode": "none",
        "horizontal_spacing": "8px",
        "columns": [{"tag": "column", "width": "auto", "elements": [cell]} for cell in cells],
    }


def stop_row(question_id: str, lang: str = "en") -> dict[str, Any]:
    """The Stop button shown while the answer streams (labelled in ``lang``, ``bot.i18n``)."""
    return _row(_button(f"⏹ {say('button.stop', lang)}", ButtonValue(question_id, AnswerActionKind.STOP, lang=lang)))


def rating_row(question_id: str, *, card_id: str = "", sequence: int = 0, lang: str = "") -> dict[str, Any]:
    """👍 / 👎 under a final answer; ``card_id`` and ``sequence`` for a CardKit card (so a 👎 can change the row);
    ``lang``: the card's language, for the toasts of a press."""
    at = time.time()
    return _row(
        *(
            _button(label, ButtonValue(question_id, kind, card_id=card_id, sequence=sequence, drawn_at=at, lang=lang))
            for label, kind in (("👍", AnswerActionKind.HELPFUL), ("👎", AnswerActionKind.NOT_HELPFUL))
        )
    )


def reason_row(
    question_id: str, *, card_id: str, sequence: int, drawn_at: float, lang: str = "en"
) -> dict[str, Any]:
    """The "what was wrong?" choice after a 👎, in ``lang``."""
    question = {"tag": "markdown", "content": say("rating.what_was_wrong", lang), "text_size": "notation"}
    return _row(
        question,
        *(
            _button(
                label,
                ButtonValue(question_id, AnswerActionKind.NOT_HELPFUL, reason, card_id, sequence, drawn_at, lang),
            )
            for reason, label in reasons(lang)
        ),
    )


def note_row(text: str) -> dict[str, Any]:
    """A short line in place of the buttons (after a reason was chosen)."""
    return _row({"tag": "markdown", "content": text, "text_size": "notation"})


def parse_press(payload: bytes) -> CardPress:
    """The press a callback reports (either layout, see the module docstring); raises ``MalformedPress``."""
    try:
        raw = json.loads(payload)
    except ValueError:
        raise MalformedPress("the callback is not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedPress("the callback is not a JSON object")
    if isinstance(raw.get("event"), dict):
        try:
            event = P2CardActionTrigger(raw).event
        except Exception:  # lark-oapi's model rejects a field of the wrong type
            raise MalformedPress("the callback's fields have the wrong types") from None
        action, operator, context = (event.action, event.operator, event.context) if event else (None, None, None)
        header_tenant = str((raw.get("header") or {}).get("tenant_key") or "")
        open_id = operator.open_id if operator else None
        tenant = (operator.tenant_key if operator else None) or header_tenant
        chat_id = context.open_chat_id if context else None
        message_id = context.open_message_id if context else None
        value = action.value if action else None
    else:  # the older flat layout
        action_raw = raw.get("action") if isinstance(raw.get("action"), dict) else {}
        open_id, tenant = raw.get("open_id"), raw.get("tenant_key")
        chat_id, message_id = raw.get("open_chat_id"), raw.get("open_message_id")
        value = action_raw.get("value")
    if not isinstance(open_id, str) or not open_id:
        raise MalformedPress("the callback names no operator")
    return CardPress(
        ButtonValue.from_json(value), open_id, str(tenant or ""), str(chat_id or ""), str(message_id or "")
    )


def is_card_action(payload: bytes) -> bool:
    """True for an EVENT frame that carries a ``card.action.trigger`` (cheap: no full parse)."""
    if CARD_ACTION.encode() not in payload:
        return False
    try:
        header = json.loads(payload).get("header") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(header, dict) and header.get("event_type") == CARD_ACTION


def response(text: str, *, kind: str = "info") -> bytes:
    """The answer to a callback: a toast (``info``, ``success``, ``warning`` or ``error``) with ``text``."""
    toast = CallBackToast({"type": kind, "content": text})
    reply = P2CardActionTriggerResponse()
    reply.toast = toast
    return (JSON.marshal(reply) or "{}").encode()
