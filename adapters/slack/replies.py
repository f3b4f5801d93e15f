"""Answers in Slack: the surface of the kit's streaming reply (``adapters.kit.replies``) in the question's thread,
and ephemeral answers to the slash command. Posting, editing and deleting go through ``web_call`` (the kit's
outbound helper: 429 ``Retry-After`` waited out, network errors retried); the kit decides when.

The progress sign is an :eyes: reaction on the question and, where the app has the agent features, Slack's
"is looking at it…" status. An error sentence starts with ``:warning:``. With answer buttons on, a message that
streams carries a Stop button and the last message of a final answer 👍/👎 (``SlackThread.blocks``); the text is
then in section blocks too, since a message with blocks shows only its blocks. Native streaming is
``adapters.slack.streaming``.

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
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.kit import outbound
from adapters.kit.longanswers import LongAnswers
from adapters.kit.outbound import Failure, RetryPolicy, Verdict
from adapters.kit.replies import ReplyConfig, Spawn, StreamingReply, Surface
from adapters.kit.text import is_progress_text, split_text
from adapters.slack.buttons import rating_block, stop_block, text_blocks
from bot.i18n import say

logger = logging.getLogger(__name__)

PLACEHOLDER_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
"""Web API errors that mean the placeholder can no longer be edited: post a fresh message instead."""
STATUS_UNAVAILABLE = frozenset({"missing_scope", "not_allowed_token_type", "invalid_auth", "unknown_method"})
"""``assistant.threads.setStatus`` errors that switch the status off for good."""

REPLY_EVENT_TYPE = "peekbot_reply"
"""The metadata ``event_type`` of a reply's first message (the placeholder): its payload names the question."""
REPLY_PART_EVENT_TYPE = "peekbot_reply_part"
"""The metadata ``event_type`` of the further messages of a long answer: the question and the part's number."""
ADOPT_LOOKUP_LIMIT = 50
"""How many thread messages after the question one look for an earlier placeholder reads."""
NO_WAIT = RetryPolicy(max_wait_s=0.0)


def reply_metadata(channel: str, question_ts: str) -> dict[str, Any]:
    """The metadata a reply's placeholder carries, so that a later process can find it."""
    return {"event_type": REPLY_EVENT_TYPE, "event_payload": {"channel": channel, "question_ts": question_ts}}


def _ts_key(ts: object) -> tuple[int, int]:
    seconds, _, fraction = str(ts).partition(".")
    try:
        return int(seconds), int(fraction.ljust(6, "0")[:6] or 0)
    except ValueError:
        return 0, 0


def _own(message: Mapping[str, Any], bot_user_id: str, bot_id: str) -> bool:
    return bool(bot_id and message.get("bot_id") == bot_id) or bool(bot_user_id and message.get("user") == bot_user_id)


def _payload(
    message: Mapping[str, Any], event_type: str, *, channel: str, question_ts: str
) -> Mapping[str, Any] | None:
    """The metadata payload of ``message`` when it is of ``event_type`` and names the question, else None."""
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != event_type:
        return None
    payload = metadata.get("event_payload") or {}
    if not isinstance(payload, Mapping) or str(payload.get("question_ts", "")) != question_ts:
        return None
    return payload if str(payload.get("channel") or channel) == channel else None


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
    untagged: Mapping[str, Any] | None = None
    right_after = True
    for message in after:
        if not _own(message, bot_user_id, bot_id):
            right_after = False
            continue
        if _payload(message, REPLY_EVENT_TYPE, channel=channel, question_ts=question_ts) is not None:
            return message
        metadata = message.get("metadata")
        tagged = isinstance(metadata, Mapping) and metadata.get("event_type") == REPLY_EVENT_TYPE
        text = str(message.get("text") or "")
        still_empty = not text.strip()  # a native stream started but not yet written to
        if not tagged and right_after and untagged is None and (is_progress_text(text) or still_empty):
            untagged = message
        right_after = False  # only the bot's first message after the question may be adopted untagged
    return untagged


def posted_parts(
    messages: Sequence[Mapping[str, Any]], *, channel: str, question_ts: str, bot_user_id: str, bot_id: str
) -> set[int]:
    """The numbers of the answer parts (2nd message on) the bot posted for the question at ``question_ts``."""
    found: set[int] = set()
    for message in messages:
        payload = _payload(message, REPLY_PART_EVENT_TYPE, channel=channel, question_ts=question_ts)
        if payload is None or not _own(message, bot_user_id, bot_id):
            continue
        part = str(payload.get("part"))
        if part.isdigit():
            found.add(int(part))
    return found


