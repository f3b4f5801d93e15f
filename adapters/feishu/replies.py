"""How an answer looks in Feishu: a "Typing" reaction, then one card that streams the answer.

The card is a CardKit streaming card (``POST /cardkit/v1/cards``, ``PUT …/elements/{id}/content`` with an
increasing ``sequence``, ``PATCH …/settings`` to close it). Where CardKit is unavailable the reply is an
interactive card message edited with ``PATCH /im/v1/messages/{id}`` (at most 5 edits per second).
Edits are coalesced (the newest text wins) and never block the caller; the final text always lands.

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

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Self

from lark_oapi.api.im.v1 import ReplyMessageResponseBody

from adapters.feishu.rest import FeishuApiError, FeishuRateLimited, FeishuRest
from bot.settings import FeishuSettings

logger = logging.getLogger(__name__)

ANSWER_ELEMENT = "answer"
TYPING_EMOJI = "Typing"
MIN_PATCH_INTERVAL_S = 0.2  # Feishu allows 5 edits per second per message
MIN_STREAM_INTERVAL_S = 0.1  # and 10 per second per CardKit card
MAX_UPDATE_BACKOFF_S = 10.0
ERROR_PREFIX = "⚠️ "
STREAMING_CLOSED_CODE = 300309
"""CardKit's answer to a streaming update after streaming mode ended (CardKit ends it by itself after a while)."""
SEQUENCE_TICKS_PER_S = 10
"""A reply pushes at most this many updates per second (MIN_STREAM_INTERVAL_S), so its sequence number never
runs ahead of this many ticks per second since the card was created (plus a few for progress and closing)."""
RESUME_SEQUENCE_MARGIN = 1000
"""Added on resume to cover those few and clock differences between processes (100 s at 10 ticks per second)."""
RETRACT_WAIT_S = 10.0
"""How long taking back a reply waits for a card (or an edit) already on its way."""
TYPING_SWEEP_MAX_WAIT_S = 5.0
"""How long looking for a dead process's "Typing" reaction may wait out rate limits (the answer is out by then)."""

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def progress_text(queue_position: int | None) -> str:
    if not queue_position:
        return "Looking at it…"
    noun = "question" if queue_position == 1 else "questions"
    return f"Queued — {queue_position} {noun} ahead of yours."


