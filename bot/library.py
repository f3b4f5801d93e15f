"""Long documents: every page gets searchable text once, and each question is sent only the pages it needs.

A PDF with more pages than one question can carry becomes a *document*, identified by the sha256 of its bytes;
so do a thread's earlier images when there are more than one question can carry (an *image set*, one page per
image), and an Office or text file with more text than one question carries (its *parts*: slides, blocks of sheet
rows, sections, pages of text, numbered like pages and named in the file's own terms, ``slide 17``). A page's text
comes from the PDF text layer or, for a scanned page or an image, from the model's own transcription of the picture
(cached by the picture's content hash, so no picture is transcribed twice); a part's text is what its reader found.
Full-text search (``DocumentIndex.search``) picks the pages for a question; only those are drawn and sent (a part:
its text, and its embedded pictures). File bytes and pictures live only for the request; the index keeps hashes and
page text.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bot.engine import Engine, GenerationRequest
from bot.errors import UserFacingError
from bot.i18n import Said, note, said, say
from bot.settings import Settings
from bot.store.base import DocumentIndex, DocumentInfo
from bot.store.codec import encode_file
from bot.types import FileRef

if TYPE_CHECKING:
    from bot.media.parts import DocumentText, Part
    from bot.media.pictures import PixelBudget, PreparedImage
    from bot.media.pool import MediaPool

logger = logging.getLogger(__name__)

TRANSCRIBE_PROMPT = (
    "Transcribe all text on this page exactly as written, line by line, as plain text. "
    "Include headings, table cells and labels. Write nothing else. If the page has no text, "
    "describe what it shows in one sentence."
)
TRANSCRIBE_SYSTEM_PROMPT = "You read document pages and write out their text faithfully."
MIN_TEXT_LAYER_CHARS = 16
"""A page whose text layer has fewer non-blank characters is treated as scanned (its picture is transcribed)."""
TRANSCRIBE_CONCURRENCY = 4
"""Page transcriptions in flight at once (they share engine batches)."""
SEARCH_CANDIDATES = 3
"""Search hits fetched per page wanted, so duplicates and out-of-range pages can be skipped."""
RELEVANCE_FLOOR = 0.25
"""Search hits scoring below this fraction of the best hit are not sent (they share only common words)."""
_STOP_WORDS_TEXT = """
a about all an and any are as at be been but by can could did do does for from had has have he her here his how i
if in into is it its me my no not of on or our please she should show so some tell than that the their them then
there these they this those to us was we were what when where which who whom whose why will with would you your
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
"""Words too common to pick a page by (English); a question of only these gets the default pages."""
INDEX_SHARE_OF_BUDGET = 0.6
"""Share of a question's PDF time budget (``pdf_time_budget_s``) that indexing may use; drawing has the rest."""


@dataclass(frozen=True, slots=True)
class LongDocument:
    """A document fetched for one question: a PDF's ``data`` or an image set's ``pictures`` (request-only)."""

    file: FileRef
    data: bytes
    document_id: str
    name: str
    page_count: int
    pictures: tuple[PreparedImage, ...] = ()
    owner: str = ""
    """Who asked (``User.key``): the lane its pages are read and drawn in (``bot.media.pool``)."""
    parts: tuple[Part, ...] = ()
    """An Office or text file's parts (text and embedded pictures), read for this request."""

    @property
    def is_image_set(self) -> bool:
        return bool(self.pictures)

    @property
    def has_parts(self) -> bool:
        return bool(self.parts)

    @property
    def label(self) -> Said:
        """How sentences name it: its file name, "the document", or the thread's earlier images (a Note)."""
        if self.is_image_set:
            return note("subject.image_set", n=self.page_count)
        return self.name or note("subject.document")

    @property
    def unit(self) -> str:
        return "image" if self.is_image_set else "part" if self.has_parts else "page"

    def part_label(self, number: int, lang: str = "en") -> str:
        """How the answer names part ``number`` in ``lang``: ``slide 17``; a page's number otherwise."""
        if self.has_parts and 1 <= number <= len(self.parts):
            return said(self.parts[number - 1].label, lang)
        return str(number)

    def progress_note(self, done: int, total: int, lang: str = "en") -> str:
        if self.is_image_set:
            return say("library.read_so_far", lang, done=done, document=self.label)
        return say("library.indexed_so_far", lang, done=done, total=total, document=self.label)


