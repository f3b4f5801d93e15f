"""PDF pages to pictures (and their text layer) with pypdfium2, page by page against a deadline.

Every function here checks its deadline before each page and stops there: drawing is progressive (a page that
takes too long is abandoned at the deadline), text extraction and page loading are not, so one page can run over
by at most its own cost, which the worker process's time limit bounds. The drawing objects parsed per call are
capped (``pdf_max_objects``): pages sharing one heavy content stream stop being read once that much content was
decoded. PDFium is not thread-safe, not even across documents: every call into it in a process must hold
``PDFIUM_LOCK`` (the bot runs these functions in worker processes, one file at a time).
Deadlines are ``time.monotonic()`` values, which are comparable across the processes of one machine.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from bot.errors import DocumentRejected, EncryptedDocument
from bot.i18n import Note, Said, note
from bot.media.pictures import Attachment, PixelBudget, PreparedImage, choose_tiles, tiles_within_budget
from bot.media.wording import named, page_ranges, subject
from bot.settings import ImageSettings

logger = logging.getLogger(__name__)

PDFIUM_LOCK = threading.RLock()
"""Hold this around any use of pypdfium2 anywhere in the process."""

POINTS_PER_INCH = 72.0


def _pages_read_note(read: list[int], total: int, label: Note) -> Note | None:
    if read == list(range(1, total + 1)):
        return None
    key = "note.pdf_page_read" if len(read) == 1 else "note.pdf_pages_read"
    return note(key, pages=page_ranges(read), total=total, subject=label)


def _page_text(page: pdfium.PdfPage) -> str:
    """The page's text layer, "" when it has none or it cannot be read."""
    try:
        textpage = page.get_textpage()
    except pdfium.PdfiumError:
        return ""
    try:
        text = textpage.get_text_range()
    finally:
        textpage.close()
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()


def _render_page(page: pdfium.PdfPage, scale: float, deadline: float) -> Image.Image | None:
    """Draw one page on white at ``scale`` pixels per point; None when the deadline passed first."""
    width = max(1, math.ceil(page.get_width() * scale))
    height = max(1, math.ceil(page.get_height() * scale))
    bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGR)
    try:
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
        pause = pdfium_c.IFSDK_PAUSE(version=1)
        need_to_pause = type(pause.NeedToPauseNow)(lambda _pause: int(time.monotonic() >= deadline))
        pause.NeedToPauseNow = need_to_pause
        status = pdfium_c.FPDF_RenderPageBitmap_Start(bitmap, page, 0, 0, width, height, 0, pdfium_c.FPDF_ANNOT, pause)
        try:
            while status == pdfium_c.FPDF_RENDER_TOBECONTINUED and time.monotonic() < deadline:
                status = pdfium_c.FPDF_RenderPage_Continue(page, pause)
        finally:
            pdfium_c.FPDF_RenderPage_Close(page)
        if status == pdfium_c.FPDF_RENDER_TOBECONTINUED:
            return None
        if status != pdfium_c.FPDF_RENDER_DONE:
            raise pdfium.PdfiumError(f"render status {status}")
        return bitmap.to_pil().convert("RGB")
    finally:
        bitmap.close()


@contextmanager
def _opened(data: bytes, name: str) -> Iterator[pdfium.PdfDocument]:
    """The document, under ``PDFIUM_LOCK`` and closed on the way out; rejects what PDFium cannot open."""
    with PDFIUM_LOCK:
        pdf = _open(data, name)
        try:
            yield pdf
        finally:
            pdf.close()


