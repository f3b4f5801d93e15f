"""Small test doubles shared by the core tests (no platform, no network)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.types import (
    AdapterHealth,
    ChatType,
    ConversationKey,
    FileRef,
    ImageSegment,
    IncomingMessage,
    MessageHandler,
    TextSegment,
    User,
)

_ids = itertools.count(1)


@dataclass
class RecordingReply:
    """A reply handle that keeps everything the core told it."""

    progress: list[int | None] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    final: str | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start_progress(self, queue_position: int | None = None) -> None:
        self.progress.append(queue_position)

    async def update(self, text: str) -> None:
        self.updates.append(text)

    async def finish(self, text: str) -> None:
        self.final = text
        self.done.set()

    async def fail(self, text: str) -> None:
        self.error = text
        self.done.set()

    async def wait(self, timeout: float = 60.0) -> RecordingReply:
        await asyncio.wait_for(self.done.wait(), timeout)
        return self


class LocalFilesAdapter:
    """An adapter whose files are local paths: exercises the core without any platform."""

    name = "local"

    def __init__(self) -> None:
        self.handler: MessageHandler | None = None
        self.fetched: list[str] = []
        self.resumed: list[tuple[IncomingMessage, dict[str, str], RecordingReply]] = []

    async def start(self, handler: MessageHandler) -> None:
        self.handler = handler

    async def stop(self) -> None:
        self.handler = None

    async def health(self) -> AdapterHealth:
        return AdapterHealth(connected=self.handler is not None)

    async def reconnect(self) -> None:
        return None

    async def fetch(self, file: FileRef) -> bytes:
        self.fetched.append(file.name)
        return Path(file.source["path"]).read_bytes()

    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> RecordingReply:
        """The reply handle of a journaled message answered after a restart (kept in ``resumed``)."""
        reply = RecordingReply()
        self.resumed.append((message, dict(state), reply))
        return reply


def local_image(path: Path, mime_type: str = "image/png") -> FileRef:
    return FileRef(platform="local", file_id=str(path), name=path.name, mime_type=mime_type,
                   size=path.stat().st_size, source={"path": str(path)})


def message(
    text: str,
    *files: FileRef,
    user: str = "U1",
    thread: str = "T1",
    context: tuple[FileRef, ...] = (),
    event_id: str | None = None,
    message_id: str | None = None,
    is_command: bool = False,
) -> IncomingMessage:
    number = next(_ids)
    segments = [TextSegment(text)] if text else []
    segments += [ImageSegment(f) for f in files]
    return IncomingMessage(
        event_id=event_id or f"ev{number}",
        message_id=message_id or f"msg{number}",
        conversation=ConversationKey("local", "W1", "C1", thread),
        user=User("local", user),
        chat_type=ChatType.GROUP,
        segments=tuple(segments),
        mentions_bot=True,
        context_files=context,
        is_command=is_command,
    )
