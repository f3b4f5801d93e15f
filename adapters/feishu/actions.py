"""Presses on an answer's buttons (``card.action.trigger``): checked, handed to the core, answered with a toast.

A press is read (``adapters.feishu.buttons``), checked against the same access rules as a message (the presser's
tenant and user; an answer is only ever posted where its question was allowed), and handed to the core's
``AnswerActionHandler``. The frame is answered with the handler's sentence as a toast, within
``FEISHU_ACTION_ANSWER_WAIT_S`` (Feishu shows an error after 3 s): a slower handler gets a "working on it" toast and
finishes in the background. An unreadable press, a refused presser or a failing handler get an error toast; the
connection is never affected.

After a 👎 on a CardKit card the row of buttons becomes the "what was wrong?" choice, and after a reason was chosen
a short thank-you: one ``batch_update`` each, after the toast went out, with a sequence number above any the
answer's own reply can have used (the row's sequence plus CardKit's 10 ticks a second since it was drawn).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from adapters.feishu.buttons import (
    BUTTONS_ELEMENT,
    CardPress,
    MalformedPress,
    note_row,
    parse_press,
    reason_row,
    response,
)
from adapters.feishu.connection import InboundFrame
from adapters.feishu.events import PLATFORM
from adapters.feishu.replies import SEQUENCE_TICKS_PER_S
from adapters.feishu.rest import FeishuApiError, FeishuRest
from adapters.feishu.settings import FeishuSettings
from adapters.kit.ratings import reason_text
from adapters.kit.replies import Spawn
from bot.access import AccessPolicy
from bot.i18n import CATALOGUE, lang_of_text, say
from bot.settings import Settings
from bot.types import (
    AnswerAction,
    AnswerActionHandler,
    AnswerActionKind,
    ChatType,
    ConversationKey,
    IncomingMessage,
    User,
)

logger = logging.getLogger(__name__)

UNREADABLE = " / ".join(say("press.unreadable", lang) for lang in ("zh", "en"))
"""The toast for a press that cannot be read: no card, so no language known, so both."""
NOT_RECORDED = CATALOGUE["press.not_recorded"]["en"]
WORKING = CATALOGUE["press.working"]["en"]
"""The English toasts (``bot.i18n``); a press on a card in another language gets that language's."""

REMEMBERED_CARDS = 1000
"""Cards whose last sequence number this process remembers (for two quick presses on one card)."""


class CardActions:
    """Answers card callbacks for one adapter (see the module docstring)."""

    def __init__(self, settings: Settings, rest: Callable[[], FeishuRest], spawn: Spawn) -> None:
        self._policy = AccessPolicy(settings.access, settings.core.admins)
        self._wait_s = settings.section(FeishuSettings).action_answer_wait_s
        self._rest = rest
        self._spawn = spawn
        self.handler: AnswerActionHandler | None = None
        self._sequences: OrderedDict[str, int] = OrderedDict()

    async def answer(self, inbound: InboundFrame) -> None:
        """Read, check and hand over one press; answer its frame with a toast."""
        try:
            press = parse_press(inbound.payload)
        except MalformedPress as exc:
            logger.warning("feishu: card callback %s could not be read: %s", inbound.transport_id, exc)
            await inbound.ack(200, response(UNREADABLE, kind="error"))
            return
        lang = press.value.lang or "en"  # the card's language: a press carries no locale
        refusal = self._refusal(press, lang)
        if refusal is not None:
            await inbound.ack(200, response(refusal, kind="error"))
            return
        handler = self.handler
        if handler is None:
            await inbound.ack(200, response(say("press.not_ready", lang), kind="error"))
            return
        task = asyncio.get_running_loop().create_task(handler(self._action(press)))
        done, _ = await asyncio.wait({task}, timeout=self._wait_s)
        if not done:
            logger.info("feishu: a %s press on %s is slow; answered for now", press.value.kind, press.value.question_id)
            await inbound.ack(200, response(say("press.working", lang)))
            self._spawn(self._finish_late(task, press))
            return
        sentence = self._sentence(task, press)
        failed = say("press.not_recorded", lang)
        await inbound.ack(200, response(sentence or failed, kind="info" if sentence else "error"))
        if sentence:
            await self._redraw(press, lang_of_text(sentence))

    def _refusal(self, press: CardPress, lang: str) -> str | None:
        """The access rules' refusal for the presser (their tenant and user) in ``lang``, or None."""
        probe = IncomingMessage(
            event_id=press.message_id,
            message_id=press.value.question_id,
            conversation=self._conversation(press),
            user=self._user(press),
            chat_type=ChatType.DIRECT,  # the channel rules allowed the question this answer belongs to
            segments=(),
            mentions_bot=True,
        )
        refusal = self._policy.check(probe, is_command=False)
        return None if refusal is None else refusal.text(lang)

    def _action(self, press: CardPress) -> AnswerAction:
        value = press.value
        return AnswerAction(
            platform=PLATFORM,
            question_id=value.question_id,
            user=self._user(press),
            kind=value.kind,
            reason=value.reason,
            conversation=self._conversation(press),
        )

    @staticmethod
    def _user(press: CardPress) -> User:
        return User(platform=PLATFORM, user_id=press.open_id, org=press.tenant_key)

    @staticmethod
    def _conversation(press: CardPress) -> ConversationKey:
        return ConversationKey(PLATFORM, press.tenant_key, press.chat_id)

    @staticmethod
    def _sentence(task: asyncio.Task[str], press: CardPress) -> str | None:
        """The handler's sentence, or None when it failed (logged)."""
        try:
            return task.result() or say("press.thanks", press.value.lang or "en")
        except Exception:
            logger.exception(
                "feishu: the core did not take a %s press on %s", press.value.kind, press.value.question_id
            )
            return None

    async def _finish_late(self, task: asyncio.Task[str], press: CardPress) -> None:
        await asyncio.wait({task})
        sentence = self._sentence(task, press)
        if sentence:
            await self._redraw(press, lang_of_text(sentence))

    async def _redraw(self, press: CardPress, lang: str) -> None:
        """After a 👎 on a CardKit card: the reason choice, then a thank-you (see the module docstring), in ``lang``
        (that of the handler's sentence, which the core says in the asker's language)."""
        value = press.value
        if value.kind is not AnswerActionKind.NOT_HELPFUL or not value.card_id:
            return
        sequence = self._next_sequence(value.card_id, value.sequence, value.drawn_at)
        now = time.time()
        if value.reason:
            row = note_row(say("rating.noted_reason", lang, reason=reason_text(value.reason, lang).lower()))
        else:
            row = reason_row(value.question_id, card_id=value.card_id, sequence=sequence, drawn_at=now, lang=lang)
        action = {"action": "update_element", "params": {"element_id": BUTTONS_ELEMENT, "element": row}}
        try:
            await self._rest().update_card(value.card_id, [action], sequence, max_wait_s=self._wait_s)
        except (FeishuApiError, RuntimeError) as exc:
            logger.info("feishu: the buttons on card %s were not redrawn: %s", value.card_id, exc)

    def _next_sequence(self, card_id: str, drawn: int, drawn_at: float) -> int:
        elapsed = max(time.time() - drawn_at, 0.0) if drawn_at else 0.0
        sequence = max(drawn + 1 + int(elapsed * SEQUENCE_TICKS_PER_S), self._sequences.get(card_id, 0) + 1)
        self._sequences[card_id] = sequence
        self._sequences.move_to_end(card_id)
        while len(self._sequences) > REMEMBERED_CARDS:
            self._sequences.popitem(last=False)
        return sequence