def split_answer(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at paragraph, line or word boundaries where possible."""
    limit = max(limit, 100)
    rest = text.strip()
    pieces: list[str] = []
    while len(rest) > limit:
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = rest.rfind(separator, 0, limit)
            if cut >= limit // 2:
                break
        if cut < limit // 2:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    pieces.append(rest)
    return [piece for piece in pieces if piece] or [text]


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


def card(text: str, *, streaming: bool = False) -> dict[str, Any]:
    """A card (JSON 2.0) with one markdown element that holds the text."""
    config: dict[str, Any] = {"update_multi": True, "summary": {"content": _summary(text)}}
    if streaming:
        config["streaming_mode"] = True
    return {
        "schema": "2.0",
        "config": config,
        "body": {"elements": [{"tag": "markdown", "element_id": ANSWER_ELEMENT, "content": text}]},
    }


class FeishuReply:
    """The reply handle for one question (``ReplyHandle`` of ``bot.types``)."""

    def __init__(
        self,
        rest: FeishuRest,
        message_id: str,
        *,
        settings: FeishuSettings,
        in_thread: bool,
        spawn: Spawn,
    ) -> None:
        self._rest = rest
        self.message_id = message_id
        self._settings = settings
        self._in_thread = in_thread
        self._spawn = spawn
        self._lock = asyncio.Lock()
        self.card_id: str | None = None
        self.card_message_id: str | None = None
        self._sequence = 0
        self._reaction_id: str | None = None
        self._typing_added = False
        self._latest: str | None = None
        self._shown: str | None = None
        self._answer_started = False
        self._next_push_at = 0.0
        self._penalty = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[None] | None = None
        self._closed = False
        self.card_created_at: float | None = None
        self._uuid_salt = ""
        self._check_card = False
        self._check_lock = asyncio.Lock()
        self._may_adopt = False
        """True for a reply resumed without a card: its first card goes out under the original key (see above)."""
        self._sweep_typing = False
        """True for a reply resumed from a state that names no reaction id: an earlier process may have left one."""
        self._checkpoint: Callable[[], Awaitable[None]] | None = None
        self._may_edit: Callable[[], bool] = lambda: True
        self.parts_posted: int | None = None
        """Cards of the final answer already out (the streamed card counts as the first); None before."""
        self._final_salt: str | None = None
        """The idempotency salt of the final answer's cards (kept across a resume, see the module docstring)."""

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
    ) -> Self:
        """A handle that continues the reply ``state`` describes (from ``resume_state()`` in another process)."""
        reply = cls(rest, state.get("message_id") or message_id, settings=settings, in_thread=in_thread, spawn=spawn)
        # Messages sent from here on are new: the first process's idempotency keys must not swallow them.
        reply._uuid_salt = uuid.uuid4().hex[:12]
        reply.card_message_id = state.get("card_message_id") or None
        reply.card_id = (state.get("card_id") or None) if reply.card_message_id else None
        reply._check_card = reply.card_message_id is not None
        reply._may_adopt = reply.card_message_id is None
        reply.card_created_at = _float(state.get("card_created_at"))
        if reply.card_id is not None:
            reply._sequence = resume_sequence(_int(state.get("sequence")), reply.card_created_at)
        if state.get("typing") == "1":
            reply._typing_added = True
            reply._reaction_id = state.get("reaction_id") or None
        reply._sweep_typing = not state.get("reaction_id")
        parts = state.get("parts_posted", "")
        if parts.isdigit():  # the final answer was being delivered: same text, same keys, skip what is out
            reply.parts_posted = int(parts)
            reply._final_salt = state.get("final_salt", "")
        return reply

    def resume_state(self) -> dict[str, str]:
        """What another process needs to finish this reply: the question, the card, the sequence, the reaction."""
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
        if self.parts_posted is not None:
            state["parts_posted"] = str(self.parts_posted)
            state["final_salt"] = self._final_salt or ""
        return state

    # JournaledReply -------------------------------------------------------------------------------
    def bind_journal(self, checkpoint: Callable[[], Awaitable[None]], may_edit: Callable[[], bool]) -> None:
        self._checkpoint = checkpoint
        self._may_edit = may_edit

    def abandon(self) -> None:
        """Another process answers this question now: no more edits, nothing removed or sent."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()

    @property
    def _interval(self) -> float:
        floor = MIN_STREAM_INTERVAL_S if self.card_id else MIN_PATCH_INTERVAL_S
        return max(self._settings.update_interval_s, floor)

    def _uuid(self, purpose: str, *, salted: bool = True) -> str:
        """An idempotency key: Feishu sends a reply with the same uuid only once. Unsalted, it is the key the
        question's first process used for the same purpose."""
        salt = self._uuid_salt if salted else ""
        return hashlib.sha1(f"{self.message_id}:{purpose}{salt}".encode()).hexdigest()[:32]

    # ReplyHandle ---------------------------------------------------------------------------------
    async def start_progress(self, queue_position: int | None = None) -> None:
        if self._closed:
            return
        text = progress_text(queue_position)
        try:
            await self._check_resumed_card()
            if self.card_message_id is None:
                # The card goes out even if the question is cancelled meanwhile (a recalled question), so that
                # ``retract`` knows the card it must recall.
                self._opening = asyncio.ensure_future(self._open_card(text))
                self._opening.add_done_callback(_retrieve)  # its error is reported below, or nowhere once cancelled
                await asyncio.gather(self._add_typing(), asyncio.shield(self._opening))
            elif not self._answer_started:
                await self._push(text, max_wait_s=self._settings.update_interval_s)
                self._shown = text
        except FeishuApiError as exc:
            logger.warning("feishu: could not show progress for %s: %s", self.message_id, exc)

    async def update(self, text: str) -> None:
        if self._closed:
            return
        self._latest = text
        self._answer_started = True
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush())

    async def finish(self, text: str) -> None:
        await self._close(text, error=False)

    async def fail(self, text: str) -> None:
        await self._close(ERROR_PREFIX + text, error=True)

    # RetractableReply ----------------------------------------------------------------------------
    async def retract(self) -> None:
        """The question was recalled before it was answered: recall the card (``DELETE /im/v1/messages/{id}``)
        and drop the "Typing" reaction; nothing more is sent."""
        self._closed = True
        pending = [f for f in (self._flusher, self._opening) if f is not None and not f.done()]
        if pending:  # let a card on its way arrive, so that it can be recalled
            await asyncio.wait(pending, timeout=RETRACT_WAIT_S)
        await self._stop_flusher()
        async with self._lock:
            card_message_id, self.card_message_id, self.card_id = self.card_message_id, None, None
        if card_message_id is not None:
            try:
                await self._rest.delete_message(card_message_id)
                logger.info("feishu: recalled the card %s: its question %s was recalled", card_message_id,
                            self.message_id)
            except FeishuApiError as exc:
                logger.warning("feishu: could not recall the card %s: %s", card_message_id, exc)
        await self._remove_typing()

    # internals -----------------------------------------------------------------------------------
    async def _check_resumed_card(self) -> None:
        """Once, for a resumed reply: forget the card if its message was deleted, so a fresh one is sent."""
        if not self._check_card:
            return
        async with self._check_lock:
            if not self._check_card or self.card_message_id is None:
                return
            self._check_card = False
            if not await self._message_gone(self.card_message_id):
                return
            logger.info("feishu: the card message %s for %s is gone; replying afresh", self.card_message_id,
                        self.message_id)
            self.card_message_id = self.card_id = None
            self._shown = None

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

    async def _add_typing(self) -> None:
        if self._typing_added:
            return
        self._typing_added = True
        try:
            self._reaction_id = await self._rest.add_reaction(self.message_id, TYPING_EMOJI)
        except FeishuApiError as exc:
            logger.info("feishu: no typing reaction on %s: %s", self.message_id, exc)

    async def _remove_typing(self) -> None:
        reaction_id, self._reaction_id = self._reaction_id, None
        if reaction_id is not None:
            try:
                await self._rest.delete_reaction(self.message_id, reaction_id)
            except FeishuApiError as exc:
                logger.info("feishu: typing reaction on %s not removed: %s", self.message_id, exc)
        if self._sweep_typing:
            self._sweep_typing = False
            await self._remove_unrecorded_typing()

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

    async def _open_card(self, text: str) -> None:
        """Reply with the card that will hold the answer: a CardKit streaming card, else a plain card."""
        async with self._lock:
            if self.card_message_id is not None:
                return
            if self._settings.streaming_cards:
                try:
                    card_id = await self._rest.create_card(card(text, streaming=True))
                    created_at = time.time()
                    content = json.dumps({"type": "card", "data": {"card_id": card_id}})
                    sent = await self._send_first_card(content, purpose="streaming-card", created_card_id=card_id)
                    self.card_message_id = sent.message_id
                    self.card_id = sent.card_id
                    if sent.adopted:
                        self.card_created_at = sent.created_at
                        self._sequence = resume_sequence(0, sent.created_at)
                    else:
                        self.card_created_at = created_at
                        self._sequence = 0
                    self._shown = text
                    return
                except FeishuApiError as exc:
                    logger.info("feishu: streaming card unavailable (%s); using an editable card", exc)
            content = json.dumps(card(text), ensure_ascii=False)
            sent = await self._send_first_card(content, purpose="card", created_card_id=None)
            self.card_message_id = sent.message_id
            self._shown = text

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
            self.message_id, msg_type="interactive", content=content, in_thread=self._in_thread,
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
                logger.warning("feishu: the earlier card message %s for %s cannot be streamed into; replying afresh",
                               message_id, self.message_id)
                return None
        if sent.deleted or await self._message_gone(message_id):
            logger.info("feishu: the earlier card message %s for %s is gone; replying afresh", message_id,
                        self.message_id)
            return None
        logger.info("feishu: adopted card message %s for %s from an earlier process", message_id, self.message_id)
        return _SentCard(message_id, card_id, _created_at(sent.create_time), adopted=True)

    async def _reply_card(self, text: str, *, purpose: str, key: str | None = None) -> str:
        return await self._rest.reply(
            self.message_id,
            msg_type="interactive",
            content=json.dumps(card(text), ensure_ascii=False),
            in_thread=self._in_thread,
            uuid=key or self._uuid(purpose),
        )

    def _final_key(self, index: int) -> str:
        """The idempotency key of the final answer's card ``index``: the same in a reply resumed mid-way."""
        salt = self._uuid_salt if self._final_salt is None else self._final_salt
        return hashlib.sha1(f"{self.message_id}:final-{index}{salt}".encode()).hexdigest()[:32]

    async def _part_done(self, posted: int, total: int) -> None:
        """Note a card of the final answer as out; the core journals it unless it was the last one."""
        self.parts_posted = posted
        if posted < total and self._checkpoint is not None:
            await self._checkpoint()

    async def _push(self, text: str, *, max_wait_s: float | None = None) -> None:
        """Show ``text`` in the card; rate limits wait at most ``max_wait_s`` (None: the long default)."""
        async with self._lock:
            if self.card_id is not None:
                self._sequence += 1
                try:
                    await self._rest.set_card_text(
                        self.card_id, ANSWER_ELEMENT, text, self._sequence, max_wait_s=max_wait_s
                    )
                except FeishuApiError as exc:
                    if exc.code != STREAMING_CLOSED_CODE:
                        raise
                    # Streaming ended by itself (a long answer, or a restart in between): turn it on again.
                    logger.info("feishu: streaming on card %s had ended; resuming it", self.card_id)
                    self._sequence += 1
                    streaming = {"config": {"streaming_mode": True}}
                    await self._rest.set_card_settings(self.card_id, streaming, self._sequence)
                    self._sequence += 1
                    await self._rest.set_card_text(
                        self.card_id, ANSWER_ELEMENT, text, self._sequence, max_wait_s=max_wait_s
                    )
            elif self.card_message_id is not None:
                content = json.dumps(card(text), ensure_ascii=False)
                await self._rest.patch_message(self.card_message_id, content, max_wait_s=max_wait_s)
            else:
                raise FeishuApiError("updating the reply", code=None, message="no card to update")

    async def _flush(self) -> None:
        """Push the newest text at most once per interval until nothing new is left."""
        while not self._closed:
            delay = self._next_push_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            text = self._latest
            if self._closed or text is None or text == self._shown or not self._may_edit():
                return  # (not sure the question is still ours: the core's next update starts a new round)
            try:
                await self._check_resumed_card()
                if self.card_message_id is None:
                    await self._open_card(text)
                else:
                    await self._push(text, max_wait_s=0.0)
                self._shown = text
                self._penalty = 0.0
            except FeishuRateLimited:
                self._penalty = min(max(self._penalty * 2, self._interval * 2), MAX_UPDATE_BACKOFF_S)
                logger.info("feishu: card edits rate limited; next edit in %.1f s", self._penalty)
            except FeishuApiError as exc:
                self._penalty = min(max(self._penalty * 2, self._interval * 2), MAX_UPDATE_BACKOFF_S)
                logger.warning("feishu: card edit failed (%s); trying again in %.1f s", exc, self._penalty)
            self._next_push_at = time.monotonic() + max(self._interval, self._penalty)

    async def _stop_flusher(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def _close(self, text: str, *, error: bool) -> None:
        if self._closed:
            logger.info("feishu: reply to %s already closed; extra text dropped", self.message_id)
            return
        self._closed = True
        try:
            await self._stop_flusher()
            if self._opening is not None and not self._opening.done():  # a card on its way: finish that one
                await asyncio.wait({self._opening}, timeout=RETRACT_WAIT_S)
            await self._check_resumed_card()
            pieces = [text] if error else split_answer(text, self._settings.max_reply_chars)
            if self._final_salt is None:
                self._final_salt = self._uuid_salt
            done = min(self.parts_posted or 0, len(pieces))
            if done == 0:
                delivered = False
                if self.card_message_id is not None:
                    try:
                        await self._push(pieces[0])
                        delivered = True
                    except FeishuApiError as exc:
                        logger.warning("feishu: final edit of the card failed (%s); sending a new message", exc)
                    if delivered and self.card_id is not None:
                        await self._end_streaming(pieces[0])
                if not delivered:
                    await self._reply_card(pieces[0], purpose="final-0", key=self._final_key(0))
                done = 1
                await self._part_done(done, len(pieces))
            for index in range(done, len(pieces)):
                await self._reply_card(pieces[index], purpose=f"final-{index}", key=self._final_key(index))
                await self._part_done(index + 1, len(pieces))
            self._shown = pieces[-1]
        finally:
            await self._remove_typing()

    async def _end_streaming(self, text: str) -> None:
        assert self.card_id is not None
        settings = {"config": {"streaming_mode": False, "summary": {"content": _summary(text)}}}
        async with self._lock:
            self._sequence += 1
            try:
                await self._rest.set_card_settings(self.card_id, settings, self._sequence)
            except FeishuApiError as exc:  # the card still shows the full text; Feishu ends streaming by itself
                logger.info("feishu: could not end streaming on card %s: %s", self.card_id, exc)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a background future's error as seen (whoever awaited it has reported it)."""
    if not future.cancelled():
        future.exception()


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
