"""Answers in Slack: a reaction and a placeholder at once, throttled edits while the answer streams, the final
text split to fit, errors in place of the placeholder. Rate limits (429) are waited out; nothing is dropped.

Adopting a placeholder. The core posts the placeholder and only then journals where it is, so a process killed
in between leaves a placeholder no journal entry names. Every placeholder therefore carries message metadata
(``event_type`` ``peekbot_reply``, payload: channel and question ts), which identifies its question uniquely.
Posting metadata needs no scope beyond ``chat:write``, and ``chat.update`` without ``metadata`` keeps it. A reply
resumed without a placeholder looks once, before it posts anything, at the thread after the question
(``conversations.replies`` with ``oldest`` = the question's ts, ``include_all_metadata``, one bounded page) and
keeps editing the bot's own message whose metadata names this question. Slack's documentation ties reading
metadata to the ``metadata.message:read`` scope for events and does not promise it in every history answer, and a
placeholder posted by an older version has none; so when no tagged message matches, the bot's own first message
right after the question (no one else spoke in between) is adopted if it still shows placeholder text and carries
no metadata naming another question. The bot's answers to other questions are never taken: their metadata names
those questions, and a finished answer no longer shows placeholder text.

Long answers, once. The final text is split over several messages; after each one (but the last) the reply tells
the core (``bind_journal``'s checkpoint), which journals ``resume_state()`` with ``parts_posted``. A reply restored
from such a state skips the parts already out. The message that was being posted when the process died is found
by its metadata (``event_type`` ``peekbot_reply_part``: the question and the part's number), with one look at the
thread, so it is not posted twice. The core hands the same final text to the restored reply (it journals it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

logger = logging.getLogger(__name__)

LOOKING = "Looking at it…"
ELLIPSIS = "\u2026"  # ends a streamed answer cut at the message limit
FENCE = "```"

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]

PLACEHOLDER_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
"""chat.update errors that mean the placeholder can no longer be edited: post a fresh message instead."""

REPLY_EVENT_TYPE = "peekbot_reply"
"""The metadata ``event_type`` of a reply's first message (the placeholder): its payload names the question."""
REPLY_PART_EVENT_TYPE = "peekbot_reply_part"
"""The metadata ``event_type`` of the further messages of a long answer: the question and the part's number."""
ADOPT_LOOKUP_LIMIT = 50
"""How many thread messages after the question one look for an earlier placeholder reads."""
QUEUED_PREFIX = "Queued — "


def placeholder_text(queue_position: int | None) -> str:
    if not queue_position:
        return LOOKING
    noun = "question" if queue_position == 1 else "questions"
    return f"{QUEUED_PREFIX}{queue_position} {noun} ahead of yours."


def is_placeholder_text(text: str) -> bool:
    return text == LOOKING or text.startswith(QUEUED_PREFIX)


def reply_metadata(channel: str, question_ts: str) -> dict[str, Any]:
    """The metadata a reply's placeholder carries, so that a later process can find it."""
    return {"event_type": REPLY_EVENT_TYPE, "event_payload": {"channel": channel, "question_ts": question_ts}}


def _ts_key(ts: object) -> tuple[int, int]:
    seconds, _, fraction = str(ts).partition(".")
    try:
        return int(seconds), int(fraction.ljust(6, "0")[:6] or 0)
    except ValueError:
        return 0, 0


