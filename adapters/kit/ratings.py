"""What every platform's rating buttons share: the "what was wrong?" choices offered after a 👎.

The reason recorded (``AnswerAction.reason``) is the same word on every platform, so ``/stats`` counts them together.
"""

from __future__ import annotations

REASONS = (
    ("wrong", "It is wrong"),
    ("incomplete", "It is incomplete"),
    ("missed_file", "It did not read the file"),
    ("other", "Something else"),
)
"""(reason recorded, button text), in the order shown."""


def reason_text(reason: str) -> str:
    """The button text of ``reason`` (the reason itself when it is not one of ``REASONS``)."""
    return dict(REASONS).get(reason, reason)