@dataclass(slots=True)
class DocumentPages:
    """The pages chosen for a question, drawn, plus what to tell the model and the person who asked."""

    images: list[PreparedImage] = field(default_factory=list)
    pages: list[tuple[LongDocument, list[int]]] = field(default_factory=list)
    """Per document, the pages drawn, in picture order."""
    notes: list[Said] = field(default_factory=list)
    """Remarks for the answer (pages not yet indexed, pages beyond the search limit)."""
    texts: list[str] = field(default_factory=list)
    """The chosen parts' text, each headed by where it is from, for the prompt."""
    pictured: list[tuple[LongDocument, list[int]]] = field(default_factory=list)
    """Per document, the pages (or parts) the pictures are of, in picture order."""

    def prompt_line(self, pictures_before: int) -> str:
        """Tells the model which pages the pictures are, e.g. "The pictures are pages 27, 3 of report.pdf, …"."""
        if not self.images:
            return ""
        listed = _list_pages(self.pictured, with_word=True)
        many = len(self.images) > 1
        if pictures_before:
            subject = f"The last {len(self.images)} pictures are" if many else "The last picture is"
        else:
            subject = "The pictures are" if many else "The picture is"
        tiled = ""
        if len(self.images) > self._page_total and not any(d.has_parts for d, _ in self.pictured):
            tiled = " Long pages are cut into several pictures, top to bottom."
        order = ", in that order" if many else ""
        source = "from " if any(d.has_parts for d, _ in self.pictured) else ""
        return f"{subject} {source}{listed}{order}.{tiled}"

    def used_note(self, lang: str = "en") -> str:
        """"Pages used: 27, 3 of report.pdf." or "Sources used: slide 17 of deck.pptx." for the end of the answer,
        in ``lang`` (``bot.i18n``)."""
        sources = [(document, pages) for document, pages in self.pages if document.has_parts]
        others = [(document, pages) for document, pages in self.pages if not document.has_parts]
        notes = []
        units = {document.unit for document, _ in others}
        separator = say("used.groups", lang)
        if units:
            key = "used.mixed" if len(units) > 1 else f"used.{units.pop()}s"
            places = _list_pages(others, with_word=key == "used.mixed", separator=separator, lang=lang)
            notes.append(say(key, lang, places=places))
        if sources:
            places = _list_pages(sources, with_word=False, separator=separator, lang=lang)
            notes.append(say("used.sources", lang, places=places))
        return " ".join(notes)

    def extend(self, other: DocumentPages) -> None:
        """Append another choice's pictures (they follow this one's in the request)."""
        self.images.extend(other.images)
        self.pages.extend(other.pages)
        self.notes.extend(other.notes)
        self.texts.extend(other.texts)
        self.pictured.extend(other.pictured)

    @property
    def _page_total(self) -> int:
        return sum(len(pages) for _, pages in self.pictured)


def _list_pages(
    groups: Sequence[tuple[LongDocument, list[int]]], *, with_word: bool, separator: str = ", then ", lang: str = "en"
) -> str:
    parts = []
    for document, pages in groups:
        numbers = say("used.separator", lang).join(document.part_label(page, lang) for page in pages)
        if with_word and not document.has_parts:
            numbers = say(f"unit.{document.unit}{'s' if len(pages) > 1 else ''}", lang, numbers=numbers)
        parts.append(say("used.place", lang, numbers=numbers, document=document.label))
    return separator.join(parts)


def page_hash(document_id: str, page: int) -> str:
    """A stable hash for a page identified by its document's content hash and its number."""
    return hashlib.sha256(f"{document_id}:p{page}".encode()).hexdigest()