def find_own_placeholder(
    messages: Sequence[Mapping[str, Any]], *, channel: str, question_ts: str, bot_user_id: str, bot_id: str
) -> Mapping[str, Any] | None:
    """The bot's placeholder for the question at ``question_ts`` among a thread's ``messages``, if there is one.

    A message whose metadata names the question wins. Otherwise the bot's first message right after the question
    (nobody else posted in between) counts when it has no reply metadata and still shows placeholder text.
    """
    after = sorted(
        (m for m in messages if _ts_key(m.get("ts")) > _ts_key(question_ts)), key=lambda m: _ts_key(m.get("ts"))
    )

    def own(message: Mapping[str, Any]) -> bool:
        return bool(bot_id and message.get("bot_id") == bot_id) or bool(
            bot_user_id and message.get("user") == bot_user_id
        )

    untagged: Mapping[str, Any] | None = None
    right_after = True
    for message in after:
        if not own(message):
            right_after = False
            continue
        metadata = message.get("metadata")
        tagged = isinstance(metadata, Mapping) and metadata.get("event_type") == REPLY_EVENT_TYPE
        if tagged:
            payload = metadata.get("event_payload") or {}
            if (
                isinstance(payload, Mapping)
                and str(payload.get("question_ts", "")) == question_ts
                and str(payload.get("channel") or channel) == channel
            ):
                return message
        elif right_after and untagged is None and is_placeholder_text(str(message.get("text") or "")):
            untagged = message
        right_after = False  # only the bot's first message after the question may be adopted untagged
    return untagged


def posted_parts(
    messages: Sequence[Mapping[str, Any]], *, channel: str, question_ts: str, bot_user_id: str, bot_id: str
) -> set[int]:
    """The numbers of the answer parts (2nd message on) the bot posted for the question at ``question_ts``."""
    found: set[int] = set()
    for message in messages:
        if not (
            (bot_id and message.get("bot_id") == bot_id) or (bot_user_id and message.get("user") == bot_user_id)
        ):
            continue
        metadata = message.get("metadata")
        if not isinstance(metadata, Mapping) or metadata.get("event_type") != REPLY_PART_EVENT_TYPE:
            continue
        payload = metadata.get("event_payload") or {}
        if not isinstance(payload, Mapping) or str(payload.get("question_ts", "")) != question_ts:
            continue
        if str(payload.get("channel") or channel) != channel:
            continue
        try:
            found.add(int(str(payload.get("part"))))
        except ValueError:
            continue
    return found


