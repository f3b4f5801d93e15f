"""The status line the core shows while it prepares an answer, on reply handles that have one (``ShowsStatus``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.library import DocumentPages, LongDocument
from bot.questions import pages_status, reading_status, show_status
from bot.types import ChatType, ConversationKey, FileRef, ImageSegment, IncomingMessage, TextSegment, User


def question(*files: FileRef) -> IncomingMessage:
    return IncomingMessage(
        event_id="e1",
        message_id="D1:1.0",
        conversation=ConversationKey("slack", "T1", "D1"),
        user=User("slack", "U1"),
        chat_type=ChatType.DIRECT,
        segments=(TextSegment("what is this?"), *(ImageSegment(f) for f in files)),
    )


def image(name: str) -> FileRef:
    return FileRef("slack", name, name=name, mime_type="image/png")


def test_the_status_names_what_is_being_read() -> None:
    assert reading_status(question(image("a.png"))) == "looking at the screenshot…"
    assert reading_status(question(image("a.png"), image("b.png"))) == "looking at the screenshots…"
    pdf = FileRef("slack", "F9", name="report.pdf", mime_type="application/pdf")
    assert reading_status(question(image("a.png"), pdf)) == "reading the document…"
    deck = FileRef("slack", "F8", name="deck.pptx",
                   mime_type="application/vnd.openxmlformats-officedocument.presentationml.presentation")
    assert reading_status(question(deck)) == "reading the document…"
    assert reading_status(question()) is None


@dataclass
class StatusReply:
    shown: list[str] = field(default_factory=list)
    broken: bool = False

    async def status(self, text: str) -> None:
        if self.broken:
            raise ConnectionError("the platform is away")
        self.shown.append(text)


class PlainReply:
    """A reply handle without a status line."""


async def test_show_status_reaches_handles_that_have_one_and_never_raises() -> None:
    reply = StatusReply()
    await show_status(reply, "looking at the screenshot…")  # type: ignore[arg-type]
    await show_status(reply, None)  # type: ignore[arg-type]
    assert reply.shown == ["looking at the screenshot…"]
    await show_status(StatusReply(broken=True), "writing the answer…")  # type: ignore[arg-type]
    await show_status(PlainReply(), "writing the answer…")  # type: ignore[arg-type]


def test_the_status_names_the_pages_the_model_reads() -> None:
    report = LongDocument(FileRef("slack", "F1", name="report.pdf"), b"", "d1", "report.pdf", page_count=12)
    pages = DocumentPages()
    assert pages_status(pages) is None
    pages.pages.append((report, [4]))
    assert pages_status(pages) == "reading page 4 of 12…"
    pages.pages[0] = (report, [4, 9, 10, 11])
    assert pages_status(pages) == "reading pages 4, 9, 10, … of 12…"