def _open(data: bytes, name: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedDocument(
                key="media.pdf_encrypted", detail=f"pdfium error {code}", named=named(name)
            ) from exc
        raise DocumentRejected(
            key="media.pdf_damaged", detail=f"pdfium error {code}: {exc}", named=named(name)
        ) from exc


def _count_objects(page: pdfium.PdfPage, limit: int) -> int:
    """Drawing objects on the parsed page, nested form objects included; stops counting past ``limit``."""
    total = 0
    stack: list[tuple[bool, object]] = [(False, page.raw)]
    while stack and total <= limit:
        is_form, handle = stack.pop()
        count = pdfium_c.FPDFFormObj_CountObjects(handle) if is_form else pdfium_c.FPDFPage_CountObjects(handle)
        total += max(0, count)
        for index in range(max(0, count)):
            if total > limit:
                break
            child = (pdfium_c.FPDFFormObj_GetObject if is_form else pdfium_c.FPDFPage_GetObject)(handle, index)
            if child and pdfium_c.FPDFPageObj_GetType(child) == pdfium_c.FPDF_PAGEOBJ_FORM:
                stack.append((True, child))
    return total


class _ContentBudget:
    """Drawing objects this call may still parse (``pdf_max_objects``): a cap on decoded page content."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0

    def take(self, page: pdfium.PdfPage) -> bool:
        """Count a loaded page against the cap; False once the cap is passed (the page is not to be used)."""
        self.used += _count_objects(page, self.limit - self.used)
        return self.used <= self.limit


class _PageSkipped(Exception):
    """This page gives no picture; ``note`` tells the user why."""

    def __init__(self, said: Note) -> None:
        super().__init__(said.text())
        self.note = said


class _OutOfTime(Exception):
    """The deadline passed while drawing this page."""


@dataclass(frozen=True)
class _PdfTask:
    name: str
    settings: ImageSettings
    budget: PixelBudget
    source_sha: str
    deadline: float

    @property
    def the_pdf(self) -> Note:
        return subject(self.name, "PDF")


def _each_page(
    pdf: pdfium.PdfDocument, pages: Sequence[int], *, deadline: float, content: _ContentBudget, what: str
) -> Iterator[tuple[int, pdfium.PdfPage | None]]:
    """``(number, page)`` for the 1-based ``pages`` in that order (numbers out of range skipped), until the deadline
    or the content cap; page None when it failed to load. Each page is closed once the caller asks for the next."""
    total = len(pdf)
    read = 0
    for number in pages:
        if not 1 <= number <= total:
            continue
        if time.monotonic() >= deadline:
            logger.info("pdf %s deadline passed before page=%d (%d pages read)", what, number, read)
            return
        try:
            page = pdf[number - 1]
        except pdfium.PdfiumError:
            logger.info("pdf page failed to load page=%d", number)
            read += 1
            yield number, None
            continue
        try:
            if not content.take(page):
                logger.info("pdf content cap passed at page=%d (%d pages read)", number, read)
                return
            read += 1
            yield number, page
        finally:
            page.close()


def _deadline(settings: ImageSettings, deadline: float | None) -> float:
    """The earlier of ``deadline`` and ``pdf_time_budget_s`` from now."""
    own = time.monotonic() + settings.pdf_time_budget_s
    return own if deadline is None else min(own, deadline)


def _picture(page: pdfium.PdfPage, number: int, text: str, job: _PdfTask) -> list[PreparedImage]:
    """One page drawn as large as pdf_max_dpi and the pixel budget allow, tiled when very long."""
    settings, budget = job.settings, job.budget
    width, height = page.get_width(), page.get_height()
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise _PageSkipped(note("note.pdf_page_no_size", number=number, subject=job.the_pdf))
    max_scale = settings.pdf_max_dpi / POINTS_PER_INCH
    tiles = choose_tiles(
        width, height, settings=settings, pixels=width * height * max_scale**2, max_pixels=budget.max_pixels
    )
    if tiles is None:
        raise _PageSkipped(note("note.pdf_page_too_thin", number=number, subject=job.the_pdf))
    # The highest resolution up to pdf_max_dpi at which each tile fits the pixel budget.
    scale = min(max_scale, math.sqrt(budget.max_pixels * tiles / (width * height)))
    try:
        drawn = _render_page(page, scale, job.deadline)
    except pdfium.PdfiumError as exc:
        logger.info("pdf page failed to render page=%d: %s", number, exc)
        raise _PageSkipped(note("note.pdf_page_undrawn", number=number, subject=job.the_pdf)) from exc
    if drawn is None:
        raise _OutOfTime
    return tiles_within_budget(
        drawn,
        label=f"{job.name or 'document'} p.{number}",
        source_sha=job.source_sha,
        page=number,
        text=text,
        tiles=tiles,
        budget=budget,
    )


def load_pdf(
    data: bytes,
    *,
    name: str,
    settings: ImageSettings,
    budget: PixelBudget,
    source_sha: str,
    deadline: float | None = None,
) -> Attachment:
    """Draw the first ``pdf_max_pages`` pages and read the text layer of the first ``pdf_max_text_pages``.

    Drawing stops early at ``max_images_per_question`` pictures, at the deadline (the earlier of ``deadline`` and
    ``pdf_time_budget_s`` from now) or at the content cap; text-only pages past either are left out.
    """
    job = _PdfTask(name, settings, budget, source_sha, _deadline(settings, deadline))
    content = _ContentBudget(settings.pdf_max_objects)
    images: list[PreparedImage] = []
    notes: list[Said] = []
    page_texts: list[str] = []
    read: list[int] = []
    stopped_at: int | None = None
    too_heavy_at: int | None = None

    with _opened(data, name) as pdf:
        total = len(pdf)
        render_limit = min(total, max(1, settings.pdf_max_pages))
        text_limit = min(total, max(0, settings.pdf_max_text_pages))
        for index in range(max(render_limit, text_limit)):
            number = index + 1
            if time.monotonic() >= job.deadline:
                if stopped_at is None and index < render_limit and len(images) < settings.max_images_per_question:
                    stopped_at = number
                break
            wants_picture = (
                index < render_limit
                and stopped_at is None
                and len(images) < max(1, settings.max_images_per_question)
            )
            try:
                page = pdf[index]
            except pdfium.PdfiumError:
                logger.info("pdf page failed to load page=%d", number)
                if index < text_limit:
                    page_texts.append("")
                if wants_picture:
                    notes.append(note("note.pdf_page_unopened", number=number, subject=job.the_pdf))
                continue
            try:
                if not content.take(page):
                    too_heavy_at = number
                    break
                text = _page_text(page)
                if index < text_limit:
                    page_texts.append(text)
                if wants_picture:
                    images.extend(_picture(page, number, text, job))
                    read.append(number)
            except _PageSkipped as skipped:
                notes.append(skipped.note)
            except _OutOfTime:
                stopped_at = number
            finally:
                page.close()

    if not images:
        if stopped_at is not None:
            raise DocumentRejected(
                key="media.pdf_too_slow", detail=f"pdf deadline passed on page {stopped_at}", named=named(name)
            )
        if too_heavy_at is not None:
            raise DocumentRejected(
                key="media.pdf_too_heavy",
                detail=f"pdf content cap {settings.pdf_max_objects} objects passed on page {too_heavy_at}",
                named=named(name),
            )
        raise DocumentRejected(key="media.pdf_no_page", named=named(name))
    the_pdf = subject(name, "PDF", capital=True)
    if stopped_at is not None:
        notes.append(note("note.pdf_too_slow", subject=the_pdf, page=stopped_at))
    elif too_heavy_at is not None and too_heavy_at <= render_limit:
        notes.append(note("note.pdf_too_heavy", subject=the_pdf, page=too_heavy_at))
    pages_note = _pages_read_note(read, total, job.the_pdf)
    if pages_note:
        notes.insert(0, pages_note)
    logger.debug("pdf read pages=%d drawn=%s pictures=%d text_pages=%d", total, read, len(images), len(page_texts))
    return Attachment(name=name, kind="pdf", images=images, notes=notes, page_count=total, page_texts=page_texts)


# ---------------------------------------------------------------------------------------------- document pages
# Documents too long for one question are read page by page: page count and text layer first (cheap), then
# only the pages a question needs are drawn.


def pdf_page_count(data: bytes, *, name: str = "") -> int:
    """The number of pages; raises ``DocumentRejected``/``EncryptedDocument`` like ``load_pdf``."""
    with _opened(data, name) as pdf:
        return len(pdf)


def pdf_page_texts(
    data: bytes,
    pages: Sequence[int],
    *,
    name: str = "",
    settings: ImageSettings | None = None,
    deadline: float | None = None,
) -> dict[int, str]:
    """The text layer of each 1-based page in ``pages`` that could be read in time.

    "" for a page without text or that cannot be opened. Pages are read in order until the deadline (the earlier
    of ``deadline`` and ``pdf_time_budget_s`` from now) or the content cap; the pages after it are missing from
    the result (not read yet, as opposed to read and empty).
    """
    settings = settings or ImageSettings.model_construct()
    stop = _deadline(settings, deadline)
    content = _ContentBudget(settings.pdf_max_objects)
    texts: dict[int, str] = {}
    with _opened(data, name) as pdf:
        for number, page in _each_page(pdf, pages, deadline=stop, content=content, what="text"):
            texts[number] = "" if page is None else _page_text(page)
    return texts


def render_pdf_pages(
    data: bytes,
    pages: Sequence[int],
    *,
    name: str,
    settings: ImageSettings,
    budget: PixelBudget,
    source_sha: str,
    deadline: float | None = None,
) -> list[PreparedImage]:
    """Draw the given 1-based pages, in the given order, each within the pixel budget (tiled when very long).

    Pages that cannot be drawn are left out (their numbers are missing from the result's ``page`` fields);
    drawing stops at the deadline (the earlier of ``deadline`` and ``pdf_time_budget_s`` from now) or the content
    cap. The text layer is attached.
    """
    job = _PdfTask(name, settings, budget, source_sha, _deadline(settings, deadline))
    content = _ContentBudget(settings.pdf_max_objects)
    images: list[PreparedImage] = []
    with (
        _opened(data, name) as pdf,
        closing(_each_page(pdf, pages, deadline=job.deadline, content=content, what="drawing")) as each,
    ):
        for number, page in each:
            if page is None:
                continue
            try:
                images.extend(_picture(page, number, _page_text(page), job))
            except _PageSkipped as skipped:
                logger.info("pdf page skipped page=%d: %s", number, skipped.note)
            except _OutOfTime:
                logger.info("pdf deadline passed at page=%d", number)
                break
    return images
