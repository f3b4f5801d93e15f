"""The core's own types. Adapters translate platform events into these and back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


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

    @property
    def key(self) -> str:
        """``platform:user_id``, the form ``PEEKBOT_ADMINS`` uses."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file on the platform. ``source`` holds adapter-private details (URLs, message ids)."""

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

    @property
    def platform(self) -> str:
        return self.conversation.platform

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if isinstance(s, TextSegment) and s.text.strip())

    @property
    def files(self) -> tuple[FileRef, ...]:
        return tuple(s.file for s in self.segments if isinstance(s, ImageSegment | FileSegment))


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


class Service(Protocol):
    """A background part of the application (scheduler, HTTP server) with its own lifecycle."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
