"""The streaming reply every platform shares; a platform supplies only its ``Surface`` (what a message is there).

``StreamingReply`` is the core's reply handle (``bot.types``: ``ReplyHandle``, ``ResumableReply``,
``JournaledReply``, ``RetractableReply``). It decides when the platform's messages change:

- ``start_progress`` posts the placeholder (``Looking at it…``, or the queue position) and the progress reaction at
  once; the post runs to its end even if the question is cancelled meanwhile, so ``retract`` can take it back.
- ``update`` never blocks: it keeps the newest text, and a background task edits the placeholder at most once per
  interval (the larger of ``ReplyConfig.update_interval_s`` and ``Surface.min_interval_s``), always with the newest
  text; only the answer's first words go sooner (``ReplyConfig.first_words_after_s`` after the placeholder), without
  moving the edits after them. A rate-limited edit waits what the platform asked (else a growing backoff); a
  placeholder that is gone is replaced by a new message at the next edit. While streaming, a long answer shows its
  first part.
- ``finish``/``fail`` settle the background edit, then put the final text in the placeholder, waiting out rate
  limits (an edit that fails for good posts the text as a new message). A long final text is split (code-fence
  aware) over several messages; after each part but the last the core's ``checkpoint`` journals
  ``resume_state()`` with ``parts_posted``, so a reply restored from it skips the parts already out.
- A final answer too long for a few messages (``adapters.kit.longanswers``) goes out as a file where the surface
  ``posts_files``: the file is uploaded (not shown yet) and its id journaled (``answer_file``), then the placeholder
  shows a short summary, then the file is shown in the thread. A reply restored with that id never uploads again;
  it asks the surface once whether the dead process had already shown the file (``file_shown``). A failed upload
  posts the answer in messages instead.
- ``retract`` (the question was deleted) removes the placeholder and the reaction; ``abandon`` (another process owns
  the question now) stops all edits and touches nothing.

``resume_state()`` is the surface's state (where the reply lives, its placeholder, its reaction) plus
``parts_posted``; ``restore`` hands such a state to a new reply in another process, which edits the same
placeholder. Before it first touches the chat, a reply calls ``Surface.prepare`` once: a restored surface looks
there for what an earlier process left (a placeholder it posted but had not journaled, or one that was deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from adapters.kit.longanswers import ANSWER_FILE_NAME, LongAnswers, file_summary
from adapters.kit.outbound import Failure, Verdict
from adapters.kit.text import progress_text, split_text, streaming_view
from bot.i18n import say

__all__ = ["NO_ANSWER", "ReplyConfig", "Spawn", "StreamingReply", "Surface"]

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
"""Starts a background task the adapter owns (it cancels its tasks when it stops)."""

NO_ANSWER = say("answer.none")
"""What an empty final text shows."""
MAX_EDIT_BACKOFF_S = 10.0
"""The longest pause between streamed edits after failures."""
SETTLE_WAIT_S = 10.0
"""How long (beyond one interval) the final text or a retraction waits for a placeholder or an edit on its way."""


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    update_interval_s: float = 1.0
    """At most one edit per message in this many seconds while an answer streams."""
    first_words_after_s: float = 0.3
    """The answer's first words go this soon after the placeholder (or the last progress edit), not a whole
    interval later; every later edit keeps the interval (and a platform's own floor always holds)."""
    max_chars: int = 3900
    """The longest message; longer final texts are split, longer streamed texts cut."""
    long_answers: LongAnswers = field(default_factory=LongAnswers)
    """When a final answer goes out as a file instead (where the surface ``posts_files``)."""


class Surface(ABC):
    """How one reply looks on a platform: the messages it posts, edits and deletes. ``StreamingReply`` calls one
    method at a time and decides when; a method raises the platform's own errors, which ``classify`` reads.

    The optional steps (``prepare``, ``close``, ``finishing``, ``react``/``unreact``, ``parts_out``, ``restore``) do
    nothing by default; ``react``/``unreact`` must not raise (a missing reaction never holds up an answer).
    """

    label: str = "reply"
    """Names the reply in logs (platform and channel or message id; never message text)."""
    error_prefix: str = "⚠️ "
    """Put before the sentence ``fail`` shows."""
    lang: str = "en"
    """The language of the reply's own words (button labels; ``bot.i18n``), set by ``StreamingReply.speaking``."""

    @property
    def min_interval_s(self) -> float:
        """The platform's own floor for the time between two edits of this reply's message."""
        return 0.0

    @property
    @abstractmethod
    def has_placeholder(self) -> bool:
        """True once there is a message to edit."""

    @abstractmethod
    async def post_placeholder(self, text: str) -> None:
        """Post the reply's first message showing ``text``; it is the placeholder from then on."""

    @abstractmethod
    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        """Show ``text`` in the placeholder; rate limits wait at most ``max_wait_s`` in all (None: as long as the
        platform's final text may)."""

    @abstractmethod
    def forget_placeholder(self) -> None:
        """The placeholder is gone: the next post makes a new one."""

    @abstractmethod
    async def post_part(self, text: str, index: int) -> None:
        """Post part ``index`` of the final text as a new message, waiting out rate limits. Part 0 comes here only
        when there is no placeholder or it could not take the text."""

    @abstractmethod
    async def delete(self) -> None:
        """Remove the placeholder (the question was withdrawn)."""

    @abstractmethod
    def classify(self, error: BaseException) -> Verdict:
        """What a failed call of this surface means (rate limited, retryable, permanent, gone). A platform with one
        such function for all its calls binds it: ``classify = staticmethod(classify)``."""

    @abstractmethod
    def state(self) -> dict[str, str]:
        """Where the reply lives and what it posted, for another process (strings only, JSON-safe)."""

    def restore(self, state: Mapping[str, str]) -> None:  # noqa: B027 - optional step
        """Continue the reply ``state`` describes (from ``state()`` in another process)."""

    async def prepare(self) -> str | None:
        """Once, before the reply first touches the chat: a restored surface looks for what an earlier process
        left. Returns the text of a placeholder it adopted (then the reply reacts again), else None."""
        return None

    async def close(self, text: str) -> None:  # noqa: B027 - optional step
        """The placeholder shows the final text ``text`` (e.g. end a streaming mode)."""

    def finishing(self, parts: int, *, failed: bool) -> None:  # noqa: B027 - optional step
        """The final text follows, in ``parts`` messages (``failed``: an error sentence): the next ``edit`` of the
        placeholder and the ``post_part`` calls carry it, so the last part may take rating buttons."""

    async def react(self) -> None:  # noqa: B027 - optional step
        """Show that the question is being answered (a reaction, a status line)."""

    async def unreact(self) -> None:  # noqa: B027 - optional step
        """Take that sign away again."""

    @property
    def posts_files(self) -> bool:
        """True where the platform can post the final answer as a file (``upload_file``, ``share_file``)."""
        return False

    async def upload_file(self, name: str, data: bytes) -> str:
        """Upload a file without showing it yet; returns the platform's id of it."""
        raise NotImplementedError

    async def share_file(self, file_id: str, name: str) -> None:
        """Show the uploaded file in the reply's thread, below the placeholder."""
        raise NotImplementedError

    async def file_shown(self, file_id: str) -> bool:
        """For a reply restored with an uploaded file: whether an earlier process already showed it."""
        return False

    async def parts_out(self, noted: int) -> int:
        """For a reply restored with ``noted`` parts of its final text out: how many are out in fact (a part the
        earlier process posted but had not journaled counts)."""
        return noted


class StreamingReply:
    """The reply handle for one question on any platform (see the module docstring)."""

    def __init__(self, surface: Surface, config: ReplyConfig, *, spawn: Spawn) -> None:
        self.surface = surface
        self._config = config
        self._spawn = spawn
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._latest: str | None = None
        """The newest answer text from the core."""
        self._streamed: str | None = None
        """The answer text the placeholder shows now (before cutting it to the message size)."""
        self._shown: str | None = None
        """What the placeholder says."""
        self._next_edit_at = 0.0
        self._last_edit_at = 0.0
        self._penalty = 0.0
        self._closed = False
        self._finished = False
        self._prepared = False
        self._flusher: asyncio.Task[None] | None = None
        self._posting: asyncio.Future[None] | None = None
        self._checkpoint: Callable[[], Awaitable[None]] | None = None
        self._may_edit: Callable[[], bool] = lambda: True
        self.parts_posted: int | None = None
        """Messages of the final text already out (the placeholder's final edit counts as the first); None before."""
        self._look_for_parts = False
        """True for a reply restored mid-way through a long final text: ask the surface once what is out."""
        self.answer_file: str | None = None
        """The platform's id of the answer uploaded as a file (``adapters.kit.longanswers``); None before."""
        self.answer_file_shown = False
        self._look_for_file = False
        """True for a reply restored with an uploaded file: ask the surface once whether it is shown."""
        self.lang = "en"
        """The language of the reply's own sentences (progress line, queue position; ``bot.i18n``)."""

    def speaking(self, lang: str) -> Self:
        """This reply, saying its own sentences in ``lang`` (the adapter passes ``bot.i18n.lang_for(message)``)."""
        self.lang = self.surface.lang = lang
        return self

    @property
    def _interval(self) -> float:
        return max(self._config.update_interval_s, self.surface.min_interval_s)

    def _edited(self, *, first_words: bool = False) -> None:
        """The placeholder was just posted or edited: the next edit waits an interval. ``first_words`` sent early do
        not move the schedule: the edit after them goes when it would have gone without them."""
        now = time.monotonic()
        floor = max(self._config.first_words_after_s, self.surface.min_interval_s)
        self._last_edit_at = now
        self._next_edit_at = max(self._next_edit_at, now + floor) if first_words else now + self._interval

    def _edit_due_at(self) -> float:
        """When the next edit may go: an interval after the last one, but while no words of the answer are shown
        (and no rate limit holds edits back) ``first_words_after_s`` after it, so the first words are not held back."""
        if self._streamed is not None or self._penalty:
            return self._next_edit_at
        first = self._last_edit_at + max(self._config.first_words_after_s, self.surface.min_interval_s)
        return min(self._next_edit_at, first)

    # ResumableReply ------------------------------------------------------------------------------
    def resume_state(self) -> dict[str, str]:
        state = dict(self.surface.state())
        if self.parts_posted is not None:
            state["parts_posted"] = str(self.parts_posted)
        if self.answer_file is not None:
            state["answer_file"] = self.answer_file
            if self.answer_file_shown:
                state["answer_file_shown"] = "1"
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        """Continue the reply ``state`` describes (``resume_state()`` of a reply in another process)."""
        self.surface.restore(state)
        parts = state.get("parts_posted", "")
        if parts.isdigit():
            self.parts_posted = int(parts)
            self._look_for_parts = self.parts_posted > 0
        self.answer_file = state.get("answer_file") or None
        self.answer_file_shown = self.answer_file is not None and state.get("answer_file_shown") == "1"
        self._look_for_file = self.answer_file is not None and not self.answer_file_shown

    # JournaledReply ------------------------------------------------------------------------------
    def bind_journal(self, checkpoint: Callable[[], Awaitable[None]], may_edit: Callable[[], bool]) -> None:
        self._checkpoint = checkpoint
        self._may_edit = may_edit

    def abandon(self) -> None:
        """Another process answers this question now: no more edits, nothing removed or posted."""
        self._closed = self._finished = True
        self._wake.set()

    # ReplyHandle ---------------------------------------------------------------------------------
    async def start_progress(self, queue_position: int | None = None) -> None:
        if self._closed:
            return
        text = progress_text(queue_position, self.lang)
        async with self._lock:
            try:
                adopted = await self._prepare()
                if not self.surface.has_placeholder:
                    # The post runs to its end even if the question is cancelled meanwhile (it was withdrawn), so
                    # that ``retract`` knows the placeholder it must remove.
                    self._posting = asyncio.ensure_future(self._post_placeholder(text))
                    await asyncio.gather(self._react(), asyncio.shield(self._posting))
                    return
                if adopted:
                    await self._react()
                if self._latest is None and self._shown != text:
                    await self._show_progress(text)
            except Exception as exc:
                logger.warning("%s: could not show the progress: %s", self.surface.label, exc)

    async def update(self, text: str) -> None:
        """Never blocks: keeps the newest text; a background task edits at most once per interval."""
        if self._closed or not text.strip():
            return
        self._latest = text
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush())
        else:
            self._wake.set()

    async def finish(self, text: str) -> None:
        await self._deliver_final(text)

    async def fail(self, text: str) -> None:
        await self._deliver_final(self.surface.error_prefix + text, failed=True)

    # RetractableReply ----------------------------------------------------------------------------
    async def retract(self) -> None:
        """The question was withdrawn before it was answered: remove the placeholder and the reaction."""
        self._closed = self._finished = True
        self._wake.set()
        await self._settle()
        label = self.surface.label
        async with self._lock:
            await self._prepare()
            if self.surface.has_placeholder:
                try:
                    await self.surface.delete()
                    logger.info("%s: removed the placeholder: its question was withdrawn", label)
                except Exception as exc:
                    if self.surface.classify(exc).kind is not Failure.GONE:
                        logger.warning("%s: could not remove the placeholder: %s", label, exc)
                finally:
                    self.surface.forget_placeholder()
        await self._unreact()

    # internals -----------------------------------------------------------------------------------
    async def _prepare(self) -> bool:
        """Let a placeholder on its way arrive; the first time, let the surface look for an earlier one. True when
        the surface adopted one."""
        if self._posting is not None and not self._posting.done():
            await asyncio.wait({self._posting}, timeout=self._interval + SETTLE_WAIT_S)
        if self._prepared:
            return False
        self._prepared = True
        had = self.surface.has_placeholder
        adopted = await self.surface.prepare()
        if adopted is not None:
            self._shown = adopted
        elif had and not self.surface.has_placeholder:
            self._shown = None
        return adopted is not None

    async def _react(self) -> None:
        try:
            await self.surface.react()
        except Exception as exc:
            logger.info("%s: no progress reaction: %s", self.surface.label, exc)

    async def _unreact(self) -> None:
        try:
            await self.surface.unreact()
        except Exception as exc:
            logger.info("%s: progress reaction not removed: %s", self.surface.label, exc)

    async def _post_placeholder(self, text: str) -> None:
        try:
            await self.surface.post_placeholder(text)
        except Exception as exc:
            logger.warning("%s: could not post the placeholder: %s", self.surface.label, exc)
            return
        self._shown = text
        self._edited()

    async def _show_progress(self, text: str) -> None:
        try:
            await self._edit(text, max_wait_s=self._interval)
        except Exception as exc:
            if self.surface.classify(exc).kind is not Failure.GONE:
                raise
            logger.info("%s: the placeholder is gone; posting a new one", self.surface.label)
            self.surface.forget_placeholder()
            await self._post_placeholder(text)

    async def _edit(self, text: str, *, max_wait_s: float | None, answer: bool = False) -> None:
        """Edit the placeholder; ``answer``: with answer text (the first of it may go before the interval)."""
        early = answer and self._streamed is None and time.monotonic() < self._next_edit_at
        await self.surface.edit(text, max_wait_s=max_wait_s)
        self._shown = text
        self._edited(first_words=early)

    async def _flush(self) -> None:
        """Edit the placeholder at most once per interval, with the newest text, until it shows the newest text."""
        while not self._closed and self._latest is not None and self._latest != self._streamed:
            delay = self._edit_due_at() - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue  # re-check: closed, or still too early after a wake-up
            async with self._lock:
                if self._closed or not self._may_edit():
                    return  # not sure the question is still ours: the core's next update starts a new round
                source = self._latest
                view = streaming_view(source, self._config.max_chars)
                try:
                    await self._prepare()
                    if self.surface.has_placeholder:
                        await self._edit(view, max_wait_s=0.0, answer=True)
                    else:
                        await self.surface.post_placeholder(view)
                        self._shown = view
                        self._edited()
                    self._streamed = source
                    self._penalty = 0.0
                except Exception as exc:
                    self._edit_failed(self.surface.classify(exc), exc)

    def _edit_failed(self, verdict: Verdict, exc: Exception) -> None:
        label = self.surface.label
        if verdict.kind is Failure.GONE and self.surface.has_placeholder:
            logger.info("%s: the placeholder is gone; the next edit posts a new one", label)
            self.surface.forget_placeholder()
            self._shown = None
            return
        self._penalty = min(max(self._penalty * 2, self._interval * 2), MAX_EDIT_BACKOFF_S)
        pause = self._penalty
        if verdict.kind is Failure.RATE_LIMITED:
            if verdict.retry_after_s is not None:
                pause = max(verdict.retry_after_s, self._interval)
            logger.info("%s: edits rate limited; next edit in %.1f s", label, pause)
        else:
            logger.warning("%s: edit failed (%s); trying again in %.1f s", label, exc, pause)
        self._next_edit_at = time.monotonic() + pause

    async def _settle(self) -> None:
        """Let the background edit and a placeholder on its way end (the edit is cancelled if it takes too long)."""
        pending = [f for f in (self._flusher, self._posting) if f is not None and not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._interval + SETTLE_WAIT_S)
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def _deliver_final(self, text: str, *, failed: bool = False) -> None:
        if self._finished:
            logger.info("%s: the reply is closed; a second final text was dropped", self.surface.label)
            return
        self._finished = self._closed = True
        self._wake.set()
        try:
            await self._settle()
            pieces = split_text(text, self._config.max_chars) or [say("answer.none", self.lang)]
            as_file = not failed and self.surface.posts_files and self._config.long_answers.as_file(text, len(pieces))
            if self.parts_posted and self.answer_file is None:  # an earlier process began it in messages: go on
                as_file = False
            async with self._lock:
                await self._prepare()
                if as_file and await self._upload_answer(text):
                    pieces = split_text(file_summary(text, self._config.max_chars, self.lang), self._config.max_chars)
                else:
                    as_file = False
                self.surface.finishing(len(pieces), failed=failed)
                done = min(self.parts_posted or 0, len(pieces))
                if self._look_for_parts and done < len(pieces):
                    self._look_for_parts = False
                    done = await self.surface.parts_out(done)
                if done == 0:
                    await self._replace_placeholder(pieces[0])
                    done = 1
                    await self._part_done(done, len(pieces))
                for index in range(done, len(pieces)):
                    await self.surface.post_part(pieces[index], index)
                    await self._part_done(index + 1, len(pieces))
                if as_file:
                    await self._show_answer_file(text)
        finally:
            await self._unreact()

    async def _upload_answer(self, text: str) -> bool:
        """Upload the answer as a file (unless an earlier process did) and journal its id before anything shows
        it. False when the platform refused it: the answer then goes out in messages."""
        if self.answer_file is not None:
            return True
        try:
            self.answer_file = await self.surface.upload_file(ANSWER_FILE_NAME, text.encode("utf-8"))
        except Exception as exc:
            logger.warning(
                "%s: could not upload the answer as a file (%s); posting it in messages", self.surface.label, exc
            )
            return False
        if self._checkpoint is not None:
            await self._checkpoint()
        return True

    async def _show_answer_file(self, text: str) -> None:
        """Show the uploaded file below the summary, once: a restored reply first asks whether the dead process
        had shown it; an upload an earlier process made that can no longer be shown is made again."""
        assert self.answer_file is not None
        if self.answer_file_shown:
            return
        restored, self._look_for_file = self._look_for_file, False
        if restored and await self.surface.file_shown(self.answer_file):
            logger.info("%s: the answer's file was shown by an earlier process", self.surface.label)
        else:
            try:
                await self.surface.share_file(self.answer_file, ANSWER_FILE_NAME)
            except Exception as exc:
                if not restored or self.surface.classify(exc).kind is not Failure.PERMANENT:
                    raise
                logger.info("%s: the earlier upload cannot be shown (%s); uploading it again", self.surface.label, exc)
                self.answer_file = await self.surface.upload_file(ANSWER_FILE_NAME, text.encode("utf-8"))
                if self._checkpoint is not None:
                    await self._checkpoint()
                await self.surface.share_file(self.answer_file, ANSWER_FILE_NAME)
        self.answer_file_shown = True

    async def _replace_placeholder(self, text: str) -> None:
        """The final text's first part in the placeholder; in a new message when there is none or it cannot take
        it (gone, refused, rate limited past the wait). A network failure raises: the edit may have landed."""
        if self.surface.has_placeholder:
            delay = self._edit_due_at() - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._edit(text, max_wait_s=None, answer=True)
            except Exception as exc:
                verdict = self.surface.classify(exc)
                if verdict.kind is Failure.RETRYABLE:
                    raise
                logger.warning(
                    "%s: the final edit failed (%s: %s); posting the answer as a new message",
                    self.surface.label,
                    verdict.kind,
                    exc,
                )
            else:
                try:
                    await self.surface.close(text)
                except Exception as exc:  # the text is out; closing is cosmetic
                    logger.info("%s: could not close the placeholder: %s", self.surface.label, exc)
                return
        await self.surface.post_part(text, 0)

    async def _part_done(self, posted: int, total: int) -> None:
        """Note a part of the final text as out; the core journals it unless it was the last one."""
        self.parts_posted = posted
        if posted < total and self._checkpoint is not None:
            await self._checkpoint()
