"""Word, Excel and PowerPoint files to searchable parts: text (headings, tables as Markdown, speaker notes, cell
values with sheet names and ranges) and the pictures embedded in them.

python-docx, openpyxl (read-only, streaming rows) and python-pptx read the packages once ``bot.media.packages`` has
checked them. Nothing is rendered: drawing a slide or a page as the application shows it needs LibreOffice, which
is not a dependency, so the model gets each part's text and its embedded pictures. Runs in a media worker process
(``bot.media.pool``), within its memory and time limits. The XML is parsed by lxml (python-docx, python-pptx) and
expat (openpyxl, relationships), which resolve no external entities and cap entity expansion (libxml2; expat from
2.4.1 on); defusedxml is deliberately not installed: openpyxl would parse through its pure-Python handlers,
several times slower on a long sheet.
"""

from __future__ import annotations

import io
import logging
import posixpath
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any
from xml.etree import ElementTree

from bot.errors import DocumentRejected
from bot.i18n import note
from bot.media.packages import checked_package, without_macros
from bot.media.parts import DocumentText, PartCollector, add_sections, markdown_table, numbered
from bot.media.wording import named, subject
from bot.settings import ImageSettings

logger = logging.getLogger(__name__)

WHAT = {"docx": note("kind.word"), "xlsx": note("kind.excel"), "pptx": note("kind.powerpoint")}
"""What each format is called in sentences (``bot.i18n`` Notes)."""
_BLIP = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
_EMBED = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_SHEET = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}sheet"
_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
MAX_HEADING_CHARS = 60


def read_office(data: bytes, fmt: str, *, name: str, settings: ImageSettings, deadline: float) -> DocumentText:
    """The parts of a ``docx``, ``xlsx`` or ``pptx`` file; raises a ``DocumentRejected`` with a sentence."""
    what = WHAT[fmt]
    package = checked_package(data, name=name, what=what, settings=settings)
    source: Any = without_macros(package) or _stream(data)
    reader = {"docx": _read_docx, "xlsx": _read_xlsx, "pptx": _read_pptx}[fmt]
    try:
        return reader(source, package, name=name, settings=settings, deadline=deadline)
    except DocumentRejected:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, zipfile.BadZipFile, SyntaxError) as exc:
        # The libraries raise these on parts that are missing or malformed (lxml's errors are SyntaxErrors).
        logger.info("office file could not be read (%s): %s", fmt, type(exc).__name__)
        raise DocumentRejected(
            key="media.office_unreadable", detail=f"{fmt}: {type(exc).__name__}", what=what, named=named(name)
        ) from exc


def _stream(data: bytes) -> Any:
    return io.BytesIO(data)


# ---------------------------------------------------------------------------------------------- Word


def _read_docx(
    source: Any, package: zipfile.ZipFile, *, name: str, settings: ImageSettings, deadline: float
) -> DocumentText:
    """Sections under headings, each with its paragraphs, tables (Markdown) and pasted pictures."""
    import docx
    from docx.table import Table

    document = docx.Document(source)
    related = document.part.related_parts
    collector = PartCollector(name, settings, deadline)
    sections: list[tuple[str, str, list[bytes]]] = []
    heading, lines, pictures = "", [], []
    limit = max(1, settings.doc_max_parts) * 4  # blocks read at most, however short the sections

    def close() -> None:
        if lines or pictures or heading:
            sections.append((heading, "\n".join(lines), list(pictures)))

    for count, block in enumerate(document.iter_inner_content()):
        if count >= limit or (sections and time.monotonic() >= deadline):
            collector.stop(note("note.doc_beginning", subject=subject(name, "document", capital=True)))
            break
        if isinstance(block, Table):
            lines.append(markdown_table([cell.text for cell in row.cells] for row in block.rows))
            continue
        style = _style_name(block)
        text = block.text.strip()
        if text and (style.startswith("Heading") or style == "Title"):
            close()
            heading, lines, pictures = _short(text), [_markdown_heading(style, text)], []
            continue
        if text:
            lines.append(f"- {text}" if "List" in style else text)
        for element in block._element.iter(_BLIP):
            part = related.get(element.get(_EMBED) or "")
            blob = getattr(part, "blob", None)
            if blob:
                pictures.append(blob)
    close()
    add_sections(collector, sections)
    return collector.result(WHAT["docx"])


def _style_name(paragraph: Any) -> str:
    try:
        return str(paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError, AttributeError):
        return ""


