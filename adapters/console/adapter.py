"""Terminal adapter: local files in, the answer streamed to a text stream as it is generated."""

from __future__ import annotations

import asyncio
import itertools
import logging
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TextIO

from bot.errors import FileTooLarge, InputError, ReplyGone
from bot.settings import Settings
from bot.types import (
    AdapterHealth,
    ChatType,
    ConversationKey,
    FileRef,
    FileSegment,
    ImageSegment,
    IncomingMessage,
    MessageHandler,
    Segment,
    TextSegment,
    User,
)

logger = logging.getLogger(__name__)

CONSOLE_USER = User(platform="console", user_id="local", display_name="you")

OUTPUT_CLOSED = "the output was closed before the answer was complete"
"""``ConsoleReply.error`` when the reader went away (e.g. ``peekbot chat … | head``)."""


class ConsoleReply:
    """Writes the answer to ``out`` as it grows; ``done`` is set when the final text or an error arrived."""

    def __init__(self, out: TextIO, status: TextIO) -> None:
        self._out = out
        self._status = status
        self._printed = ""
        self.done = asyncio.Event()
        self.final_text: str | None = None
        self.error: str | None = None

    async def start_progress(self, queue_position: int | None = None) -> None:
        if queue_position:
            self._status.write(f"(queued: {queue_position} ahead of you)\n")
            self._status.flush()

    async def update(self, text: str) -> None:
        self._guarded(self._write_through, text)

    async def finish(self, text: str) -> None:
        self._guarded(self._write_through, text + "\n")
        self.final_text = text
        self.done.set()

    async def fail(self, text: str) -> None:
        try:
            self._write(("\n" if self._printed else "") + f"peekbot: {text}\n")
        except (OSError, ValueError):  # nobody reads any more: the error has nowhere to go
            self._closed()
            return
        self.error = self.error or text
        self.done.set()

    def _guarded(self, write: Callable[[str], None], text: str) -> None:
        """Write, or, when the reader went away, end this reply (raising, so the core stops generating)."""
        try:
            write(text)
        except (OSError, ValueError) as exc:
            self._closed()
            raise ReplyGone() from exc

    def _closed(self) -> None:
        self.error = OUTPUT_CLOSED
        self.done.set()

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def resume_state(self) -> dict[str, str]:
        """A terminal reply has nothing to find again: a new process just writes to its own terminal."""
        return {}

    def _write_through(self, text: str) -> None:
        if text.startswith(self._printed):
            self._write(text[len(self._printed) :])
        else:  # the text was rewritten (rare): start a fresh line
            self._write("\n" + text)
        self._printed = text


class ConsoleAdapter:
    """One local conversation. Files attached earlier stay in context for follow-up questions."""

    name = "console"

    def __init__(self, settings: Settings, *, out: TextIO | None = None, status: TextIO | None = None) -> None:
        self._settings = settings
        self._out = out or sys.stdout
        self._status = status or sys.stderr
        self._handler: MessageHandler | None = None
        self._ids = itertools.count(1)
        self._conversation = ConversationKey("console", "local", "terminal", thread=f"t{int(time.time())}")
        self._earlier_files: list[FileRef] = []
        self._started_at: float | None = None

    async def start(self, handler: MessageHandler) -> None:
        self._handler = handler
        self._started_at = time.time()

    async def stop(self) -> None:
        self._handler = None

    async def health(self) -> AdapterHealth:
        return AdapterHealth(connected=self._handler is not None, connected_since=self._started_at)

    async def reconnect(self) -> None:
        """The console has no connection to renew."""

    async def fetch(self, file: FileRef) -> bytes:
        return await asyncio.to_thread(self._read, Path(file.source["path"]))

    def reply_for(self, message: IncomingMessage, state: Mapping[str, str]) -> ConsoleReply:
        """A reply for a journaled question: the answer is written to this terminal."""
        return ConsoleReply(self._out, self._status)

    def _read(self, path: Path) -> bytes:
        size = path.stat().st_size
        limit = self._settings.images.max_file_bytes
        if size > limit:
            megabytes = {"size": f"{size / 1e6:.1f}", "limit": f"{limit / 1e6:.0f}"}
            raise FileTooLarge(key="console.too_large", name=path.name, **megabytes)
        return path.read_bytes()

    @staticmethod
    def file_ref(location: str | Path) -> FileRef:
        """A reference to a local file; raises InputError when there is none."""
        path = Path(location).expanduser()
        if not path.is_file():
            raise InputError(key="console.no_file", path=str(path))
        mime, _ = mimetypes.guess_type(path.name)
        return FileRef(
            platform="console",
            file_id=str(path.resolve()),
            name=path.name,
            mime_type=mime or "application/octet-stream",
            size=path.stat().st_size,
            source={"path": str(path.resolve())},
        )

    async def ask(self, text: str, files: Iterable[str | Path] = ()) -> ConsoleReply:
        """Send one message to the core and wait until its answer (or error) has been written."""
        if self._handler is None:
            raise RuntimeError("the console adapter is not started")
        reply = ConsoleReply(self._out, self._status)
        try:
            refs = [self.file_ref(p) for p in files]
        except InputError as exc:
            await reply.fail(exc.user_message)
            return reply
        segments: list[Segment] = [TextSegment(text)] if text.strip() else []
        segments += [ImageSegment(ref) if ref.is_image else FileSegment(ref) for ref in refs]
        number = next(self._ids)
        message = IncomingMessage(
            event_id=f"console-{self._conversation.thread}-{number}",
            message_id=f"{self._conversation.thread}-{number}",
            conversation=self._conversation,
            user=CONSOLE_USER,
            chat_type=ChatType.DIRECT,
            segments=tuple(segments),
            context_files=tuple(self._earlier_files),
            locale=terminal_locale(),
        )
        await self._handler(message, reply)
        await reply.done.wait()
        if reply.error is None:
            self._earlier_files = (refs + self._earlier_files)[: self._settings.images.max_images_per_question]
        return reply


def terminal_locale() -> str:
    """The terminal's language (``LC_ALL``, ``LC_MESSAGES`` or ``LANG``, e.g. ``zh_CN`` from ``zh_CN.UTF-8``)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "").split(".")[0]
        if value:
            return value
    return ""
