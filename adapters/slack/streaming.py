"""Slack's native streaming (``chat.startStream`` / ``appendStream`` / ``stopStream``) as a ``SlackThread``.

The reply's first message is a stream started at once in the question's thread (outside a DM Slack needs the
recipient: the asker and their team); while the model writes, each throttled edit appends what is new
(``markdown_text``, at most 12,000 characters a call); the final text ends the stream with ``chat.stopStream``,
which attaches the 👍/👎 buttons. The progress line ("Looking at it…", the queue position) goes to the status line
instead of the message, since a stream only grows. Further parts of a long answer are posted as today.

When the text shown can no longer grow into the new text (a long answer cut for the first message, or a reply
restored in another process, which does not know what the stream holds), the stream is stopped and the message
is edited with ``chat.update`` from then on: the same message, whatever happened.

Where Slack refuses the method (``not_allowed``, ``unknown_method``, a missing scope, …) the workspace is noted
(``NativeStreaming``) and the reply, and every later one there, uses the ``chat.update`` path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit.outbound import RetryPolicy
from adapters.kit.text import ELLIPSIS, is_looking, is_progress_text
from adapters.slack.buttons import stop_block
from adapters.slack.replies import NO_WAIT, SlackThread, error_code, web_call

logger = logging.getLogger(__name__)

MAX_STREAM_CHARS = 12_000
"""``markdown_text`` limit of one streaming call."""
REFUSALS = frozenset(
    {
        "not_allowed",
        "unknown_method",
        "missing_scope",
        "not_allowed_token_type",
        "method_deprecated",
        "feature_not_enabled",
        "team_access_not_granted",
        "access_denied",
    }
)
"""``chat.startStream`` errors that mean the workspace does not let the bot stream: use ``chat.update`` there."""
NOT_STREAMING = "message_not_in_streaming_state"


class NativeStreaming:
    """Whether to stream natively in a workspace: on unless turned off or a workspace refused the method once."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.chunks = True
        """False once Slack refused a ``blocks`` chunk (the Stop button) in ``chat.startStream``."""
        self._refused: dict[str, str] = {}

    def allowed(self, team: str) -> bool:
        return self.enabled and team not in self._refused

    def refuse(self, team: str, code: str) -> None:
        if team not in self._refused:
            logger.info("slack: workspace %s refused native streaming (%s); answers there use chat.update", team, code)
        self._refused[team] = code


