"""How replies and notes name a file and its sizes (shared by the image and PDF readers)."""

from __future__ import annotations

import re

from bot.fmt import size_text as size_text  # the readers' sizes read like every other reply's


def clean_name(name: str) -> str:
    """A file name safe to show and to put in a prompt: no path, no control characters, bounded length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]+", " ", name).strip()
    return name if len(name) <= 80 else name[:60] + "…" + name[-19:]


def named(name: str) -> str:
    """The " (shot.png)" that follows "This image"; "" when the file has no name."""
    return f" ({name})" if name else ""


def subject(name: str, what: str, *, capital: bool = False) -> str:
    """How a note refers to the file: its name, else "the image" / "The PDF"."""
    if name:
        return name
    return f"The {what}" if capital else f"the {what}"


def megapixels(pixels: int) -> str:
    amount = f"{pixels / 1_000_000:.3g}"
    return f"{amount} megapixel" if amount == "1" else f"{amount} megapixels"


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
