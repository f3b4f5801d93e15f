"""How replies and notes name a file and its sizes (shared by the media readers), as ``bot.i18n`` Notes: a
worker process cannot know the asker's language, so the phrases are said when the answer is composed."""

from __future__ import annotations

import re

from bot import fmt
from bot.i18n import Note, Said, note

_SUBJECTS = {"image": "image", "PDF": "pdf", "file": "file", "document": "document", "workbook": "workbook"}


def size_text(num_bytes: float) -> Said:
    """A file's size as people read it (``bot.fmt.size_text``); "900 bytes" is a Note (the unit is a word)."""
    return note("unit.bytes", n=f"{num_bytes:.0f}") if num_bytes < 1024 else fmt.size_text(num_bytes)


def clean_name(name: str) -> str:
    """A file name safe to show and to put in a prompt: no path, no control characters, bounded length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]+", " ", name).strip()
    return name if len(name) <= 80 else name[:60] + "…" + name[-19:]


def named(name: str) -> str:
    """The " (shot.png)" that follows "This image"; "" when the file has no name."""
    return f" ({name})" if name else ""


def subject(name: str, what: str, *, capital: bool = False) -> Note:
    """How a note refers to the file: its name ("图片“x.png”" in Chinese), else "the image" / "The PDF".

    ``what`` is ``image``, ``PDF``, ``file``, ``document`` or ``workbook``; ``capital`` starts a sentence."""
    key = _SUBJECTS[what]
    if name:
        return note(f"subject.named_{'file' if key in ('document', 'workbook') else key}", name=name)
    return note(f"subject.{key}_start" if capital else f"subject.{key}")


def megapixels(pixels: int) -> Note:
    amount = f"{pixels / 1_000_000:.3g}"
    return note("unit.megapixel" if amount == "1" else "unit.megapixels", amount=amount)


def page_ranges(pages: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> "1–3, 5, 7–8"."""
    parts: list[str] = []
    start = previous = pages[0]
    for number in [*pages[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}–{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)
