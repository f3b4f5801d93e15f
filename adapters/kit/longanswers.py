"""When a final answer goes out as a file instead of many messages, and the short message that comes with it.

The rule, the same on every platform: an answer that would take more than ``max_messages`` chat messages, or that
holds a Markdown table row wider than ``table_chars`` (chat clients wrap such tables into unreadable lines), is
posted as ``answer.md`` with a summary in the message — its opening lines, up to the first table or code block —
and a sentence saying where the rest is. ``StreamingReply`` applies it where the platform's ``Surface`` can post
files (``posts_files``); an error sentence is never a file.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.kit.text import ELLIPSIS, FENCE, split_text
from bot.i18n import say
from bot.settings import CoreSettings

__all__ = ["ANSWER_FILE_NAME", "LongAnswers", "file_summary", "widest_table_row"]

ANSWER_FILE_NAME = "answer.md"
SUMMARY_CHARS = 600
"""The longest summary shown in the message (less where the platform's message is smaller)."""
MIN_SUMMARY_CHARS = 40
"""Below this much room the message holds only the sentence saying where the answer is."""


@dataclass(frozen=True, slots=True)
class LongAnswers:
    """The rule: more than ``max_messages`` messages (0: never a file), or a table row wider than ``table_chars``
    (0: tables do not count)."""

    max_messages: int = 3
    table_chars: int = 120

    @classmethod
    def from_settings(cls, core: CoreSettings) -> LongAnswers:
        """``PEEKBOT_ANSWER_FILE_AFTER_MESSAGES`` and ``PEEKBOT_ANSWER_FILE_TABLE_CHARS``."""
        return cls(max_messages=core.answer_file_after_messages, table_chars=core.answer_file_table_chars)

    def as_file(self, text: str, messages: int) -> bool:
        """True when ``text``, which would take ``messages`` chat messages, should go out as a file."""
        if self.max_messages <= 0:
            return False
        if messages > self.max_messages:
            return True
        return self.table_chars > 0 and widest_table_row(text) > self.table_chars


def widest_table_row(text: str) -> int:
    """The length of the longest Markdown table row (a line that starts and ends with ``|``), 0 without a table."""
    rows = (line.strip() for line in text.splitlines())
    return max((len(row) for row in rows if len(row) > 1 and row.startswith("|") and row.endswith("|")), default=0)


def file_summary(text: str, limit: int, lang: str = "en") -> str:
    """The message that comes with the file: the answer's opening (up to its first table or code block, within
    ``limit`` characters) and where the rest is (in ``lang``, ``bot.i18n``)."""
    note = "_" + say("answer.in_file", lang, length=len(text.strip()), name=ANSWER_FILE_NAME) + "_"
    opening: list[str] = []
    for line in text.strip().splitlines():
        row = line.strip()
        if row.startswith(FENCE) or (row.startswith("|") and row.endswith("|") and len(row) > 1):
            break
        opening.append(line)
    budget = min(SUMMARY_CHARS, limit - len(note) - 2)
    pieces = split_text("\n".join(opening), budget) if budget >= MIN_SUMMARY_CHARS else []
    if not pieces:
        return note
    lead = pieces[0] if len(pieces) == 1 else pieces[0][: budget - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return f"{lead}\n\n{note}"
