"""How an answer looks in Feishu: a "Typing" reaction, then one card that streams the answer. ``FeishuCard`` is the
surface of the kit's streaming reply (``adapters.kit.replies``: throttling, coalescing, the final text, parts).

The card is a CardKit streaming card (``POST /cardkit/v1/cards``, ``PUT …/elements/{id}/content`` with an
increasing ``sequence``, ``POST …/batch_update`` to close it). Where CardKit is unavailable the reply is an
interactive card message edited with ``PATCH /im/v1/messages/{id}`` (at most 5 edits per second).

Buttons (``adapters.feishu.buttons``): the card shows **Stop** while the answer streams; with the final text the
same call that ends streaming mode swaps Stop for **👍 / 👎** (a card in streaming mode cannot be changed by a
press), or removes it under an apology. The ratings sit on the answer's card, i.e. the first part of a long answer,
where a 👎 can turn them into the reason choice.

``resume_state()`` names the card so that another process can finish it (``FeishuReply.resumed``): it checks
once that the card message still exists (else it replies afresh), and streams with sequence numbers above any
the first process can have used (CardKit wants them strictly increasing per card).

Adopting a card no journal names. The core journals ``resume_state()`` only after the card was sent, so a process
killed in between leaves a card the next process does not know about. The first card reply's idempotency key is
therefore derived from the question's message id alone (``uuid`` of ``POST …/messages/{id}/reply``): Feishu sends
a reply at most once per ``uuid`` within an hour and answers a repeat with the message it sent the first time. A
reply resumed without a card sends its first card with that same key. When the answer names a CardKit card other
than the one just created (read from the message content, else ``POST /cardkit/v1/cards/id_convert``), the earlier
card is adopted: streamed into with sequence numbers above any the dead process can have used, and closed at the
end. CardKit cannot create a card under an id of our choosing, so the card entity created for the attempt is
simply left unused. If the earlier message was deleted (or its card cannot be found), the reply is sent afresh
under a salted key, as every later message of a resumed reply is, so no stale key swallows it.

A "Typing" reaction no journal names. A process can die after adding its "Typing" reaction but before the state
recorded the reaction's id. A resumed reply whose state names no reaction id therefore, once it has finished or
failed, lists the question's "Typing" reactions (one page) and removes those this app added; a person's own
"Typing" reaction stays. A failure there is logged and never holds up the answer.

Long answers, once. The final text is split over several cards; after each one (but the last) the reply tells the
core (``bind_journal``'s checkpoint), which journals ``resume_state()`` with ``parts_posted`` and the idempotency
salt of those cards (``final_salt``). A reply resumed from such a state skips the parts already out and sends the
next ones under the same keys, so Feishu drops a card the dead process had sent but not journaled (within the
hour Feishu remembers a key). The core hands the resumed reply the same final text (it journals it first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from lark_oapi.api.im.v1 import ReplyMessageResponseBody

from adapters.feishu import uploads
from adapters.feishu.buttons import BUTTONS_ELEMENT, rating_row, stop_row
from adapters.feishu.rest import FeishuApiError, FeishuRateLimited, FeishuRest, classify
from adapters.feishu.settings import FeishuSettings
from adapters.kit.longanswers import LongAnswers
from adapters.kit.replies import ReplyConfig, Spawn, StreamingReply, Surface

logger = logging.getLogger(__name__)

ANSWER_ELEMENT = "answer"
TYPING_EMOJI = "Typing"
MIN_PATCH_INTERVAL_S = 0.2  # Feishu allows 5 edits per second per message
MIN_STREAM_INTERVAL_S = 0.1  # and 10 per second per CardKit card
STREAMING_CLOSED_CODE = 300309
"""CardKit's answer to a streaming update after streaming mode ended (CardKit ends it by itself after a while)."""
SEQUENCE_TICKS_PER_S = 10
"""A reply pushes at most this many updates per second (MIN_STREAM_INTERVAL_S), so its sequence number never
runs ahead of this many ticks per second since the card was created (plus a few for progress and closing)."""
RESUME_SEQUENCE_MARGIN = 1000
"""Added on resume to cover those few and clock differences between processes (100 s at 10 ticks per second)."""
TYPING_SWEEP_MAX_WAIT_S = 5.0
"""How long looking for a dead process's "Typing" reaction may wait out rate limits (the answer is out by then)."""


