"""The core's own types. Adapters translate platform events into these and back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Self, runtime_checkable


class ChatType(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a question lives: platform, workspace/tenant, channel/chat and thread root."""

    platform: str
    workspace: str
    channel: str
    thread: str | None = None

    def __str__(self) -> str:
        base = f"{self.platform}:{self.workspace}:{self.channel}"
        return f"{base}:{self.thread}" if self.thread else base


@dataclass(frozen=True, slots=True)
class User:
    platform: str
    user_id: str
    display_name: str = ""
    is_bot: bool = False
    org: str = ""
    """The sender's own workspace or tenant (Slack team id, Feishu tenant key). It differs from the conversation's
    workspace for a guest from another company (Slack Connect, Feishu external chats); empty when unknown."""

    @property
    def key(self) -> str:
        """``platform:user_id``, the form ``PEEKBOT_ADMINS`` uses."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file on the platform. ``source`` holds adapter-private details (URLs, message ids); a ``message_id`` there
    names the chat message the file came in, so a withdrawal of that message takes the file along."""

    platform: str
    file_id: str
    name: str = ""
    mime_type: str = ""
    size: int | None = None
    source: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.mime_type.startswith("image/")


@dataclass(frozen=True, slots=True)
class TextSegment:
    text: str


@dataclass(frozen=True, slots=True)
class ImageSegment:
    file: FileRef


@dataclass(frozen=True, slots=True)
class FileSegment:
    file: FileRef


@dataclass(frozen=True, slots=True)
class MentionSegment:
    user_id: str
    is_self: bool = False


Segment = TextSegment | ImageSegment | FileSegment | MentionSegment


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One user message addressed to the bot, already filtered and translated by an adapter.

    ``context_files`` are images/documents from earlier messages the question refers to
    (earlier posts in the thread, the message replied to). ``message_id`` identifies the chat message
    itself (Slack ``channel:ts``, Feishu ``om_…``); the core dedupes on it and on ``event_id``.
    """

    event_id: str
    message_id: str
    conversation: ConversationKey
    user: User
    chat_type: ChatType
    segments: tuple[Segment, ...]
    mentions_bot: bool = False
    context_files: tuple[FileRef, ...] = ()
    is_command: bool = False
    """True when the platform marked it as a command (Slack slash command): ``text`` is the command line."""
    received_at: float = field(default_factory=time.time)
    locale: str = ""
    """The author's language as the platform states it (``zh-CN``, ``en-US``); empty when the adapter does not
    know it. ``bot.i18n.lang_for`` picks the language of peekbot's own sentences from it or from the text."""

    @property
    def platform(self) -> str:
        return self.conversation.platform

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if isinstance(s, TextSegment) and s.text.strip())

    @property
    def files(self) -> tuple[FileRef, ...]:
        return tuple(s.file for s in self.segments if isinstance(s, ImageSegment | FileSegment))


@dataclass(frozen=True, slots=True)
class MessageWithdrawn:
    """A message or file its author deleted or recalled: peekbot does not answer it and forgets it.

    ``message_id`` has the form ``IncomingMessage.message_id`` has (empty when only files were deleted).
    ``conversation`` is where it was: the thread when the platform says, else its channel (``thread`` None), or
    None when the platform does not say (a file deleted everywhere). The files that go are those ``covers`` picks:
    the ``file_ids`` the platform named, and files whose ``source["message_id"]`` is ``message_id``.
    ``kind`` (``deleted``, ``recalled``, ``file_deleted``) is for the logs.
    """

    platform: str
    event_id: str
    message_id: str = ""
    conversation: ConversationKey | None = None
    file_ids: tuple[str, ...] = ()
    kind: str = "deleted"

    def covers(self, file: FileRef) -> bool:
        """True when ``file`` went with the withdrawn message (or is a withdrawn file)."""
        if file.platform != self.platform:
            return False
        if file.file_id in self.file_ids:
            return True
        return bool(self.message_id) and file.source.get("message_id") == self.message_id


class ReplyHandle(Protocol):
    """How the core answers one message. The adapter decides how it looks on its platform."""

    async def start_progress(self, queue_position: int | None = None) -> None:
        """Show at once that the question was seen (and its place in line when queued).

        The core calls it first with ``None`` as soon as the question is accepted, and again with the
        number of questions ahead once the engine queued it (only when that number is above 0).
        """

    async def update(self, text: str) -> None:
        """The answer so far (full text, not a delta). Adapters throttle edits."""

    async def finish(self, text: str) -> None:
        """The final answer."""

    async def fail(self, text: str) -> None:
        """Replace the progress indicator with an error sentence."""


@dataclass(frozen=True, slots=True)
class AdapterHealth:
    connected: bool
    connected_since: float | None = None
    reconnects: int = 0
    last_event_age_s: float | None = None
    last_pong_age_s: float | None = None
    detail: str = ""


MessageHandler = Callable[[IncomingMessage, ReplyHandle], Awaitable[bool]]
"""The core's callback. Returns quickly (never awaits the answer): True if accepted, False if a duplicate."""


