"""Small test doubles shared by the core tests (no platform, no network)."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

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


async def handled(app: Any, msg: IncomingMessage, timeout: float = 30.0) -> RecordingReply:
    """Hand ``msg`` to ``app`` (a ``bot.app.Application``) and wait until it is answered and recorded."""
    reply = RecordingReply()
    assert await app.handle(msg, reply)
    await reply.wait(timeout)
    assert await app.wait_idle(timeout)  # the turn is recorded once the answer is out
    return reply


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


def png(colour: tuple[int, int, int] = (30, 120, 200), size: tuple[int, int] = (96, 64)) -> bytes:
    """A one-colour picture, PNG-encoded."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def save_png(path: Path, colour: tuple[int, int, int] = (30, 120, 200), size: tuple[int, int] = (96, 64)) -> Path:
    """A one-colour PNG screenshot written to ``path`` (returned)."""
    path.write_bytes(png(colour, size))
    return path


def local_image(path: Path, mime_type: str = "image/png", platform: str = "local") -> FileRef:
    return FileRef(platform=platform, file_id=str(path), name=path.name, mime_type=mime_type,
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
    platform: str = "local",
    channel: str = "C1",
) -> IncomingMessage:
    """A person's message in a group chat that mentions the bot, with ``files`` as images; unique ids unless given."""
    number = next(_ids)
    segments = [TextSegment(text)] if text else []
    segments += [ImageSegment(f) for f in files]
    prefix = "" if platform == "local" else f"{platform}-"
    return IncomingMessage(
        event_id=event_id or f"{prefix}ev{number}",
        message_id=message_id or f"{prefix}msg{number}",
        conversation=ConversationKey(platform, "W1", channel, thread),
        user=User(platform, user),
        chat_type=ChatType.GROUP,
        segments=tuple(segments),
        mentions_bot=True,
        context_files=context,
        is_command=is_command,
    )