def _markdown_heading(style: str, text: str) -> str:
    level = style.removeprefix("Heading").strip()
    depth = int(level) if level.isdigit() else 1
    return "#" * min(6, max(1, depth)) + " " + text


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_HEADING_CHARS else text[: MAX_HEADING_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------------------- PowerPoint


def _read_pptx(
    source: Any, package: zipfile.ZipFile, *, name: str, settings: ImageSettings, deadline: float
) -> DocumentText:
    """One part per slide: its title, text, tables, speaker notes and pictures."""
    from pptx import Presentation

    presentation = Presentation(source)
    collector = PartCollector(name, settings, deadline)
    for number, slide in enumerate(presentation.slides, start=1):
        lines: list[str] = []
        pictures: list[bytes] = []
        for shape in _shapes(slide.shapes):
            _read_shape(shape, lines, pictures)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                lines.append(f"Speaker notes: {notes.text.strip()}")
        if not collector.add(note("label.slide", n=number), "\n".join(lines), pictures):
            break
    return collector.result(WHAT["pptx"])


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, inside groups too, in the slide's order."""
    for shape in shapes:
        if getattr(shape, "shapes", None) is not None and shape.shape_type is not None and shape.shape_type == 6:
            yield from _shapes(shape.shapes)  # MSO_SHAPE_TYPE.GROUP
        else:
            yield shape


def _read_shape(shape: Any, lines: list[str], pictures: list[bytes]) -> None:
    if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
        lines.append(shape.text_frame.text.strip())
    if getattr(shape, "has_table", False):
        lines.append(markdown_table([cell.text for cell in row.cells] for row in shape.table.rows))
    try:
        image = getattr(shape, "image", None)
    except (ValueError, KeyError, AttributeError):  # a placeholder without a picture, a linked picture
        image = None
    if image is not None and image.blob:
        pictures.append(image.blob)


# ---------------------------------------------------------------------------------------------- Excel


def _read_xlsx(
    source: Any, package: zipfile.ZipFile, *, name: str, settings: ImageSettings, deadline: float
) -> DocumentText:
    """Blocks of ``doc_sheet_rows_per_part`` rows per sheet, each a Markdown table under the sheet's header row.

    Rows are streamed (openpyxl read-only), cached formula values read, and reading stops at ``doc_max_cells``.
    """
    import openpyxl

    workbook = openpyxl.load_workbook(source, read_only=True, data_only=True, keep_vba=False, keep_links=False)
    pictures = _sheet_pictures(package)
    collector = PartCollector(name, settings, deadline)
    cells = [0]
    try:
        for sheet in workbook.worksheets:
            sheet.reset_dimensions()  # the declared size may be hostile: never pad rows to it
            if not _read_sheet(sheet, collector, cells, pictures.get(sheet.title, [])):
                break
    finally:
        workbook.close()
    return collector.result(WHAT["xlsx"])


def _read_sheet(sheet: Any, collector: PartCollector, cells: list[int], pictures: Sequence[bytes]) -> bool:
    """Add the sheet's blocks; False once the reader is to stop (cell cap, part cap, deadline)."""
    from openpyxl.utils import get_column_letter

    settings = collector.settings
    per_part = max(1, settings.doc_sheet_rows_per_part)
    max_cells = max(1, settings.doc_max_cells)
    header: list[object] | None = None
    header_row = 0
    block: list[tuple[int, tuple[object, ...]]] = []
    first_block = True

    def flush() -> bool:
        nonlocal first_block, block
        rows = [(n, row) for n, row in block if any(v not in (None, "") for v in row)]
        start, end = block[0][0], block[-1][0]
        block = []
        if not rows:
            return True
        width = max(len(row) for _, row in rows)
        table = [["Row", *(header or [get_column_letter(i + 1) for i in range(width)])]]
        table += [[n, *row] for n, row in rows if n != header_row]
        text = f"Sheet {sheet.title}, cells A{start}:{get_column_letter(max(1, width))}{end}\n" + markdown_table(table)
        shown = pictures if first_block else ()
        first_block = False
        return collector.add(numbered("sheet_row", start, end, sheet=sheet.title), text, shown)

    for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
        cells[0] += max(1, len(row))
        if cells[0] > max_cells:
            flush_ok = flush() if block else True
            return flush_ok and collector.stop(note(
                "note.sheet_cells", subject=subject(collector.name, "workbook", capital=True), limit=max_cells,
                row=number - 1, sheet=sheet.title,
            ))
        if header is None and any(v not in (None, "") for v in row):
            header, header_row = list(row), number
        block.append((number, row))
        if len(block) >= per_part and not flush():
            return False
    return flush() if block else True


def _sheet_pictures(package: zipfile.ZipFile) -> dict[str, list[bytes]]:
    """Pictures drawn on each sheet (sheet name → image bytes), following the package's relationships."""
    found: dict[str, list[bytes]] = {}
    try:
        workbook = ElementTree.fromstring(package.read("xl/workbook.xml"))
        targets = _relationships(package, "xl/workbook.xml")
        for sheet in workbook.iter(_SHEET):
            path = targets.get(sheet.get(_REL_ID) or "")
            if not path:
                continue
            for drawing in _relationships(package, path).values():
                for media in _relationships(package, drawing).values():
                    if media.startswith("xl/media/"):
                        found.setdefault(sheet.get("name") or "", []).append(package.read(media))
    except (KeyError, ElementTree.ParseError, ValueError) as exc:
        logger.info("workbook pictures could not be followed: %s", type(exc).__name__)
    return found


def _relationships(package: zipfile.ZipFile, part: str) -> dict[str, str]:
    """Relationship id → target path of a part (missing relationships: none)."""
    folder, file = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", file + ".rels")
    try:
        root = ElementTree.fromstring(package.read(rels))
    except KeyError:
        return {}
    targets = {}
    for rel in root.iter(_REL):
        target = rel.get("Target") or ""
        if rel.get("TargetMode") == "External" or not target:
            continue
        path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
        targets[rel.get("Id") or ""] = path
    return targets