@runtime_checkable
class Adapter(Protocol):
    name: str

    async def start(self, handler: MessageHandler) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> AdapterHealth: ...

    async def fetch(self, file: FileRef) -> bytes: ...

    async def reconnect(self) -> None:
        """Force a fresh connection (watchdog, admin command)."""


@runtime_checkable
class ResumableReplies(Protocol):
    """An adapter that can re-create the reply handle of a journaled message after a restart.

    ``state`` is what the earlier handle reported through ``resume_state()`` (e.g. the placeholder's id),
    possibly empty when the process died before the placeholder was posted. The new handle keeps editing
    the same placeholder when there is one, and otherwise replies where the original handle would have.
    """

    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> ReplyHandle: ...


@runtime_checkable
class ResumableReply(Protocol):
    """A reply handle that can say how to continue it in another process (strings only, JSON-safe)."""

    def resume_state(self) -> dict[str, str]: ...


@runtime_checkable
class JournaledReply(Protocol):
    """A resumable reply that helps the core deliver a long answer once, across restarts and take-overs.

    The core hands it two hooks before anything is shown. ``checkpoint()`` is awaited after each part of a final
    answer split over several messages was posted, except the last: the core journals ``resume_state()``, which
    notes the parts already out (a reply re-created from it skips them). It raises when another process owns the
    question now: post nothing more then. ``may_edit()`` is False while the core is not sure it still owns the
    question: background edits skip until the core passes new text. ``abandon()`` stops background edits for good
    and touches nothing: another process finishes the reply.
    """

    def bind_journal(self, checkpoint: Callable[[], Awaitable[None]], may_edit: Callable[[], bool]) -> None: ...

    def abandon(self) -> None: ...


@runtime_checkable
class ConversationDirectory(Protocol):
    """What the core knows about conversations, shared by every replica (it reads the state store)."""

    async def answered_before(self, conversation: ConversationKey) -> bool:
        """True when the bot answered in this conversation (thread) before, in this process or another."""


@runtime_checkable
class UsesConversationDirectory(Protocol):
    """An adapter that consults the core's conversation directory (e.g. to recognise follow-ups after a restart).

    The core hands it the directory before ``start``.
    """

    def use_conversation_directory(self, directory: ConversationDirectory) -> None: ...


WithdrawalHandler = Callable[[MessageWithdrawn], Awaitable[None]]
"""The core's callback for deleted or recalled messages. Raises when it could not record the withdrawal (the
adapter then leaves the event unacked, so the platform delivers it again)."""


@runtime_checkable
class ReportsWithdrawals(Protocol):
    """An adapter that tells the core when a message was deleted or recalled. The core hands it the callback
    before ``start``; the adapter calls it before acking the platform's event."""

    def use_withdrawal_handler(self, handler: WithdrawalHandler) -> None: ...


class AnswerActionKind(StrEnum):
    """What a user asked for with a button on one of the bot's answers."""

    HELPFUL = "helpful"
    NOT_HELPFUL = "not_helpful"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class AnswerAction:
    """A button pressed on one of the bot's answers: a rating of a final answer, or Stop while it streams.

    ``question_id`` is the ``message_id`` of the question the answer belongs to (the adapter put it in the button's
    value), so the core finds the job without trusting anything else in the payload. ``reason`` is the choice made
    after a "not helpful" rating ("wrong", "incomplete", "did not read the file", ...), empty otherwise.
    """

    platform: str
    question_id: str
    user: User
    kind: AnswerActionKind
    reason: str = ""
    conversation: ConversationKey | None = None


AnswerActionHandler = Callable[[AnswerAction], Awaitable[str]]
"""The core's callback for answer buttons. Returns the short sentence to show the presser (a toast or an ephemeral
message). Raises when it could not record the action (the adapter then answers with an error toast)."""


@runtime_checkable
class ReportsAnswerActions(Protocol):
    """An adapter whose answers carry buttons (ratings, Stop). The core hands it the callback before ``start``."""

    def use_answer_action_handler(self, handler: AnswerActionHandler) -> None: ...


@runtime_checkable
class ShowsStatus(Protocol):
    """A reply handle that can show a short status line while the answer is prepared ("looking at the
    screenshot…", "writing the answer…"). Optional and cosmetic: it never raises, and the answer replaces it."""

    async def status(self, text: str) -> None: ...


@runtime_checkable
class RetractableReply(Protocol):
    """A reply handle that can take back what it showed (the question was deleted before it was answered)."""

    async def retract(self) -> None:
        """Remove the placeholder (and any part of the answer) and the progress indicator; afterwards ``update``,
        ``finish`` and ``fail`` show nothing."""


class StartStop:
    """A base for parts with ``start()`` and ``stop()``: ``async with part:`` starts it and stops it on the way out,
    whatever happened inside."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class Service(Protocol):
    """A background part of the application (scheduler, HTTP server) with its own lifecycle."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