def error_code(error: SlackApiError) -> str:
    try:
        return str(error.response.get("error", ""))
    except Exception:
        return ""


def classify(error: BaseException) -> Verdict:
    """A Web API failure as the kit's outbound helper reads it."""
    if isinstance(error, SlackApiError):
        code = error_code(error)
        status = getattr(error.response, "status_code", None)
        if status == 429 or code == "ratelimited":
            headers = getattr(error.response, "headers", None)
            return Verdict(Failure.RATE_LIMITED, outbound.retry_after(headers, "Retry-After", default=1.0))
        if code in PLACEHOLDER_GONE:
            return Verdict(Failure.GONE)
        if isinstance(status, int) and status >= 500:
            return Verdict(Failure.RETRYABLE)
        return Verdict(Failure.PERMANENT)
    if isinstance(error, aiohttp.ClientError | TimeoutError):
        return Verdict(Failure.RETRYABLE)
    return Verdict(Failure.PERMANENT)


async def web_call(
    method: Callable[..., Awaitable[AsyncSlackResponse]], /, *, what: str, policy: RetryPolicy, **kwargs: Any
) -> AsyncSlackResponse:
    """Call a Web API method (``web.chat_update`` …) through the kit's outbound helper."""
    return await outbound.call(lambda: method(**kwargs), what=f"slack {what}", classify=classify, policy=policy)


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    update_interval_s: float = 1.0
    first_words_after_s: float = 0.3
    max_chars: int = 3900
    reaction: str = "eyes"
    retries: int = 8
    buttons: bool = False
    """Stop while the answer streams, 👍/👎 on the final answer (``adapters.slack.buttons``)."""
    long_answers: LongAnswers = field(default_factory=LongAnswers)
    """When the final answer goes out as a file (``adapters.slack.uploads``)."""

    @property
    def config(self) -> ReplyConfig:
        return ReplyConfig(
            update_interval_s=self.update_interval_s, first_words_after_s=self.first_words_after_s,
            max_chars=self.max_chars, long_answers=self.long_answers,
        )  # fmt: skip

    @property
    def policy(self) -> RetryPolicy:
        """How the final text and the further parts wait: ``retries`` retries of 429s and network errors."""
        return RetryPolicy(retries=self.retries, transient_attempts=self.retries + 1)


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
            code = error_code(exc)
            if code in STATUS_UNAVAILABLE:
                self.enabled = False
            logger.debug("assistant.threads.setStatus not available here: %s", code)
        except Exception as exc:
            logger.debug("assistant.threads.setStatus failed: %s", exc)


