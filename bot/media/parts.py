"""Files read as text: the parts they are cut into (slides, sheet blocks, sections, pages of text), and helpers.

Shared by the Office readers (``bot.media.office``) and the text readers (``bot.media.text_files``). Every type
here pickles, so a worker process can hand its results back. Embedded pictures travel as the bytes found in the file:
only the ones a question is sent are decoded (by ``bot.media.images``, in a worker like any image).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.errors import DocumentRejected
from bot.media.wording import named
from bot.settings import ImageSettings

MAX_CELL_CHARS = 200
"""A table cell longer than this is cut (a pasted log in one cell must not fill the prompt)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One searchable part of a file: its number (1-based), how the answer names it, its text and its pictures."""

    number: int
    label: str
    """In the file's own terms: ``slide 17``, ``sheet Q3, rows 481–520``, ``section 'Rollback'``, ``page 3``."""
    text: str
    pictures: tuple[bytes, ...] = ()
    """Embedded pictures (PNG, JPEG …) as stored in the file, in reading order."""


@dataclass(frozen=True, slots=True)
class DocumentText:
    """A file read as text: its parts, what it is (``Word document``) and notes for the person who sent it."""

    name: str
    what: str
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = ()
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
    notes: list[str] = field(default_factory=list)
    stopped: bool = False
    out_of_time: bool = False

    def add(self, label: str, text: str, pictures: Sequence[bytes] = ()) -> bool:
        """Add a part; False (and a note) once no more may be added, so the reader stops."""
        if self.stopped:
            return False
        if len(self.parts) >= max(1, self.settings.doc_max_parts):
            return self.stop(f"{self._the_file} is longer than I read: I read it up to {self._last}.")
        if self.parts and time.monotonic() >= self.deadline:  # the first part is always read
            self.out_of_time = True
            return self.stop(f"{self._the_file} took too long to read, so I read it up to {self._last}.")
        self.parts.append(Part(len(self.parts) + 1, label, text.strip(), tuple(pictures)))
        return True

    def stop(self, note: str) -> bool:
        if not self.stopped:
            self.notes.append(note)
        self.stopped = True
        return False

    @property
    def _last(self) -> str:
        return self.parts[-1].label if self.parts else "its start"

    @property
    def _the_file(self) -> str:
        return self.name or "The file"

    def result(self, what: str) -> DocumentText:
        if not self.parts:
            raise DocumentRejected(
                f"I couldn't find anything to read in this {what}{named(self.name)}.", detail=f"{what}: no parts"
            )
        return DocumentText(self.name, what, tuple(self.parts), tuple(self.notes), complete=not self.out_of_time)


def numbered(word: str, first: int, last: int) -> str:
    """ "rows 481–520", or "row 7" for one."""
    return f"{word}s {first}–{last}" if last > first else f"{word} {first}"


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
            label = f"section '{heading}'" if heading else "the start"
            if len(pieces) > 1:
                label += f" (part {index} of {len(pieces)})"
            if not piece.strip() and not pictures:
                continue
            if not collector.add(label, piece, pictures if index == 1 else ()):
                return