def _summary(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line[:60]


@dataclass(frozen=True, slots=True)
class _SentCard:
    """The card message a reply shows its answer in."""

    message_id: str
    card_id: str | None
    created_at: float | None
    adopted: bool


def card_reference(content: str | None) -> str | None:
    """The CardKit card id a card message's content refers to (``{"type": "card", "data": {"card_id": …}}``)."""
    try:
        parsed = json.loads(content or "")
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "card" or not isinstance(parsed.get("data"), dict):
        return None
    card_id = parsed["data"].get("card_id")
    return str(card_id) if card_id else None


def card(text: str, *, streaming: bool = False, buttons: dict[str, Any] | None = None) -> dict[str, Any]:
    """A card (JSON 2.0) with one markdown element that holds the text, and a row of ``buttons`` under it."""
    config: dict[str, Any] = {"update_multi": True, "summary": {"content": _summary(text)}}
    if streaming:
        config["streaming_mode"] = True
    elements: list[dict[str, Any]] = [{"tag": "markdown", "element_id": ANSWER_ELEMENT, "content": text}]
    if buttons is not None:
        elements.append(buttons)
    return {"schema": "2.0", "config": config, "body": {"elements": elements}}


class FeishuCard(Surface):
    """The card a question's answer streams into, and the "Typing" reaction on the question."""

    classify = staticmethod(classify)
    """An Open API failure as the kit's outbound helper reads it (``adapters.feishu.rest.classify``)."""

    def __init__(self, rest: FeishuRest, message_id: str, *, settings: FeishuSettings, in_thread: bool) -> None:
        self._rest = rest
        self.message_id = message_id
        self._settings = settings
        self._in_thread = in_thread
        self.label = f"feishu {message_id}"
        self.card_id: str | None = None
        self.card_message_id: str | None = None
        self.card_created_at: float | None = None
        self._sequence = 0
        self._reaction_id: str | None = None
        self._typing_added = False
        self._uuid_salt = ""
        self._check_card = False
        self._may_adopt = False
        """True for a reply resumed without a card: its first card goes out under the original key (see above)."""
        self._sweep_typing = False
        """True for a reply resumed from a state that names no reaction id: an earlier process may have left one."""
        self._final_salt: str | None = None
        """The idempotency salt of the final answer's cards (kept across a resume, see the module docstring)."""
        self._failed: bool | None = None
        """None while the answer streams; once the final text follows (``finishing``), whether it is an apology."""

    @property
    def min_interval_s(self) -> float:
        return MIN_STREAM_INTERVAL_S if self.card_id else MIN_PATCH_INTERVAL_S

    @property
    def has_placeholder(self) -> bool:
        return self.card_message_id is not None

    def state(self) -> dict[str, str]:
        """What another process needs to finish this reply: the question, the card, the sequence, the reaction and
        the idempotency salt of the final answer's cards."""
        state = {"message_id": self.message_id, "in_thread": "1" if self._in_thread else "0"}
        if self.card_message_id is not None:
            state["card_message_id"] = self.card_message_id
        if self.card_id is not None:
            state["card_id"] = self.card_id
            state["sequence"] = str(self._sequence)
        if self.card_created_at is not None:
            state["card_created_at"] = f"{self.card_created_at:.3f}"
        if self._typing_added:
            state["typing"] = "1"
            if self._reaction_id is not None:
                state["reaction_id"] = self._reaction_id
        state["final_salt"] = self._uuid_salt if self._final_salt is None else self._final_salt
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        """Continue the reply ``state`` describes (``state()`` of a reply in another process)."""
        # Messages sent from here on are new: the first process's idempotency keys must not swallow them.
        self._uuid_salt = uuid.uuid4().hex[:12]
        self.card_message_id = state.get("card_message_id") or None
        self.card_id = (state.get("card_id") or None) if self.card_message_id else None
        self._check_card = self.card_message_id is not None
        self._may_adopt = self.card_message_id is None
        self.card_created_at = _float(state.get("card_created_at"))
        if self.card_id is not None:
            self._sequence = resume_sequence(_int(state.get("sequence")), self.card_created_at)
        if state.get("typing") == "1":
            self._typing_added = True
            self._reaction_id = state.get("reaction_id") or None
        self._sweep_typing = not state.get("reaction_id")
        if state.get("parts_posted", "").isdigit():  # the final answer was being delivered: the same keys
            self._final_salt = state.get("final_salt", "")

    async def prepare(self) -> str | None:
        """Once, for a resumed reply: forget the card if its message was deleted, so a fresh one is sent."""
        if self._check_card and self.card_message_id is not None:
            self._check_card = False
            if await self._message_gone(self.card_message_id):
                logger.info(
                    "feishu: the card message %s for %s is gone; replying afresh", self.card_message_id, self.message_id
                )
                self.forget_placeholder()
        return None

    async def post_placeholder(self, text: str) -> None:
        """Reply with the card that will hold the answer: a CardKit streaming card, else a plain card."""
        if self._settings.streaming_cards:
            try:
                card_id = await self._rest.create_card(card(text, streaming=True, buttons=self._stop))
                created_at = time.time()
                content = json.dumps({"type": "card", "data": {"card_id": card_id}})
                sent = await self._send_first_card(content, purpose="streaming-card", created_card_id=card_id)
                self.card_message_id = sent.message_id
                self.card_id = sent.card_id
                self.card_created_at = sent.created_at if sent.adopted else created_at
                self._sequence = resume_sequence(0, sent.created_at) if sent.adopted else 0
                return
            except FeishuApiError as exc:
                logger.info("feishu: streaming card unavailable (%s); using an editable card", exc)
        content = json.dumps(card(text, buttons=self._stop), ensure_ascii=False)
        sent = await self._send_first_card(content, purpose="card", created_card_id=None)
        self.card_message_id = sent.message_id

    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        """Show ``text`` in the card (a CardKit update with the next sequence number, else a message patch).

        A patched card shows Stop while the answer streams and the ratings with the final text (a CardKit card
        swaps them in ``close``)."""
        if self.card_id is None:
            assert self.card_message_id is not None
            buttons = self._stop if self._failed is None else self._final_row()
            content = json.dumps(card(text, buttons=buttons), ensure_ascii=False)
            await self._rest.patch_message(self.card_message_id, content, max_wait_s=max_wait_s)
            return
        self._sequence += 1
        try:
            await self._rest.set_card_text(self.card_id, ANSWER_ELEMENT, text, self._sequence, max_wait_s=max_wait_s)
        except FeishuApiError as exc:
            if exc.code != STREAMING_CLOSED_CODE:
                raise
            # Streaming ended by itself (a long answer, or a restart in between): turn it on again.
            logger.info("feishu: streaming on card %s had ended; resuming it", self.card_id)
            self._sequence += 1
            await self._rest.set_card_settings(self.card_id, {"config": {"streaming_mode": True}}, self._sequence)
            self._sequence += 1
            await self._rest.set_card_text(self.card_id, ANSWER_ELEMENT, text, self._sequence, max_wait_s=max_wait_s)

    def forget_placeholder(self) -> None:
        self.card_message_id = self.card_id = None

    async def post_part(self, text: str, index: int) -> None:
        """A card of its own, under a key that is the same in a reply resumed mid-way (see the module docstring)."""
        if self._final_salt is None:
            self._final_salt = self._uuid_salt
        key = hashlib.sha1(f"{self.message_id}:final-{index}{self._final_salt}".encode()).hexdigest()[:32]
        buttons = self._final_row() if index == 0 else None
        await self._rest.reply(
            self.message_id,
            msg_type="interactive",
            content=json.dumps(card(text, buttons=buttons), ensure_ascii=False),
            in_thread=self._in_thread,
            uuid=key,
        )

    @property
    def posts_files(self) -> bool:
        return True

    async def upload_file(self, name: str, data: bytes) -> str:
        """``adapters.feishu.uploads``: a ``file_key`` no chat shows yet."""
        return await uploads.upload(self._rest, name, data)

    async def share_file(self, file_id: str, name: str) -> None:
        """The file message under the question, sent once per ``file_key`` (so ``file_shown`` need not look)."""
        await uploads.share(self._rest, self.message_id, file_id, in_thread=self._in_thread)

    async def close(self, text: str) -> None:
        """End streaming mode and swap Stop for the ratings, in one call; the card's summary becomes the answer's
        first line. (A card in streaming mode cannot be changed by a button press, so this comes first.)"""
        if self.card_id is None:
            return
        self._sequence += 1
        settings = {"config": {"streaming_mode": False, "summary": {"content": _summary(text)}}}
        row = self._final_row(card_id=self.card_id, sequence=self._sequence)
        buttons = (
            {"action": "update_element", "params": {"element_id": BUTTONS_ELEMENT, "element": row}}
            if row is not None
            else {"action": "delete_elements", "params": {"element_ids": [BUTTONS_ELEMENT]}}
        )
        actions = [{"action": "partial_update_setting", "params": {"settings": settings}}, buttons]
        try:
            await self._rest.update_card(self.card_id, actions, self._sequence)
            return
        except FeishuApiError as exc:  # e.g. a card an earlier version drew without buttons
            logger.info("feishu: could not swap the buttons on card %s (%s); ending streaming only", self.card_id, exc)
        self._sequence += 1
        try:
            await self._rest.set_card_settings(self.card_id, settings, self._sequence)
        except FeishuApiError as exc:  # the card still shows the full text; Feishu ends streaming by itself
            logger.info("feishu: could not end streaming on card %s: %s", self.card_id, exc)

    def finishing(self, parts: int, *, failed: bool) -> None:
        """The final text follows: the ratings go under its first part (the answer's card), none under an apology."""
        self._failed = failed

    @property
    def _stop(self) -> dict[str, Any]:
        return stop_row(self.message_id, self.lang)

    def _final_row(self, *, card_id: str = "", sequence: int = 0) -> dict[str, Any] | None:
        if self._failed is not False:
            return None
        return rating_row(self.message_id, card_id=card_id, sequence=sequence, lang=self.lang)

    async def delete(self) -> None:
        """Recall the card (``DELETE /im/v1/messages/{id}``)."""
        assert self.card_message_id is not None
        await self._rest.delete_message(self.card_message_id)

    async def react(self) -> None:
        if self._typing_added:
            return
        self._typing_added = True
        try:
            self._reaction_id = await self._rest.add_reaction(self.message_id, TYPING_EMOJI)
        except FeishuApiError as exc:
            logger.info("feishu: no typing reaction on %s: %s", self.message_id, exc)

    async def unreact(self) -> None:
        reaction_id, self._reaction_id = self._reaction_id, None
        if reaction_id is not None:
            try:
                await self._rest.delete_reaction(self.message_id, reaction_id)
            except FeishuApiError as exc:
                logger.info("feishu: typing reaction on %s not removed: %s", self.message_id, exc)
        if self._sweep_typing:
            self._sweep_typing = False
            await self._remove_unrecorded_typing()

    async def _message_gone(self, message_id: str) -> bool:
        """True when Feishu says the message was deleted; no answer about it counts as still there."""
        try:
            found = await self._rest.get_message(message_id, max_wait_s=self._settings.update_interval_s)
        except FeishuApiError as exc:
            unsure = isinstance(exc, FeishuRateLimited) or exc.code is None or (exc.status or 0) >= 500
            if unsure:
                logger.info("feishu: could not check card message %s: %s", message_id, exc)
                return False
            return True
        return found is None or bool(found.deleted)

    async def _remove_unrecorded_typing(self) -> None:
        """Remove the "Typing" reactions this app added to the question that no state recorded (see above)."""
        app_id = self._settings.app_id
        if not app_id:
            return
        try:
            reactions = await self._rest.list_reactions(
                self.message_id, TYPING_EMOJI, max_wait_s=TYPING_SWEEP_MAX_WAIT_S
            )
        except FeishuApiError as exc:
            logger.info("feishu: could not look for a leftover typing reaction on %s: %s", self.message_id, exc)
            return
        for reaction in reactions:
            operator, emoji = reaction.operator, reaction.reaction_type
            ours = (
                operator is not None
                and operator.operator_type == "app"
                and operator.operator_id == app_id
                and emoji is not None
                and emoji.emoji_type == TYPING_EMOJI
            )
            if not ours or not reaction.reaction_id:
                continue
            try:
                await self._rest.delete_reaction(self.message_id, reaction.reaction_id)
            except FeishuApiError as exc:
                logger.info("feishu: leftover typing reaction on %s not removed: %s", self.message_id, exc)
                continue
            logger.info("feishu: removed a typing reaction an earlier process left on %s", self.message_id)

    def _uuid(self, purpose: str, *, salted: bool = True) -> str:
        """An idempotency key: Feishu sends a reply with the same uuid only once. Unsalted, it is the key the
        question's first process used for the same purpose."""
        salt = self._uuid_salt if salted else ""
        return hashlib.sha1(f"{self.message_id}:{purpose}{salt}".encode()).hexdigest()[:32]

    async def _send_first_card(self, content: str, *, purpose: str, created_card_id: str | None) -> _SentCard:
        """Reply with the card message; a reply resumed without a card adopts the one its question got earlier.

        ``created_card_id`` is the CardKit card ``content`` refers to (None for an editable card).
        """
        if self._may_adopt:
            self._may_adopt = False
            sent = await self._rest.reply_message(
                self.message_id,
                msg_type="interactive",
                content=content,
                in_thread=self._in_thread,
                uuid=self._uuid(purpose, salted=False),
            )
            adopted = await self._adoptable(sent, created_card_id)
            if adopted is not None:
                return adopted
        message_id = await self._rest.reply(
            self.message_id,
            msg_type="interactive",
            content=content,
            in_thread=self._in_thread,
            uuid=self._uuid(purpose),
        )
        return _SentCard(message_id, created_card_id, None, adopted=False)

    async def _adoptable(self, sent: ReplyMessageResponseBody, created_card_id: str | None) -> _SentCard | None:
        """What the reply under the original key gave: a new message, an earlier card to adopt, or None when the
        earlier message is gone or unusable (the caller then replies afresh)."""
        message_id = str(sent.message_id)
        card_id: str | None = None
        if created_card_id is not None:
            card_id = card_reference(sent.body.content if sent.body is not None else None)
            if card_id is None:
                try:
                    card_id = await self._rest.card_id_of(message_id)
                except FeishuApiError as exc:
                    logger.info("feishu: could not tell which card message %s shows: %s", message_id, exc)
            if card_id == created_card_id:
                return _SentCard(message_id, card_id, None, adopted=False)  # nothing earlier: a new message
            if card_id is None:
                logger.warning(
                    "feishu: the earlier card message %s for %s cannot be streamed into; replying afresh",
                    message_id,
                    self.message_id,
                )
                return None
        if sent.deleted or await self._message_gone(message_id):
            logger.info(
                "feishu: the earlier card message %s for %s is gone; replying afresh", message_id, self.message_id
            )
            return None
        logger.info("feishu: adopted card message %s for %s from an earlier process", message_id, self.message_id)
        return _SentCard(message_id, card_id, _created_at(sent.create_time), adopted=True)


class FeishuReply(StreamingReply):
    """The reply handle for one question (``ReplyHandle`` of ``bot.types``): a ``FeishuCard``."""

    def __init__(
        self,
        rest: FeishuRest,
        message_id: str,
        *,
        settings: FeishuSettings,
        in_thread: bool,
        spawn: Spawn,
        long_answers: LongAnswers | None = None,
    ) -> None:
        self.card = FeishuCard(rest, message_id, settings=settings, in_thread=in_thread)
        config = ReplyConfig(
            update_interval_s=settings.update_interval_s,
            first_words_after_s=settings.first_words_after_s,
            max_chars=settings.max_reply_chars,
            long_answers=long_answers or LongAnswers(),
        )
        super().__init__(self.card, config, spawn=spawn)

    @classmethod
    def resumed(
        cls,
        rest: FeishuRest,
        message_id: str,
        state: Mapping[str, str],
        *,
        settings: FeishuSettings,
        in_thread: bool,
        spawn: Spawn,
        long_answers: LongAnswers | None = None,
    ) -> Self:
        """A handle that continues the reply ``state`` describes (from ``resume_state()`` in another process)."""
        reply = cls(
            rest,
            state.get("message_id") or message_id,
            settings=settings,
            in_thread=in_thread,
            spawn=spawn,
            long_answers=long_answers,
        )
        reply.restore(state)
        return reply


def resume_sequence(stored: int, card_created_at: float | None, now: float | None = None) -> int:
    """The sequence number a resumed reply continues from: above any the earlier process can have used.

    That process journaled ``stored`` early and kept pushing, at most ``SEQUENCE_TICKS_PER_S`` per second.
    """
    elapsed = 0.0
    if card_created_at is not None:
        elapsed = max((time.time() if now is None else now) - card_created_at, 0.0)
    return max(stored, int(elapsed * SEQUENCE_TICKS_PER_S)) + RESUME_SEQUENCE_MARGIN


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


def _created_at(create_time: object) -> float | None:
    """A message's ``create_time`` (milliseconds since the epoch) in seconds."""
    try:
        return int(str(create_time)) / 1000 if create_time not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