class SlackThread(Surface):
    """A reply in the question's thread: the placeholder carries reply metadata (see the module docstring)."""

    error_prefix = ":warning: "
    classify = staticmethod(classify)
    """A Web API failure as the kit's outbound helper reads it."""

    def __init__(
        self,
        web: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        question_ts: str,
        direct: bool,
        options: ReplyOptions,
        assistant_status: AssistantStatus | None = None,
        bot_user_id: str = "",
        bot_id: str = "",
        question_id: str = "",
    ) -> None:
        self._web = web
        self.channel = channel
        self.question_id = question_id
        """The question's ``IncomingMessage.message_id``: the buttons' values name it."""
        self._final: tuple[int, bool] | None = None
        """(parts, failed) once the final text is on its way (``finishing``)."""
        self.thread_ts = thread_ts
        self.question_ts = question_ts
        self._direct = direct
        self.options = options
        self._policy = options.policy
        self._assistant_status = assistant_status
        self._whose = {"channel": channel, "question_ts": question_ts, "bot_user_id": bot_user_id, "bot_id": bot_id}
        """Whose messages in the thread are this reply's (``find_own_placeholder``, ``posted_parts``)."""
        self.label = f"slack {channel}"
        self.placeholder_ts: str | None = None
        self._may_adopt = False
        """True for a reply resumed without a placeholder: look once for one an earlier process posted."""
        self._reaction = options.reaction
        self._reacted = False

    @property
    def has_placeholder(self) -> bool:
        return self.placeholder_ts is not None

    def state(self) -> dict[str, str]:
        """Where this reply lives, its placeholder (once posted) and the progress reaction (once added)."""
        state = {
            "kind": "thread",
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "question_ts": self.question_ts,
            "direct": "1" if self._direct else "0",
        }
        if self.placeholder_ts is not None:
            state["placeholder_ts"] = self.placeholder_ts
        if self._reacted:
            state["reaction"] = self._reaction
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        """Edit the placeholder ``state`` names and remove its reaction at the end. Without a placeholder there,
        ``prepare`` looks for one the earlier process posted but had not journaled."""
        self.placeholder_ts = state.get("placeholder_ts") or None
        self._may_adopt = self.placeholder_ts is None
        if state.get("reaction"):
            self._reaction = state["reaction"]
            self._reacted = True

    async def prepare(self) -> str | None:
        """Once, for a reply resumed without a placeholder: adopt the one an earlier process posted, if any. A
        failed look counts as none found (a fresh placeholder is posted)."""
        if not self._may_adopt or self.placeholder_ts is not None:
            return None
        self._may_adopt = False
        found = find_own_placeholder(await self._thread_after_question("an earlier placeholder"), **self._whose)
        if found is None:
            return None
        self.placeholder_ts = str(found["ts"])
        logger.info("adopted the placeholder %s in %s posted by an earlier process", self.placeholder_ts, self.channel)
        return str(found.get("text") or "")

    async def parts_out(self, noted: int) -> int:
        """How many parts of the answer are out, counting one the earlier process posted but had not journaled
        (found by its metadata)."""
        found = posted_parts(await self._thread_after_question("answer parts posted earlier"), **self._whose)
        out = noted
        while out in found:
            out += 1
        if out > noted:
            logger.info("%d part(s) of the answer in %s were posted by an earlier process", out - noted, self.channel)
        return out

    @property
    def posts_files(self) -> bool:
        return True

    async def upload_file(self, name: str, data: bytes) -> str:
        """``adapters.slack.uploads``: the file exists on Slack, shared nowhere yet."""
        from adapters.slack import uploads  # it uses this module's web_call

        return await uploads.upload(self._web, name, data, policy=self._policy)

    async def share_file(self, file_id: str, name: str) -> None:
        from adapters.slack import uploads

        await uploads.share(
            self._web, file_id, title=name, channel=self.channel, thread_ts=self.thread_ts, policy=self._policy
        )

    async def file_shown(self, file_id: str) -> bool:
        """Whether the thread after the question shows the file (shared by an earlier process)."""
        from adapters.slack import uploads

        return uploads.shown_in(await self._thread_after_question("the answer's file"), file_id)

    async def post_placeholder(self, text: str) -> None:
        # No waiting out a rate limit here: the core waits for this call; later edits post the message.
        self.placeholder_ts = await self._post(text, policy=NO_WAIT, first=True)

    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        blocks = self.blocks(text, 0)
        await web_call(
            self._web.chat_update,
            what="chat.update",
            policy=self._policy.within(max_wait_s),
            channel=self.channel,
            ts=self.placeholder_ts,
            text=text,
            **({} if blocks is None else {"blocks": blocks}),
        )

    def finishing(self, parts: int, *, failed: bool) -> None:
        self._final = (parts, failed)

    def blocks(self, text: str, index: int) -> list[dict[str, Any]] | None:
        """The blocks of message ``index`` of the reply showing ``text``: with a Stop button while the answer
        streams, 👍/👎 under the last part of a final answer, none (``[]`` removes the Stop button) on the other
        parts and on an error. None without buttons."""
        if not self.options.buttons or not self.question_id:
            return None
        if self._final is None:
            return [*text_blocks(text), stop_block(self.question_id, self.lang)]
        parts, failed = self._final
        if failed or index != parts - 1:
            return []
        return [*text_blocks(text), rating_block(self.question_id, self.lang)]

    async def show_status(self, text: str) -> None:
        """A status line in the question's thread ("looking at the screenshot…"): Slack's AI loading state, in DMs
        and (since March 2026, with ``chat:write``) in channel threads."""
        if self._assistant_status is not None:
            await self._assistant_status.set(self.channel, self.thread_ts, text)

    def forget_placeholder(self) -> None:
        self.placeholder_ts = None

    async def post_part(self, text: str, index: int) -> None:
        ts = await self._post(text, policy=self._policy, first=index == 0, part=index or None)
        if index == 0:
            self.placeholder_ts = ts

    async def delete(self) -> None:
        """``chat.delete``, which ``chat:write`` allows for the bot's own messages."""
        await web_call(
            self._web.chat_delete,
            what="chat.delete",
            policy=self._policy,
            channel=self.channel,
            ts=self.placeholder_ts,
        )

    async def react(self) -> None:
        await asyncio.gather(self._add_reaction(), self._set_status())

    async def unreact(self) -> None:
        if not self._reacted:
            return
        try:
            await self._web.reactions_remove(channel=self.channel, timestamp=self.question_ts, name=self._reaction)
        except Exception as exc:
            logger.debug("reactions.remove failed: %s", exc)

    async def _add_reaction(self) -> None:
        if not self._reaction:
            return
        try:
            await self._web.reactions_add(channel=self.channel, timestamp=self.question_ts, name=self._reaction)
            self._reacted = True
        except SlackApiError as exc:
            if error_code(exc) == "already_reacted":  # an earlier process reacted: ours to remove at the end
                self._reacted = True
                return
            logger.debug("reactions.add failed: %s", error_code(exc))
        except Exception as exc:
            logger.debug("reactions.add failed: %s", exc)

    async def _set_status(self) -> None:
        await self.show_status(say("slack.status_looking", self.lang))

    async def _thread_after_question(self, looking_for: str) -> Sequence[Mapping[str, Any]]:
        """One bounded page of the thread after the question, with metadata; empty when the look failed."""
        try:
            response = await self._web.conversations_replies(
                channel=self.channel,
                ts=self.thread_ts,
                oldest=self.question_ts,
                inclusive=False,
                include_all_metadata=True,
                limit=ADOPT_LOOKUP_LIMIT,
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("could not look for %s in %s: %s", looking_for, self.channel, exc)
            return []
        return response.get("messages") or []

    async def _post(self, text: str, *, policy: RetryPolicy, first: bool = False, part: int | None = None) -> str:
        """Post ``text`` in the thread; the reply's ``first`` message (its placeholder) carries reply metadata, a
        further ``part`` of the answer its own (so a restarted process can tell it was posted)."""
        extra: dict[str, Any] = {}
        if first:
            extra["metadata"] = reply_metadata(self.channel, self.question_ts)
        elif part is not None:
            payload = {"channel": self.channel, "question_ts": self.question_ts, "part": str(part)}
            extra["metadata"] = {"event_type": REPLY_PART_EVENT_TYPE, "event_payload": payload}
        blocks = self.blocks(text, part or 0)
        if blocks:
            extra["blocks"] = blocks
        response = await web_call(
            self._web.chat_postMessage,
            what="chat.postMessage",
            policy=policy,
            channel=self.channel,
            thread_ts=self.thread_ts,
            text=text,
            unfurl_links=False,
            unfurl_media=False,
            **extra,
        )
        return str(response["ts"])


class ThreadReply(StreamingReply):
    """The reply handle for one question: everything lands in the question's thread (``SlackThread``)."""

    def __init__(self, thread: SlackThread, *, spawn: Spawn) -> None:
        super().__init__(thread, thread.options.config, spawn=spawn)
        self.thread = thread

    @property
    def channel(self) -> str:
        return self.thread.channel

    @property
    def thread_ts(self) -> str:
        return self.thread.thread_ts

    async def status(self, text: str) -> None:
        """``bot.types.ShowsStatus``: a short status line while the answer is prepared."""
        if not self._finished:
            await self.thread.show_status(text)


@dataclass(eq=False, repr=False)  # no repr: response_url lets anyone who has it post in the channel
class EphemeralReply:
    """Answers a slash command so that only the person who typed it sees it (through ``response_url`` when Slack
    gave one, else ``chat.postEphemeral``)."""

    web: AsyncWebClient
    session: aiohttp.ClientSession
    _: KW_ONLY
    channel: str
    user_id: str
    response_url: str | None
    options: ReplyOptions
    _finished: bool = field(default=False, init=False)

    def resume_state(self) -> dict[str, str]:
        state = {"kind": "ephemeral", "channel": self.channel, "user_id": self.user_id}
        if self.response_url:
            state["response_url"] = self.response_url
        return state

    async def start_progress(self, queue_position: int | None = None) -> None:
        """A command is answered at once; nothing to show meanwhile."""

    async def update(self, text: str) -> None:
        """Ephemeral messages are not edited while the answer grows; the final text is sent once."""

    async def finish(self, text: str) -> None:
        await self._send(text)

    async def fail(self, text: str) -> None:
        await self._send(f"{SlackThread.error_prefix}{text}")

    async def _send(self, text: str) -> None:
        if self._finished:
            return
        self._finished = True
        for piece in split_text(text, self.options.max_chars) or ["(nothing to say)"]:
            if not await self._via_response_url(piece):
                await web_call(
                    self.web.chat_postEphemeral,
                    what="chat.postEphemeral",
                    policy=self.options.policy,
                    channel=self.channel,
                    user=self.user_id,
                    text=piece,
                )

    async def _via_response_url(self, text: str) -> bool:
        if not self.response_url:
            return False
        body = {"response_type": "ephemeral", "text": text}
        try:
            async with self.session.post(self.response_url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status < 300:
                    return True
                logger.warning("response_url answered HTTP %d; using chat.postEphemeral", r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("response_url failed (%s); using chat.postEphemeral", exc)
        return False