def picture_hash(images: Sequence[PreparedImage]) -> str:
    """The content hash of a drawn page (all its tiles): the key of the transcription cache."""
    digest = hashlib.sha256()
    for prepared in images:
        image = prepared.image
        digest.update(f"{image.mode}:{image.width}x{image.height};".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def search_words(question: str) -> str:
    """The question's words worth searching for: punctuation and common English words removed."""
    return " ".join(word for word in re.findall(r"\w+", question) if word.lower() not in STOP_WORDS)


def has_text_layer(text: str) -> bool:
    return sum(1 for ch in text if not ch.isspace()) >= MIN_TEXT_LAYER_CHARS


class DocumentLibrary:
    """Indexes long documents in a ``DocumentIndex`` and chooses the pages each question is sent."""

    def __init__(
        self, index: DocumentIndex, engine: Engine, settings: Settings, *, media: MediaPool | None = None
    ) -> None:
        self.index = index
        self.engine = engine
        self.settings = settings
        self.media = media
        """Worker processes that read and draw pages (default: ``bot.media.pool.shared_pool()``)."""

    # -- which files are documents --------------------------------------------------------------------------
    @property
    def pages_per_question(self) -> int:
        images = self.settings.images
        return max(1, min(images.doc_pages_per_question, images.max_images_per_question))

    def is_long(self, page_count: int) -> bool:
        """True when a PDF of this many pages does not fit one question (so it is searched instead)."""
        images = self.settings.images
        return page_count > max(1, min(images.pdf_max_pages, images.max_images_per_question))

    async def open_document(
        self, file: FileRef, data: bytes, *, conversation: str, page_count: int, content_hash: str = "",
        owner: str = "",
    ) -> LongDocument:
        """Register the document in the conversation (idempotent) and return it for this request."""
        from bot.media.wording import clean_name

        document = LongDocument(
            file=file,
            data=data,
            document_id=content_hash or hashlib.sha256(data).hexdigest(),
            name=clean_name(file.name),
            page_count=page_count,
            owner=owner,
        )
        await self.index.add_document(
            DocumentInfo(
                document_id=document.document_id,
                conversation=conversation,
                name=document.name,
                page_count=page_count,
                file_ref=encode_file(file),
            )
        )
        return document

    def is_long_text(self, read: DocumentText) -> bool:
        """True when an Office or text file has more text or pictures than one question carries (so it is searched),
        or was not read to its end in time."""
        images = self.settings.images
        if not read.complete or read.text_chars > images.doc_text_chars_per_question:
            return True
        return read.picture_count > max(1, images.max_images_per_question)

    async def open_parts(
        self, file: FileRef, read: DocumentText, *, conversation: str, content_hash: str, owner: str = ""
    ) -> LongDocument:
        """An Office or text file's parts as a document of the conversation (registered idempotently).

        A file read only in part (its reading ran out of time) is registered with one part more than was read, so
        it never counts as fully indexed and the next question reads it again, further."""
        document = LongDocument(
            file=file,
            data=b"",
            document_id=content_hash,
            name=read.name,
            page_count=len(read.parts),
            owner=owner,
            parts=read.parts,
        )
        await self.index.add_document(
            DocumentInfo(
                document_id=content_hash,
                conversation=conversation,
                name=read.name,
                page_count=len(read.parts) + (0 if read.complete else 1),
                file_ref=encode_file(file),
            )
        )
        return document

    async def stored_parts(
        self, data: bytes, *, name: str, conversation: str, content_hash: str
    ) -> DocumentText | None:
        """The parts of a file this conversation already indexed whole, from the index (no need to read it again);
        None when it was not, or when the file may embed pictures (those are only in the file)."""
        from bot.media.parts import DocumentText, Part, stored_label
        from bot.media.wording import clean_name

        if any(folder in data for folder in _PICTURE_FOLDERS):
            return None
        info = next((d for d in await self.index.documents(conversation) if d.document_id == content_hash), None)
        if info is None or info.page_count < 1 or info.indexed_pages < info.page_count:
            return None
        texts = await self.index.page_texts(content_hash, range(1, info.page_count + 1))
        if len(texts) < info.page_count:
            return None
        parts = []
        for number in range(1, info.page_count + 1):
            label, _, text = texts[number].partition("\n")
            parts.append(Part(number, stored_label(label), text))
        return DocumentText(clean_name(name), note("kind.file"), tuple(parts))

    async def open_image_set(
        self, pictures: Sequence[PreparedImage], *, conversation: str, newest_file: FileRef
    ) -> LongDocument:
        """The thread's earlier pictures (oldest first) as one searchable set; registered in the conversation."""
        identity = hashlib.sha256(("image-set:" + ",".join(p.sha256 for p in pictures)).encode()).hexdigest()
        document = LongDocument(
            file=newest_file,
            data=b"",
            document_id=identity,
            name=f"the {len(pictures)} earlier images in this thread",
            page_count=len(pictures),
            pictures=tuple(pictures),
        )
        await self.index.add_document(
            DocumentInfo(
                document_id=identity,
                conversation=conversation,
                name=document.name,
                page_count=document.page_count,
                file_ref=encode_file(newest_file),
            )
        )
        return document

    # -- answering ------------------------------------------------------------------------------------------
    async def pages_for_question(
        self,
        documents: Sequence[LongDocument],
        question: str,
        *,
        max_images: int,
        max_pages: int | None = None,
        lang: str = "en",
    ) -> DocumentPages:
        """Index what is not indexed yet (within this question's allowance), search, and draw the best pages.

        At most ``max_pages`` pages (default ``doc_pages_per_question``) and ``max_images`` pictures. An empty
        ``question`` (or one the search finds nothing for) gets a PDF's first pages or an image set's newest images.
        The notes about indexing are in ``lang`` (``bot.i18n``).
        """
        result = DocumentPages()
        if not documents or (max_images < 1 and not any(d.has_parts for d in documents)):
            return result
        # One budget for the question's PDF work: indexing may use part of it, drawing the chosen pages the rest.
        started, budget = time.monotonic(), self.settings.images.pdf_time_budget_s
        index_deadline = started + budget * INDEX_SHARE_OF_BUDGET
        allowance = [max(0, self.settings.images.transcribe_pages_per_question)]
        for document in documents:
            result.notes.extend(await self._index(document, allowance, index_deadline, lang))
        wanted = max_pages if max_pages is not None else self.pages_per_question
        if not any(d.has_parts for d in documents):  # a part's text is sent even when no picture slot is left
            wanted = min(wanted, max_images)
        picks = await self._pick(documents, question, wanted)
        await self._draw(picks, max_images, result, started + budget)
        logger.info(
            "document pages chosen documents=%d pages=%s pictures=%d",
            len(documents),
            [(d.document_id[:12], pages) for d, pages in result.pages],
            len(result.images),
        )
        return result

    async def _pick(
        self, documents: Sequence[LongDocument], question: str, wanted: int
    ) -> list[tuple[LongDocument, int]]:
        by_id = {d.document_id: d for d in documents}
        picks: list[tuple[LongDocument, int]] = []
        seen: set[tuple[str, int]] = set()
        query = search_words(question)
        if query:
            hits = await self.index.search(list(by_id), query, wanted * SEARCH_CANDIDATES)
            floor = hits[0].score * RELEVANCE_FLOOR if hits and hits[0].score > 0 else float("-inf")
            for hit in hits:
                if hit.score < floor:  # matched only on common words, far behind the best page
                    break
                document = by_id.get(hit.document_id)
                key = (hit.document_id, hit.page)
                if document is None or key in seen or not 1 <= hit.page <= document.page_count:
                    continue
                seen.add(key)
                picks.append((document, hit.page))
                if len(picks) >= wanted:
                    break
        if picks:
            return picks
        # Nothing found: a PDF's first pages, an image set's newest images, taking from each document in turn.
        step = 0
        while len(picks) < wanted and any(step < d.page_count for d in documents):
            for document in documents:
                if step < document.page_count and len(picks) < wanted:
                    picks.append((document, document.page_count - step if document.is_image_set else step + 1))
            step += 1
        return picks

    async def _draw(
        self, picks: list[tuple[LongDocument, int]], max_images: int, result: DocumentPages, deadline: float
    ) -> None:
        """Draw the picks grouped by document (documents in order of their best page), within ``max_images``."""

        grouped: dict[str, tuple[LongDocument, list[int]]] = {}
        for document, page in picks:
            grouped.setdefault(document.document_id, (document, []))[1].append(page)
        share = self.settings.images.doc_text_chars_per_question // max(1, len(picks))
        for document, pages in grouped.values():
            if document.has_parts:
                await self._take_parts(document, pages, max_images, share, result)
                continue
            room = max_images - len(result.images)
            if room < 1:
                break
            if document.is_image_set:
                pages.sort()  # earlier images keep their order in the thread
                drawn = [replace(document.pictures[page - 1], page=page) for page in pages]
            else:
                drawn = await self._render(document, pages, deadline)
            used: list[int] = []
            for page in pages:
                pictures = [p for p in drawn if p.page == page]
                if not pictures or len(pictures) > max_images - len(result.images):
                    continue
                result.images.extend(pictures)
                used.append(page)
            if used:
                result.pages.append((document, used))
                result.pictured.append((document, used))

    async def _take_parts(
        self, document: LongDocument, numbers: list[int], max_images: int, share: int, result: DocumentPages
    ) -> None:
        """The parts' text (each within ``share`` characters) and their pictures while picture slots are left."""
        pictured: list[int] = []
        for number in numbers:
            part = document.parts[number - 1]
            result.texts.append(part_text(part, document.label, share))
            room = max_images - len(result.images)
            if room < 1 or not part.pictures:
                continue
            pictures = await part_pictures(
                self._media(), part.pictures[:room], label=f"{document.label} {part.label}",
                settings=self.settings, owner=document.owner,
            )
            result.images.extend(replace(picture, page=number) for picture in pictures)
            if pictures:
                pictured.append(number)
        result.pages.append((document, numbers))
        if pictured:
            result.pictured.append((document, pictured))

    # -- indexing -------------------------------------------------------------------------------------------
    async def _index(self, document: LongDocument, allowance: list[int], deadline: float, lang: str) -> list[str]:
        """Give every page searchable text once; returns notes for the answer.

        A PDF's text layer is read page by page until the deadline (or the content cap); the pages not read in
        time are left for a later question, like pages not yet transcribed.
        """
        if document.has_parts:
            await self._index_parts(document)
            return []
        notes: list[str] = []
        searchable = min(document.page_count, max(1, self.settings.images.pdf_max_text_pages))
        if searchable < document.page_count:
            total, label = document.page_count, document.label
            notes.append(say("library.first_pages", lang, searchable=searchable, total=total, document=label))
        indexed = await self.index.indexed_pages(document.document_id)
        missing = [page for page in range(1, searchable + 1) if page not in indexed]
        if not missing:
            return notes
        texts: dict[int, str] = {}
        unread: set[int] = set()
        if not document.is_image_set:
            texts = await self._media().page_texts(
                document.data, missing, name=document.name, settings=self.settings.images, deadline=deadline,
                owner=document.owner,
            )
            unread = {page for page in missing if page not in texts}
        scanned: list[int] = []
        for page in missing:
            if page in unread:
                continue
            text = texts.get(page, "")
            if has_text_layer(text):
                key = page_hash(document.document_id, page)
                await self.index.put_page(document.document_id, page, text, page_hash=key, source="text-layer")
            else:
                scanned.append(page)
        logger.info(
            "document indexing document=%s pages=%d text_layer=%d scanned=%d unread=%d",
            document.document_id[:12], document.page_count, len(missing) - len(scanned) - len(unread), len(scanned),
            len(unread),
        )
        left = len(unread) + await self._transcribe_pages(document, scanned, allowance, deadline)
        if left:
            notes.append(document.progress_note(searchable - left, searchable, lang))
        return notes

    async def _index_parts(self, document: LongDocument) -> None:
        """Store the text of the parts not indexed yet (label first, so "slide 17" finds slide 17), in one go."""
        indexed = await self.index.indexed_pages(document.document_id)
        missing = [
            (part.number, f"{said(part.label)}\n{part.text}", page_hash(document.document_id, part.number))
            for part in document.parts
            if part.number not in indexed
        ]
        if missing:
            await self.index.put_pages(document.document_id, missing, source="extracted")
            logger.info("document parts indexed document=%s parts=%d new=%d", document.document_id[:12],
                        len(document.parts), len(missing))

    async def _transcribe_pages(
        self, document: LongDocument, pages: list[int], allowance: list[int], deadline: float
    ) -> int:
        """Transcribe scanned pages (cache first) within the allowance; returns how many remain unindexed."""
        queue = list(pages)
        while queue and time.monotonic() < deadline:
            chunk = queue[:TRANSCRIBE_CONCURRENCY]
            drawn = await self._draw_for_transcription(document, chunk, deadline)
            to_transcribe: list[tuple[int, str, list[PreparedImage]]] = []
            finished: list[int] = []
            for page in chunk:
                pictures = drawn.get(page)
                if pictures is None:  # out of time before this page
                    break
                if not pictures:  # the page cannot be drawn: index it as empty so it is not retried
                    await self._put_transcribed(document, page, "", page_hash(document.document_id, page))
                    finished.append(page)
                    continue
                content_hash = picture_hash(pictures)
                cached = await self.index.transcription(content_hash)
                if cached is not None:
                    await self._put_transcribed(document, page, cached, content_hash)
                    finished.append(page)
                elif allowance[0] > 0:
                    allowance[0] -= 1
                    to_transcribe.append((page, content_hash, pictures))
            results = await asyncio.gather(*(self._transcribe(pictures) for _, _, pictures in to_transcribe))
            failed = False
            for (page, content_hash, _), text in zip(to_transcribe, results, strict=True):
                if text is None:
                    failed = True
                    continue
                await self._put_transcribed(document, page, text, content_hash)
                finished.append(page)
            queue = [page for page in queue if page not in finished]
            if failed or not finished or allowance[0] <= 0:
                break
        return len(queue)

    async def _render(self, document: LongDocument, pages: list[int], deadline: float) -> list[PreparedImage]:
        """Draw the given PDF pages within the pixel budget (in a worker process: PDFium is CPU-bound)."""
        return await self._media().render_pages(
            document.data,
            pages,
            name=document.name,
            settings=self.settings.images,
            budget=self._budget(),
            source_sha=document.document_id,
            deadline=deadline,
            owner=document.owner,
        )

    def _media(self) -> MediaPool:
        from bot.media.pool import shared_pool

        return self.media if self.media is not None else shared_pool()

    async def _draw_for_transcription(
        self, document: LongDocument, pages: list[int], deadline: float
    ) -> dict[int, list[PreparedImage]]:
        """Pictures per page; a page that could not be drawn maps to []; pages after the deadline are absent."""

        if document.is_image_set:
            return {page: [document.pictures[page - 1]] for page in pages}
        drawn = await self._render(document, pages, deadline)
        by_page: dict[int, list[PreparedImage]] = {}
        for prepared in drawn:
            if prepared.page is not None:
                by_page.setdefault(prepared.page, []).append(prepared)
        if time.monotonic() < deadline:
            for page in pages:
                by_page.setdefault(page, [])
        return by_page

    async def _transcribe(self, pictures: list[PreparedImage]) -> str | None:
        """The model's transcription of one page; None when the engine could not do it now."""
        request = GenerationRequest(
            question=TRANSCRIBE_PROMPT,
            images=[p.image for p in pictures],
            system_prompt=TRANSCRIBE_SYSTEM_PROMPT,
            max_new_tokens=self.settings.images.transcribe_max_new_tokens,
            timeout_s=self.settings.engine.request_timeout_s,
        )
        try:
            stream = self.engine.submit(request)
            return (await stream.text()).strip()
        except UserFacingError as exc:
            logger.warning("page transcription failed (%s): %s", exc.kind, exc)
            return None

    async def _put_transcribed(self, document: LongDocument, page: int, text: str, content_hash: str) -> None:
        await self.index.put_page(document.document_id, page, text, page_hash=content_hash, source="transcribed")

    def _budget(self) -> PixelBudget:
        from bot.media.pictures import PixelBudget

        engine = self.settings.engine
        return PixelBudget(max_pixels=engine.max_pixels, min_pixels=min(engine.min_pixels, engine.max_pixels), factor=1)


# ---------------------------------------------------------------------------------------------- Office and text files
_PICTURE_FOLDERS = (b"word/media/", b"xl/media/", b"ppt/media/")
"""Where an Office package keeps its pictures: a file holding none can be answered from the index alone."""



def part_text(part: Part, name: Said, limit: int) -> str:
    """A part's text for the prompt (in English, like the prompt), headed by where it is from and cut to ``limit``
    characters."""
    limit = max(200, limit)
    body = part.text if len(part.text) <= limit else part.text[:limit] + "\n[…cut]"
    return f"[{said(part.label)} of {said(name)}]\n{body}"


def whole_text(read: DocumentText, limit: int) -> tuple[str, list[Said]]:
    """A short file's text for the prompt (every part headed), cut at ``limit``; a note when parts are left out."""
    from bot.media.wording import subject

    texts: list[str] = []
    used = 0
    for part in read.parts:
        text = part_text(part, read.name or "the file", limit - used)
        if used and used + len(text) > limit:
            last = read.parts[len(texts) - 1].label
            the_file = subject(read.name, "file", capital=True)
            return "\n\n".join(texts), [note("note.doc_up_to", subject=the_file, last=last)]
        texts.append(text)
        used += len(text)
    return "\n\n".join(texts), []


async def part_pictures(
    media: MediaPool, blobs: Sequence[bytes], *, label: str, settings: Settings, owner: str = ""
) -> list[PreparedImage]:
    """Decode pictures embedded in a file (in a worker, like any image); one that cannot be read is skipped."""
    from bot.errors import InputError

    pictures: list[PreparedImage] = []
    for index, blob in enumerate(blobs, start=1):
        name = f"{label} picture {index}" if len(blobs) > 1 else f"{label} picture"
        try:
            attachment = await media.open_file(
                blob, name=name, images=settings.images, max_pixels=settings.engine.max_pixels,
                min_pixels=settings.engine.min_pixels, owner=owner,
            )
        except InputError as exc:  # EMF/WMF drawings, damaged pictures: the text still goes
            logger.info("skipped an embedded picture: %s", exc.kind)
            continue
        pictures.extend(attachment.images)
    return pictures
