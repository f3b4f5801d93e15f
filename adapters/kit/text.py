"""Text every platform shows the same way: the progress line, long answers cut into messages, file sizes.

``split_text`` cuts at paragraph, line or word boundaries and never leaves a code block open: a block cut in two is
closed at the end of one piece and reopened at the start of the next, so every piece renders as balanced markdown.
Pieces only give up room for that when a cut falls inside a block.
"""

from __future__ import annotations

from bot.fmt import size_text

__all__ = [
    "ELLIPSIS",
    "FENCE",
    "LOOKING",
    "QUEUED_PREFIX",
    "is_progress_text",
    "progress_text",
    "size_text",
    "split_text",
    "streaming_view",
]

LOOKING = "Looking at it…"
"""The progress line of a question that is being answered."""
QUEUED_PREFIX = "Queued — "
"""How the progress line of a queued question starts."""
ELLIPSIS = "\u2026"
"""Ends a streamed answer cut at the message limit."""
FENCE = "```"
MIN_PIECE = 16
"""The smallest piece ``split_text`` makes, whatever the limit (room for a closing and a reopening fence)."""
_CLOSE = f"\n{FENCE}"
_REOPEN = f"{FENCE}\n"


def progress_text(queue_position: int | None) -> str:
    """``Looking at it…``, or ``Queued — N questions ahead of yours.`` while ``queue_position`` is above 0."""
    if not queue_position:
        return LOOKING
    noun = "question" if queue_position == 1 else "questions"
    return f"{QUEUED_PREFIX}{queue_position} {noun} ahead of yours."


def is_progress_text(text: str) -> bool:
    """True for a text ``progress_text`` makes (a message that still shows no answer)."""
    return text == LOOKING or text.startswith(QUEUED_PREFIX)


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
