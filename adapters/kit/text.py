"""Text every platform shows the same way: the progress line, long answers cut into messages, file sizes.

``split_text`` cuts at paragraph, line or word boundaries and never leaves a code block open: a block cut in two is
closed at the end of one piece and reopened at the start of the next, so every piece renders as balanced markdown.
Pieces only give up room for that when a cut falls inside a block.
"""

from __future__ import annotations

from bot.fmt import size_text
from bot.i18n import CATALOGUE, say

__all__ = [
    "ELLIPSIS",
    "FENCE",
    "LOOKING",
    "QUEUED_PREFIX",
    "is_looking",
    "is_progress_text",
    "progress_text",
    "size_text",
    "split_text",
    "streaming_view",
]

LOOKING = say("progress.looking")
"""The progress line of a question that is being answered (in English; ``progress_text`` says it in any language)."""
QUEUED_PREFIX = "Queued — "
"""How the English progress line of a queued question starts."""
_LOOKING_TEXTS = frozenset(CATALOGUE["progress.looking"].values())
_QUEUED_PREFIXES = tuple(text.partition(" — ")[0] + " — " for text in CATALOGUE["progress.queued_many"].values())
"""How a queued progress line starts in each language (the catalogue's texts put a dash after the first words)."""
ELLIPSIS = "\u2026"
"""Ends a streamed answer cut at the message limit."""
FENCE = "```"
MIN_PIECE = 16
"""The smallest piece ``split_text`` makes, whatever the limit (room for a closing and a reopening fence)."""
_CLOSE = f"\n{FENCE}"
_REOPEN = f"{FENCE}\n"


def progress_text(queue_position: int | None, lang: str = "en") -> str:
    """``Looking at it…``, or ``Queued — N questions ahead of yours.`` while ``queue_position`` is above 0, in
    ``lang`` (``bot.i18n``)."""
    if not queue_position:
        return say("progress.looking", lang)
    if queue_position == 1:
        return say("progress.queued_one", lang)
    return say("progress.queued_many", lang, position=queue_position)


def is_looking(text: str) -> bool:
    """True for the ``Looking at it…`` line in any language."""
    return text in _LOOKING_TEXTS


def is_progress_text(text: str) -> bool:
    """True for a text ``progress_text`` makes in any language (a message that still shows no answer)."""
    return is_looking(text) or text.startswith(_QUEUED_PREFIXES)


def streaming_view(text: str, limit: int) -> str:
    """What a message shows while the answer streams: a long answer's first ``limit`` characters, cut with an
    ellipsis (the final text is split into messages instead)."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut on paragraph, line or word boundaries where possible.

    A code block cut in two is closed at the end of one piece and reopened at the start of the next. Blank text
    gives no pieces.
    """
    limit = max(limit, MIN_PIECE)
    rest = text.strip()
    pieces: list[str] = []
    while len(rest) > limit:
        piece, after = _cut(rest, limit)
        if piece.count(FENCE) % 2:  # cut inside a code block: close it here, reopen it in the next piece
            piece, after = _cut(rest, limit - len(_CLOSE))
            if piece.count(FENCE) % 2:
                piece += _CLOSE
                after = _REOPEN + after
        if len(after) >= len(rest):  # nothing gained (a run of backticks longer than a piece): cut it as it is
            piece, after = rest[:limit], rest[limit:]
        if piece.strip():
            pieces.append(piece)
        rest = after
    if rest.strip():
        pieces.append(rest)
    return pieces


def _cut(text: str, budget: int) -> tuple[str, str]:
    """The first piece of ``text`` (at most ``budget`` characters) and what is left after it (without the separator
    cut at, so an indented line keeps its indentation)."""
    at, separator = _cut_point(text, budget)
    return text[:at].rstrip(), text[at + len(separator) :].lstrip("\n")


def _cut_point(text: str, budget: int) -> tuple[int, str]:
    floor = budget // 2
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, budget + 1)
        if at >= floor:
            return at, separator
    at = budget
    while at > 0 and text[at - 1] == text[at] == "`":  # never cut a fence in two
        at -= 1
    return at or budget, ""
