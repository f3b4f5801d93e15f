"""One question through the core (``answer_question``) with local files, as the library tests and benchmarks ask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.library import DocumentLibrary
from bot.questions import AnsweredQuestion, answer_question
from bot.settings import Settings
from bot.types import FileRef
from tests.support.helpers import LocalFilesAdapter, RecordingReply, message


async def ask(
    text: str,
    *files: FileRef,
    engine: Any,
    settings: Settings,
    library: DocumentLibrary | None = None,
    store: Any = None,
    media: Any = None,
    thread: str = "T1",
    context: tuple[FileRef, ...] = (),
    locale: str = "",
) -> tuple[RecordingReply, AnsweredQuestion]:
    """Ask ``text`` about ``files`` (``context``: files posted earlier in the thread; ``locale``: the asker's
    platform locale); the answer must come."""
    reply = RecordingReply()
    result = await answer_question(
        replace(message(text, *files, thread=thread, context=context), locale=locale),
        reply,
        adapter=LocalFilesAdapter(),
        engine=engine,
        settings=settings,
        history=[],
        library=library,
        store=store,
        media=media,
    )
    assert reply.error is None, reply.error
    assert reply.final is not None
    return reply, result


class CountingIndex:
    """A real document index, recording ``(document_id, page, source)`` of every page or part written to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pages_written: list[tuple[str, int, str]] = []

    async def put_page(self, document_id: str, page: int, text: str, *, page_hash: str, source: str) -> None:
        self.pages_written.append((document_id, page, source))
        await self.inner.put_page(document_id, page, text, page_hash=page_hash, source=source)

    async def put_pages(self, document_id: str, pages: Sequence[tuple[int, str, str]], *, source: str) -> None:
        self.pages_written.extend((document_id, page, source) for page, _, _ in pages)
        await self.inner.put_pages(document_id, pages, source=source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
