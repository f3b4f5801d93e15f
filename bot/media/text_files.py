"""Text files to searchable parts: Markdown and HTML by section, CSV by blocks of rows, logs and source by lines.

The encoding is the byte-order mark's, else UTF-8, else what charset-normalizer finds (GBK, Shift-JIS, cp1252 …).
HTML goes through lxml's HTML parser (no scripts run, no entities defined by the file): headings start sections,
tables become Markdown. Runs in a media worker process like every other reader.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from typing import Any

from bot.errors import DocumentRejected
from bot.i18n import Said, note
from bot.media.parts import DocumentText, PartCollector, add_sections, markdown_table, numbered
from bot.media.wording import named, subject
from bot.settings import ImageSettings

WHAT = {fmt: note(f"kind.{fmt}") for fmt in ("csv", "html", "markdown", "text")}
"""What each format is called in sentences (``bot.i18n`` Notes)."""
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_DROPPED_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")
_MARK = "\ue000"  # a private-use character marks where a heading starts


def decode_text(data: bytes, *, name: str = "", what: Said = WHAT["text"]) -> str:
    """The file's text; raises ``DocumentRejected`` when it is not text in any encoding found."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 256 * 1024]).best()
    if best is None or "\x00" in data[:8192].decode(best.encoding, errors="replace"):
        raise DocumentRejected(
            key="media.text_encoding", detail="text: no encoding found", what=what, named=named(name)
        )
    return data.decode(best.encoding, errors="replace")


def read_text_file(data: bytes, fmt: str, *, name: str, settings: ImageSettings, deadline: float) -> DocumentText:
    """The parts of a ``csv``, ``html``, ``markdown`` or ``text`` (logs, source, notes) file."""
    what = WHAT[fmt]
    text = decode_text(data, name=name, what=what).replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "csv":
        collector = PartCollector(name, settings, deadline)
        _add_rows(collector, text)
    elif fmt == "html":
        collector = PartCollector(name, settings, deadline)
        add_sections(collector, _html_sections(text))
    elif fmt == "markdown":
        collector = PartCollector(name, settings, deadline)
        add_sections(collector, _markdown_sections(text))
    else:
        collector = PartCollector(name, settings, deadline)
        _add_lines(collector, text)
    return collector.result(what)


def _add_lines(collector: PartCollector, text: str) -> None:
    """Pieces of about ``doc_text_chars_per_part`` characters at line ends, named by their lines ("lines 121–240")."""
    size = max(200, collector.settings.doc_text_chars_per_part)
    first, lines, length = 1, [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        if lines and length + len(line) > size:
            if not _add_piece(collector, first, number - 1, lines):
                return
            first, lines, length = number, [], 0
        lines.append(line[:size])
        length += min(len(line), size) + 1
    _add_piece(collector, first, first + len(lines) - 1, lines)


def _add_piece(collector: PartCollector, first: int, last: int, lines: list[str]) -> bool:
    piece = "\n".join(lines)
    if not piece.strip():
        return True
    return collector.add(numbered("line", first, last), piece)


def _add_rows(collector: PartCollector, text: str) -> None:
    """Blocks of ``doc_sheet_rows_per_part`` rows under the header row, like a sheet's."""
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    per_part = max(1, collector.settings.doc_sheet_rows_per_part)
    max_cells = max(1, collector.settings.doc_max_cells)
    cells = 0
    header: list[str] | None = None
    block: list[tuple[int, list[str]]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text), dialect), start=1):
        cells += max(1, len(row))
        if cells > max_cells:
            _flush_rows(collector, header, block)
            the_file = subject(collector.name, "file", capital=True)
            collector.stop(note("note.csv_cells", subject=the_file, limit=max_cells, rows=number - 1))
            return
        if header is None:
            header = row
            continue
        block.append((number, row))
        if len(block) >= per_part and not _flush_rows(collector, header, block):
            return
        if len(block) >= per_part:
            block = []
    _flush_rows(collector, header, block)
    if header is not None and not collector.parts:
        collector.add(note("label.row", first=1), markdown_table([header]))


def _flush_rows(collector: PartCollector, header: list[str] | None, block: list[tuple[int, list[str]]]) -> bool:
    if not block:
        return True
    start, end = block[0][0], block[-1][0]
    table = markdown_table([["Row", *(header or [])], *([n, *row] for n, row in block)])
    return collector.add(numbered("row", start, end), table)


def _markdown_sections(text: str) -> Iterator[tuple[str, str, tuple[bytes, ...]]]:
    """(heading, text) under each ``#`` heading outside code fences; the text before the first is untitled."""
    heading, lines, fenced = "", [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _MD_HEADING.match(line)
        if match:
            if heading or any(x.strip() for x in lines):
                yield heading, "\n".join(lines), ()
            heading, lines = " ".join(match.group(2).split())[:60], [line]
            continue
        lines.append(line)
    if heading or any(x.strip() for x in lines):
        yield heading, "\n".join(lines), ()


def _html_sections(text: str) -> Iterator[tuple[str, str, tuple[bytes, ...]]]:
    """The page's visible text cut at its headings; tables as Markdown."""
    import lxml.html
    from lxml import etree

    if not text.strip():
        return
    try:
        root = lxml.html.document_fromstring(text.replace(_MARK, ""))
    except (etree.ParserError, ValueError):
        return
    for element in list(root.iter(*_DROPPED_TAGS)):
        element.drop_tree()
    for table in list(root.iter("table")):
        rows = [[cell.text_content() for cell in row.iter("td", "th")] for row in table.iter("tr")]
        replacement = etree.Element("pre")
        replacement.text = "\n" + markdown_table(rows) + "\n"
        replacement.tail = table.tail
        table.getparent().replace(table, replacement)
    for element in root.iter(*_HEADING_TAGS):
        title = " ".join(element.text_content().split())
        for child in list(element):
            element.remove(child)
        element.text = f"\n{_MARK}{title}\n"
    for element in root.iter("br", "p", "div", "li", "tr", "section", "article"):
        element.tail = "\n" + (element.tail or "")
    body = root.text_content()
    chunks = body.split(_MARK)
    yield "", chunks[0], ()
    for chunk in chunks[1:]:
        title, _, rest = chunk.partition("\n")
        yield title[:60], f"# {title}\n{rest}", ()
