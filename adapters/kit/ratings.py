"""What every platform's rating buttons share: the "what was wrong?" choices offered after a 👎.

The reason recorded (``AnswerAction.reason``) is the same word on every platform, so ``/stats`` counts them together.
"""

from __future__ import annotations

from bot.i18n import CATALOGUE, say

REASON_WORDS = ("wrong", "incomplete", "missed_file", "other")
"""The reasons recorded, in the order shown; each one's button text is the ``bot.i18n`` key ``reason.<word>``."""
REASONS = tuple((reason, say(f"reason.{reason}")) for reason in REASON_WORDS)
"""(reason recorded, English button text), in the order shown."""


def reasons(lang: str = "en") -> tuple[tuple[str, str], ...]:
    """(reason recorded, button text in ``lang``), in the order shown."""
    return tuple((reason, say(f"reason.{reason}", lang)) for reason in REASON_WORDS)


def reason_text(reason: str, lang: str = "en") -> str:
    """The button text of ``reason`` in ``lang`` (the reason itself when it is not one of ``REASONS``)."""
    key = f"reason.{reason}"
    return say(key, lang) if key in CATALOGUE else reason
