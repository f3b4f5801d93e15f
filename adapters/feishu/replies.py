"""How an answer looks in Feishu: a "Typing" reaction, then one card that streams the answer.

The card is a CardKit streaming card (``POST /cardkit/v1/cards``, ``PUT …/elements/{id}/content`` with an
increasing ``sequence``, ``PATCH …/settings`` to close it). Where CardKit is unavailable the reply is an
interactive card message edited with ``PATCH /im/v1/messages/{id}`` (at most 5 edits per second).
Edits are coalesced (the newest text wins) and never block the caller; the final text always lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from adapters.feishu.rest import FeishuApiError, FeishuRateLimited, FeishuRest
from bot.settings import FeishuSettings

logger = logging.getLogger(__name__)

ANSWER_ELEMENT = "answer"
TYPING_EMOJI = "Typing"
MIN_PATCH_INTERVAL_S = 0.2  # Feishu allows 5 edits per second per message
MIN_STREAM_INTERVAL_S = 0.1  # and 10 per second per CardKit card
MAX_UPDATE_BACKOFF_S = 10.0
ERROR_PREFIX = "⚠️ "

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
        self._closed = False

    @property
    def _interval(self) -> float:
        floor = MIN_STREAM_INTERVAL_S if self.card_id else MIN_PATCH_INTERVAL_S
        return max(self._settings.update_interval_s, floor)

    def _uuid(self, purpose: str) -> str:
        """An idempotency key: Feishu sends a reply with the same uuid only once."""
        return hashlib.sha1(f"{self.message_id}:{purpose}".encode()).hexdigest()[:32]

    # ReplyHandle ---------------------------------------------------------------------------------
    async def start_progress(self, queue_position: int | None = None) -> None:
        if self._closed:
            return
        text = progress_text(queue_position)
        try:
            if self.card_message_id is None:
                await asyncio.gather(self._add_typing(), self._open_card(text))
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

    # internals -----------------------------------------------------------------------------------
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
        if reaction_id is None:
            return
        try:
            await self._rest.delete_reaction(self.message_id, reaction_id)
        except FeishuApiError as exc:
            logger.info("feishu: typing reaction on %s not removed: %s", self.message_id, exc)

    async def _open_card(self, text: str) -> None:
        """Reply with the card that will hold the answer: a CardKit streaming card, else a plain card."""
        async with self._lock:
            if self.card_message_id is not None:
                return
            if self._settings.streaming_cards:
                try:
                    card_id = await self._rest.create_card(card(text, streaming=True))
                    content = json.dumps({"type": "card", "data": {"card_id": card_id}})
                    self.card_message_id = await self._rest.reply(
                        self.message_id,
                        msg_type="interactive",
                        content=content,
                        in_thread=self._in_thread,
                        uuid=self._uuid("streaming-card"),
                    )
                    self.card_id = card_id
                    self._shown = text
                    return
                except FeishuApiError as exc:
                    logger.info("feishu: streaming card unavailable (%s); using an editable card", exc)
            self.card_message_id = await self._reply_card(text, purpose="card")
            self._shown = text

    async def _reply_card(self, text: str, *, purpose: str) -> str:
        return await self._rest.reply(
            self.message_id,
            msg_type="interactive",
            content=json.dumps(card(text), ensure_ascii=False),
            in_thread=self._in_thread,
            uuid=self._uuid(purpose),
        )

    async def _push(self, text: str, *, max_wait_s: float | None = None) -> None:
        """Show ``text`` in the card; rate limits wait at most ``max_wait_s`` (None: the long default)."""
        async with self._lock:
            if self.card_id is not None:
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
            if self._closed or text is None or text == self._shown:
                return
            try:
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
            pieces = [text] if error else split_answer(text, self._settings.max_reply_chars)
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
                await self._reply_card(pieces[0], purpose="final-0")
            for index, piece in enumerate(pieces[1:], start=1):
                await self._reply_card(piece, purpose=f"final-{index}")
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