class StreamingThread(SlackThread):
    """A reply in the question's thread that streams natively where it can (see the module docstring)."""

    def __init__(
        self,
        web: AsyncWebClient,
        *,
        native: NativeStreaming,
        team: str,
        recipient_user_id: str,
        recipient_team_id: str,
        **thread: Any,
    ) -> None:
        super().__init__(web, **thread)
        self._native = native
        self._team = team
        self._recipient = {"recipient_user_id": recipient_user_id, "recipient_team_id": recipient_team_id}
        self.streaming = False
        """True while the placeholder is an open native stream."""
        self._streamed: str | None = None
        """The text the stream shows; None when unknown (restored in another process)."""

    # state ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, str]:
        state = super().state()
        if self.placeholder_ts is not None:  # which path the message is on: an open native stream, or edits
            state["stream"] = "native" if self.streaming else "update"
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        super().restore(state)
        self.streaming = state.get("stream") == "native" and self.placeholder_ts is not None
        self._streamed = None

    async def prepare(self) -> str | None:
        adopted = await super().prepare()
        if adopted is not None and not adopted.strip():  # an earlier process's stream, not yet written to
            self.streaming, self._streamed = True, None
        return adopted

    def forget_placeholder(self) -> None:
        super().forget_placeholder()
        self.streaming, self._streamed = False, None

    # Surface -------------------------------------------------------------------------------------
    async def post_placeholder(self, text: str) -> None:
        if self._final is not None or not self._native.allowed(self._team):
            await super().post_placeholder(text)
            return
        try:
            response = await self._start()
        except SlackApiError as exc:
            code = error_code(exc)
            if code in REFUSALS:
                self._native.refuse(self._team, code)
            else:
                logger.info("%s: chat.startStream failed (%s); editing a message instead", self.label, code)
            await super().post_placeholder(text)
            return
        self.placeholder_ts = str(response["ts"])
        self.streaming, self._streamed = True, ""
        if not is_progress_text(text):  # the first text of an answer whose placeholder could not be posted
            await self.edit(text, max_wait_s=0.0)
        elif not is_looking(text):  # the queue position; "looking at it" is the reaction's status already
            await self.show_status(text)

    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        if not self.streaming:
            await super().edit(text, max_wait_s=max_wait_s)
            return
        if is_progress_text(text):
            if not is_looking(text):
                await self.show_status(text)
            return
        shown = self._streamed
        # Hold back what the final text may lose (it is stripped) and a cut view's ellipsis: the stream only grows.
        wanted = text if self._final is not None else text.removesuffix(ELLIPSIS).strip()
        if shown is None or not wanted.startswith(shown):
            await self._switch_to_updates(text, max_wait_s=max_wait_s)
            return
        policy = self._policy.within(max_wait_s)
        try:
            for start in range(len(shown), len(wanted), MAX_STREAM_CHARS):
                piece = wanted[start : start + MAX_STREAM_CHARS]
                await self._append(piece, policy)
                self._streamed = (self._streamed or "") + piece
        except SlackApiError as exc:
            if error_code(exc) != NOT_STREAMING:
                raise
            await self._switch_to_updates(text, max_wait_s=max_wait_s)

    async def close(self, text: str) -> None:
        """End the stream (the final text is in it): 👍/👎 under it when it is the whole answer."""
        if not self.streaming:
            return
        self.streaming = False
        ratings = [b for b in self.blocks(text, 0) or [] if b.get("type") == "context_actions"]
        extra = {"blocks": ratings} if ratings else {}
        try:
            await self._stop(self._policy, **extra)
        finally:
            await self.show_status("")

    async def _start(self) -> Any:
        """``chat.startStream`` in the question's thread, the Stop button as its first chunk. A workspace that
        refuses the button's chunk streams without it."""
        recipient = {} if self._direct else self._recipient
        chunks = []
        if self.options.buttons and self.question_id and self._native.chunks:
            chunks = [{"type": "blocks", "blocks": [stop_block(self.question_id, self.lang)]}]
        call = self._web.chat_startStream
        base = {"what": "chat.startStream", "policy": NO_WAIT, "channel": self.channel, "thread_ts": self.thread_ts}
        try:
            return await web_call(call, **base, **recipient, **({"chunks": chunks} if chunks else {}))
        except SlackApiError as exc:
            if not chunks or not error_code(exc).startswith("invalid_"):
                raise
            logger.info("slack: chat.startStream refused the Stop button (%s); streaming without it", error_code(exc))
            self._native.chunks = False
            return await web_call(call, **base, **recipient)

    # internals -----------------------------------------------------------------------------------
    async def _stream_call(self, method: Any, what: str, policy: RetryPolicy, **extra: Any) -> None:
        """``chat.appendStream`` or ``chat.stopStream`` on this reply's stream."""
        await web_call(method, what=what, policy=policy, channel=self.channel, ts=self.placeholder_ts, **extra)

    async def _append(self, piece: str, policy: RetryPolicy) -> None:
        await self._stream_call(self._web.chat_appendStream, "chat.appendStream", policy, markdown_text=piece)

    async def _stop(self, policy: RetryPolicy, **extra: Any) -> None:
        await self._stream_call(self._web.chat_stopStream, "chat.stopStream", policy, **extra)

    async def _switch_to_updates(self, text: str, *, max_wait_s: float | None) -> None:
        """The stream cannot grow into ``text``: end it as it is and edit the message from now on."""
        self.streaming, self._streamed = False, None
        try:
            await self._stop(self._policy.within(max_wait_s))
        except SlackApiError as exc:
            if error_code(exc) != NOT_STREAMING:  # already ended (by an earlier process, or by Slack)
                raise
        logger.info("%s: the streamed message is edited with chat.update from now on", self.label)
        await super().edit(text, max_wait_s=max_wait_s)