def split_message(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, on paragraph, line or word boundaries.

    A code block cut in two is closed at the end of one piece and reopened at the start of the next.
    """
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    budget = max(limit - 2 * (len(FENCE) + 1), 16)  # room to close and reopen a code block
    pieces: list[str] = []
    reopen = False
    while text:
        if reopen:
            text = f"{FENCE}\n{text}"
        if len(text) <= limit:
            pieces.append(text)
            break
        cut = _cut_point(text, budget)
        piece, text = text[:cut].rstrip(), text[cut:].lstrip("\n")
        if text.startswith(" "):
            text = text[1:]
        reopen = piece.count(FENCE) % 2 == 1
        if reopen:
            piece = f"{piece}\n{FENCE}"
        pieces.append(piece)
    return [p for p in pieces if p.strip()]


def _cut_point(text: str, budget: int) -> int:
    floor = budget // 2
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, budget + 1)
        if at >= floor:
            return at
    return budget


def retry_after_s(error: SlackApiError, default: float = 1.0) -> float:
    headers = getattr(error.response, "headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else default
    except (TypeError, ValueError):
        return default


def is_rate_limited(error: SlackApiError) -> bool:
    return getattr(error.response, "status_code", None) == 429 or _error_code(error) == "ratelimited"


def _error_code(error: SlackApiError) -> str:
    try:
        return str(error.response.get("error", ""))
    except Exception:
        return ""


def placeholder_gone(error: SlackApiError) -> bool:
    return _error_code(error) in PLACEHOLDER_GONE


async def call_with_retry(
    call: Callable[..., Awaitable[AsyncSlackResponse]], /, *, what: str, retries: int, **kwargs: Any
) -> AsyncSlackResponse:
    """Call a Web API method; on 429 wait ``Retry-After`` and try again, on network errors back off."""
    attempt = 0
    while True:
        try:
            return await call(**kwargs)
        except SlackApiError as exc:
            if not is_rate_limited(exc) or attempt >= retries:
                raise
            delay = retry_after_s(exc)
            logger.info("slack %s rate limited; retrying in %.1f s", what, delay)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if attempt >= retries:
                raise
            delay = min(2.0**attempt, 30.0)
            logger.warning("slack %s failed (%s); retrying in %.1f s", what, exc, delay)
        attempt += 1
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    update_interval_s: float = 1.0
    max_chars: int = 3900
    reaction: str = "eyes"
    retries: int = 8


class AssistantStatus:
    """``assistant.threads.setStatus`` where Slack allows it; switched off after a scope error."""

    def __init__(self, web: AsyncWebClient) -> None:
        self._web = web
        self.enabled = True

    async def set(self, channel: str, thread_ts: str, status: str) -> None:
        if not self.enabled:
            return
        try:
            await self._web.assistant_threads_setStatus(channel_id=channel, thread_ts=thread_ts, status=status)
        except SlackApiError as exc:
            code = _error_code(exc)
            if code in ("missing_scope", "not_allowed_token_type", "invalid_auth", "unknown_method"):
                self.enabled = False
            logger.debug("assistant.threads.setStatus not available here: %s", code)
        except Exception as exc:
            logger.debug("assistant.threads.setStatus failed: %s", exc)


class ThreadReply:
    """The reply handle for one question: everything lands in the question's thread."""

    def __init__(
        self,
        web: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        question_ts: str,
        direct: bool,
        options: ReplyOptions,
        spawn: Spawn,
        assistant_status: AssistantStatus | None = None,
        bot_user_id: str = "",
        bot_id: str = "",
    ) -> None:
        self._web = web
        self.channel = channel
        self.thread_ts = thread_ts
        self._question_ts = question_ts
        self._direct = direct
        self._options = options
        self._spawn = spawn
        self._assistant_status = assistant_status
        self._bot_user_id = bot_user_id
        self._bot_id = bot_id
        self.placeholder_ts: str | None = None
        self._may_adopt = False
        """True for a reply resumed without a placeholder: look once for one an earlier process posted."""
        self._reacted = False
        self._reaction = options.reaction
        self._latest: str | None = None  # newest answer text from the core
        self._streamed: str | None = None  # the answer text the placeholder shows now
        self._shown: str | None = None  # what the placeholder message says
        self._next_edit_at = 0.0
        self._closed = False
        self._finished = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._posting: asyncio.Future[None] | None = None
        self._checkpoint: Callable[[], Awaitable[None]] | None = None
        self._may_edit: Callable[[], bool] = lambda: True
        self.parts_posted: int | None = None
        """Messages of the final answer already out (the placeholder's edit counts as the first); None before."""
        self._look_for_parts = False
        """True for a reply restored mid-way through a long answer: look once for the part being posted then."""

    # JournaledReply -------------------------------------------------------------------------------
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
        text = placeholder_text(queue_position)
        async with self._lock:
            adopted = await self._adopt_placeholder()
            if self.placeholder_ts is None:
                # The post runs to its end even if the question is cancelled meanwhile (a deleted question), so
                # that ``retract`` knows the placeholder it must remove.
                self._posting = asyncio.ensure_future(self._post_placeholder(text))
                await asyncio.gather(self._react(), self._set_status(), asyncio.shield(self._posting))
                return
            if adopted:
                await asyncio.gather(self._react(), self._set_status())
            if self._latest is None and self._shown != text:
                try:
                    await self._edit(text, retries=0)
                except SlackApiError as exc:
                    if not placeholder_gone(exc):
                        logger.info("could not show the progress: %s", _error_code(exc))
                        return
                    logger.info("the placeholder in %s is gone (%s); posting a new one", self.channel, _error_code(exc))
                    self.placeholder_ts = None
                    await self._post_placeholder(text)
                except Exception as exc:
                    logger.info("could not show the progress: %s", exc)

    async def update(self, text: str) -> None:
        """Never blocks: remembers the newest text; a background task edits at most once per interval."""
        if self._closed or not text.strip():
            return
        self._latest = text
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush_updates())
        else:
            self._wake.set()

    async def finish(self, text: str) -> None:
        await self._deliver_final(text)

    async def fail(self, text: str) -> None:
        await self._deliver_final(f":warning: {text}")

    # RetractableReply ----------------------------------------------------------------------------
    async def retract(self) -> None:
        """The question was deleted before it was answered: delete the placeholder (``chat.delete``, which
        ``chat:write`` allows for the bot's own messages) and the progress reaction; nothing more is posted."""
        self._finished = self._closed = True
        self._wake.set()
        pending = [f for f in (self._flusher, self._posting) if f is not None and not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._options.update_interval_s + 10)
        async with self._lock:
            await self._adopt_placeholder()  # resumed: the placeholder an earlier process posted
            ts, self.placeholder_ts = self.placeholder_ts, None
            if ts is not None:
                try:
                    await call_with_retry(
                        self._web.chat_delete, what="chat.delete", retries=self._options.retries,
                        channel=self.channel, ts=ts,
                    )
                    logger.info("removed the placeholder %s in %s: its question was deleted", ts, self.channel)
                except SlackApiError as exc:
                    if _error_code(exc) != "message_not_found":
                        logger.warning("could not remove the placeholder in %s: %s", self.channel, _error_code(exc))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("could not remove the placeholder in %s: %s", self.channel, exc)
        await self._unreact()

    # ResumableReply ------------------------------------------------------------------------------
    def resume_state(self) -> dict[str, str]:
        """Where this reply lives, its placeholder (once posted) and the progress reaction (once added)."""
        state = {
            "kind": "thread",
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "question_ts": self._question_ts,
            "direct": "1" if self._direct else "0",
        }
        if self.placeholder_ts is not None:
            state["placeholder_ts"] = self.placeholder_ts
        if self._reacted:
            state["reaction"] = self._reaction
        if self.parts_posted is not None:
            state["parts_posted"] = str(self.parts_posted)
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        """Continue a reply another process started: edit its placeholder, remove its reaction at the end.

        Without a placeholder in ``state`` the reply first looks for one the other process posted but had not
        journaled (see the module docstring) and posts a fresh one only when there is none.
        """
        self.placeholder_ts = state.get("placeholder_ts") or None
        self._may_adopt = self.placeholder_ts is None
        if state.get("reaction"):
            self._reaction = state["reaction"]
            self._reacted = True
        parts = state.get("parts_posted", "")
        if parts.isdigit():
            self.parts_posted = int(parts)
            self._look_for_parts = self.parts_posted > 0

    # internals -----------------------------------------------------------------------------------
    async def _adopt_placeholder(self) -> bool:
        """Once, for a reply resumed without a placeholder: take over the one an earlier process posted, if any.

        True when one was adopted. A failed look counts as none found (a fresh placeholder is posted).
        """
        if not self._may_adopt or self.placeholder_ts is not None:
            return False
        self._may_adopt = False
        try:
            response = await self._web.conversations_replies(
                channel=self.channel,
                ts=self.thread_ts,
                oldest=self._question_ts,
                inclusive=False,
                include_all_metadata=True,
                limit=ADOPT_LOOKUP_LIMIT,
            )
        except SlackApiError as exc:
            logger.info("could not look for an earlier placeholder in %s: %s", self.channel, _error_code(exc))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("could not look for an earlier placeholder in %s: %s", self.channel, exc)
            return False
        found = find_own_placeholder(
            response.get("messages") or [],
            channel=self.channel,
            question_ts=self._question_ts,
            bot_user_id=self._bot_user_id,
            bot_id=self._bot_id,
        )
        if found is None:
            return False
        self.placeholder_ts = str(found["ts"])
        self._shown = str(found.get("text") or "")
        logger.info("adopted the placeholder %s in %s posted by an earlier process", self.placeholder_ts,
                    self.channel)
        return True

    async def _react(self) -> None:
        if not self._reaction:
            return
        try:
            await self._web.reactions_add(channel=self.channel, timestamp=self._question_ts, name=self._reaction)
            self._reacted = True
        except SlackApiError as exc:
            if _error_code(exc) == "already_reacted":  # an earlier process reacted: ours to remove at the end
                self._reacted = True
                return
            logger.debug("reactions.add failed: %s", _error_code(exc))
        except Exception as exc:
            logger.debug("reactions.add failed: %s", exc)

    async def _unreact(self) -> None:
        if not self._reacted:
            return
        try:
            await self._web.reactions_remove(channel=self.channel, timestamp=self._question_ts, name=self._reaction)
        except Exception as exc:
            logger.debug("reactions.remove failed: %s", exc)

    async def _set_status(self) -> None:
        if self._direct and self._assistant_status is not None:
            await self._assistant_status.set(self.channel, self.thread_ts, "is looking at it…")

    async def _post_placeholder(self, text: str) -> None:
        try:
            # No waiting out a rate limit here: the core waits for this call; later edits post the message.
            self.placeholder_ts = await self._post(text, retries=0, first=True)
            self._shown = text
            self._next_edit_at = time.monotonic() + self._options.update_interval_s
        except Exception as exc:
            logger.warning("could not post the placeholder in %s: %s", self.channel, exc)

    async def _post(self, text: str, *, retries: int, first: bool = False, part: int | None = None) -> str:
        """Post ``text`` in the thread; the reply's ``first`` message (its placeholder) carries reply metadata, a
        further ``part`` of the answer its own (so a restarted process can tell it was posted)."""
        extra: dict[str, Any] = {}
        if first:
            extra["metadata"] = reply_metadata(self.channel, self._question_ts)
        elif part is not None:
            payload = {"channel": self.channel, "question_ts": self._question_ts, "part": str(part)}
            extra["metadata"] = {"event_type": REPLY_PART_EVENT_TYPE, "event_payload": payload}
        response = await call_with_retry(
            self._web.chat_postMessage,
            what="chat.postMessage",
            retries=retries,
            channel=self.channel,
            thread_ts=self.thread_ts,
            text=text,
            unfurl_links=False,
            unfurl_media=False,
            **extra,
        )
        return str(response["ts"])

    async def _edit(self, text: str, *, retries: int) -> None:
        """Show ``text`` in the placeholder (posting one first if there is none)."""
        await self._adopt_placeholder()
        if self.placeholder_ts is None:
            self.placeholder_ts = await self._post(text, retries=retries, first=True)
        else:
            await call_with_retry(
                self._web.chat_update,
                what="chat.update",
                retries=retries,
                channel=self.channel,
                ts=self.placeholder_ts,
                text=text,
            )
        self._shown = text
        self._next_edit_at = time.monotonic() + self._options.update_interval_s

    async def _flush_updates(self) -> None:
        while not self._closed and self._latest is not None and self._latest != self._streamed:
            delay = self._next_edit_at - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue  # re-check: closed, or still too early after a wake-up
            async with self._lock:
                if self._closed or not self._may_edit():
                    return  # not sure the question is still ours: the core's next update starts a new round
                source = self._latest
                try:
                    await self._edit(_streaming_view(source, self._options.max_chars), retries=0)
                    self._streamed = source
                except SlackApiError as exc:
                    if is_rate_limited(exc):
                        self._next_edit_at = time.monotonic() + retry_after_s(exc)
                        logger.info("chat.update rate limited; next edit in %.1f s", retry_after_s(exc))
                    elif placeholder_gone(exc) and self.placeholder_ts is not None:
                        logger.info("the placeholder in %s is gone (%s); posting a new one", self.channel,
                                    _error_code(exc))
                        self.placeholder_ts = None  # the next round posts a fresh message
                    else:
                        logger.warning("chat.update failed: %s", _error_code(exc))
                        return
                except Exception as exc:
                    logger.warning("chat.update failed: %s", exc)
                    return

    async def _deliver_final(self, text: str) -> None:
        if self._finished:
            return
        self._finished = self._closed = True
        self._wake.set()
        if self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._posting is not None and not self._posting.done():  # a placeholder on its way: edit that one
            await asyncio.wait({self._posting}, timeout=self._options.update_interval_s + 10)
        pieces = split_message(text, self._options.max_chars) or ["(no answer)"]
        async with self._lock:
            done = min(self.parts_posted or 0, len(pieces))
            if self._look_for_parts and done < len(pieces):
                done = await self._parts_out(done)
            if done == 0:
                delay = self._next_edit_at - time.monotonic()
                if delay > 0 and self.placeholder_ts is not None:
                    await asyncio.sleep(delay)
                await self._replace_placeholder(pieces[0])
                done = 1
                await self._part_done(done, len(pieces))
            for index in range(done, len(pieces)):
                await self._post(pieces[index], retries=self._options.retries, part=index)
                await self._part_done(index + 1, len(pieces))
        await self._unreact()

    async def _part_done(self, posted: int, total: int) -> None:
        """Note a part of the final answer as out; the core journals it unless it was the last one."""
        self.parts_posted = posted
        if posted < total and self._checkpoint is not None:
            await self._checkpoint()

    async def _parts_out(self, noted: int) -> int:
        """Once, for a reply restored mid-way through a long answer: how many parts are out, counting one the
        earlier process posted but had not journaled (found by its metadata)."""
        self._look_for_parts = False
        try:
            response = await self._web.conversations_replies(
                channel=self.channel,
                ts=self.thread_ts,
                oldest=self._question_ts,
                inclusive=False,
                include_all_metadata=True,
                limit=ADOPT_LOOKUP_LIMIT,
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("could not look for answer parts posted earlier in %s: %s", self.channel, exc)
            return noted
        found = posted_parts(
            response.get("messages") or [],
            channel=self.channel,
            question_ts=self._question_ts,
            bot_user_id=self._bot_user_id,
            bot_id=self._bot_id,
        )
        out = noted
        while out in found:
            out += 1
        if out > noted:
            logger.info("%d part(s) of the answer in %s were posted by an earlier process", out - noted, self.channel)
        return out

    async def _replace_placeholder(self, text: str) -> None:
        retries = self._options.retries
        await self._adopt_placeholder()
        if self.placeholder_ts is not None:
            try:
                await self._edit(text, retries=retries)
                return
            except SlackApiError as exc:
                if is_rate_limited(exc):
                    raise
                # The placeholder is gone (deleted, too old to edit): post the answer instead.
                logger.warning("chat.update of the placeholder failed (%s); posting a new message", _error_code(exc))
                self.placeholder_ts = None
        self.placeholder_ts = await self._post(text, retries=retries, first=True)
        self._shown = text


def _streaming_view(text: str, limit: int) -> str:
    """While streaming, a long answer shows its first part; the final text is split into messages."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


class EphemeralReply:
    """Answers a slash command so that only the person who typed it sees it."""

    def __init__(
        self,
        web: AsyncWebClient,
        session: aiohttp.ClientSession,
        *,
        channel: str,
        user_id: str,
        response_url: str | None,
        options: ReplyOptions,
    ) -> None:
        self._web = web
        self._session = session
        self._channel = channel
        self._user_id = user_id
        self._response_url = response_url
        self._options = options
        self._finished = False

    def resume_state(self) -> dict[str, str]:
        state = {"kind": "ephemeral", "channel": self._channel, "user_id": self._user_id}
        if self._response_url:
            state["response_url"] = self._response_url
        return state

    async def start_progress(self, queue_position: int | None = None) -> None:
        """A command is answered at once; nothing to show meanwhile."""

    async def update(self, text: str) -> None:
        """Ephemeral messages are not edited while the answer grows; the final text is sent once."""

    async def finish(self, text: str) -> None:
        await self._send(text)

    async def fail(self, text: str) -> None:
        await self._send(f":warning: {text}")

    async def _send(self, text: str) -> None:
        if self._finished:
            return
        self._finished = True
        for piece in split_message(text, self._options.max_chars) or ["(nothing to say)"]:
            if not await self._via_response_url(piece):
                await call_with_retry(
                    self._web.chat_postEphemeral,
                    what="chat.postEphemeral",
                    retries=self._options.retries,
                    channel=self._channel,
                    user=self._user_id,
                    text=piece,
                )

    async def _via_response_url(self, text: str) -> bool:
        if not self._response_url:
            return False
        body = {"response_type": "ephemeral", "text": text}
        try:
            async with self._session.post(self._response_url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status < 300:
                    return True
                logger.warning("response_url answered HTTP %d; using chat.postEphemeral", r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("response_url failed (%s); using chat.postEphemeral", exc)
        return False
