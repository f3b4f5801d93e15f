"""Files read as text: the parts they are cut into (slides, sheet blocks, sections, pages of text), and helpers.

Shared by the Office readers (``bot.media.office``) and the text readers (``bot.media.text_files``). Every type
here pickles, so a worker process can hand its results back. Embedded pictures travel as the bytes found in the file:
only the ones a question is sent are decoded (by ``bot.media.images``, in a worker like any image).
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.errors import DocumentRejected
from bot.i18n import CATALOGUE, Note, Said, note
from bot.media.wording import named, subject
from bot.settings import ImageSettings

MAX_CELL_CHARS = 200
"""A table cell longer than this is cut (a pasted log in one cell must not fill the prompt)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One searchable part of a file: its number (1-based), how the answer names it, its text and its pictures."""

    number: int
    label: Said
    """In the file's own terms: ``slide 17``, ``sheet Q3, rows 481–520``, ``section 'Rollback'``, ``page 3`` (a
    ``label.*`` Note, said in the asker's language; a plain string when read back from an old index row)."""
    text: str
    pictures: tuple[bytes, ...] = ()
    """Embedded pictures (PNG, JPEG …) as stored in the file, in reading order."""


@dataclass(frozen=True, slots=True)
class DocumentText:
    """A file read as text: its parts, what it is (``Word document``) and notes for the person who sent it."""

    name: str
    what: Said
    parts: tuple[Part, ...]
    notes: tuple[Said, ...] = ()
    complete: bool = True
    """False when reading stopped at the deadline: a later question reads it again, further (caps stop it at the
    same place every time, so a file cut by them is complete as read)."""

    @property
    def text_chars(self) -> int:
        return sum(len(part.text) for part in self.parts)

    @property
    def picture_count(self) -> int:
        return sum(len(part.pictures) for part in self.parts)


@dataclass(slots=True)
class PartCollector:
    """Collects parts up to ``doc_max_parts`` and the deadline; says in a note where it stopped."""

    name: str
    settings: ImageSettings
    deadline: float
    parts: list[Part] = field(default_factory=list)
    notes: list[Said] = field(default_factory=list)
    stopped: bool = False
    out_of_time: bool = False

    def add(self, label: Said, text: str, pictures: Sequence[bytes] = ()) -> bool:
        """Add a part; False (and a note) once no more may be added, so the reader stops."""
        if self.stopped:
            return False
        if len(self.parts) >= max(1, self.settings.doc_max_parts):
            return self.stop(note("note.doc_longer", subject=self._the_file, last=self._last))
        if self.parts and time.monotonic() >= self.deadline:  # the first part is always read
            self.out_of_time = True
            return self.stop(note("note.doc_too_slow", subject=self._the_file, last=self._last))
        self.parts.append(Part(len(self.parts) + 1, label, text.strip(), tuple(pictures)))
        return True

    def stop(self, said: Said) -> bool:
        if not self.stopped:
            self.notes.append(said)
        self.stopped = True
        return False

    @property
    def _last(self) -> Said:
        return self.parts[-1].label if self.parts else note("label.its_start")

    @property
    def _the_file(self) -> Note:
        return subject(self.name, "file", capital=True)

    def result(self, what: Said) -> DocumentText:
        if not self.parts:
            raise DocumentRejected(
                key="media.doc_nothing", detail=f"{what}: no parts", what=what, named=named(self.name)
            )
        return DocumentText(self.name, what, tuple(self.parts), tuple(self.notes), complete=not self.out_of_time)


_LABELS = (
    "label.slide", "label.sheet_rows", "label.sheet_row", "label.rows", "label.row", "label.lines", "label.line",
    "label.section_piece", "label.section", "label.start_piece", "label.start",
)


def stored_label(text: str) -> Said:
    """A part's label read back from the document index, where it is stored in English (``slide 17``): its Note
    again, so it is said in the asker's language; a label of another shape stays the text it is."""
    for key in _LABELS:
        match = _label_pattern(key).fullmatch(text)
        if match:
            return note(key, **match.groupdict())
    return text


@functools.cache
def _label_pattern(key: str) -> re.Pattern[str]:
    """The English text of ``key`` as a pattern, each ``{placeholder}`` a named group."""
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(CATALOGUE[key]["en"]):
        pattern += re.escape(literal) + (f"(?P<{name}>.+?)" if name else "")
    return re.compile(pattern)


def numbered(word: str, first: int, last: int, **values: object) -> Note:
    """ "rows 481–520", or "row 7" for one: the label ``label.<word>s`` or ``label.<word>`` with ``values``."""
    if last > first:
        return note(f"label.{word}s", first=first, last=last, **values)
    return note(f"label.{word}", first=first, **values)


def cell_text(value: object) -> str:
    """A table cell as one line of Markdown: no pipes or line breaks, bounded length."""
    if value is None:
        return ""
    text = str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def markdown_table(rows: Iterable[Sequence[object]]) -> str:
    """Rows as a Markdown table, the first row as its header; ragged rows are padded."""
    cells = [[cell_text(value) for value in row] for row in rows]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    if width == 0:
        return ""
    lines = []
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(row + [""] * (width - len(row))) + " |")
        if index == 0:
            lines.append("|" + " --- |" * width)
    return "\n".join(lines)


def split_text(text: str, size: int) -> list[str]:
    """Cut text into pieces of at most about ``size`` characters, at line ends where possible."""
    size = max(200, size)
    pieces: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines():
        while len(line) > size:  # one very long line: cut it
            if current:
                pieces.append("\n".join(current))
                current, length = [], 0
            pieces.append(line[:size])
            line = line[size:]
        if length + len(line) + 1 > size and current:
            pieces.append("\n".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line) + 1
    if current:
        pieces.append("\n".join(current))
    return [piece for piece in pieces if piece.strip()] or ([text[:size]] if text.strip() else [])


def add_sections(collector: PartCollector, sections: Iterable[tuple[str, str, Sequence[bytes]]]) -> None:
    """Add (heading, text, pictures) sections, each cut to ``doc_text_chars_per_part``; "" is the untitled start."""
    size = collector.settings.doc_text_chars_per_part
    for heading, text, pictures in sections:
        pieces = split_text(text, size) if text.strip() else [""]
        for index, piece in enumerate(pieces, start=1):
            section = ("label.section", {"heading": heading}) if heading else ("label.start", {})
            if len(pieces) > 1:
                label = note(f"{section[0]}_piece", index=index, count=len(pieces), **section[1])
            else:
                label = note(section[0], **section[1])
            if not piece.strip() and not pictures:
                continue
            if not collector.add(label, piece, pictures if index == 1 else ()):
                return
