"""Key names under one prefix (the layout is in the package's docstring) and TTLs in Redis' milliseconds."""

from __future__ import annotations


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds ``PX`` and ``PEXPIRE`` take (at least 1)."""
    return max(1, round(seconds * 1000))


class KeyLayout:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.job_prefix = f"{prefix}job:"
        self.unfinished = f"{prefix}jobs:unfinished"
        self.finished = f"{prefix}jobs:finished"
        self.conversations = f"{prefix}conversations"
        self.ratings = f"{prefix}ratings"
        self.ratings_by_time = f"{prefix}ratings:by-time"

    def dedupe(self, key: str) -> str:
        return f"{self.prefix}dedupe:{key}"

    def control(self, name: str) -> str:
        return f"{self.prefix}control:{name}"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}bucket:{name}"

    def instructions(self, channel: str) -> str:
        return f"{self.prefix}instructions:{channel}"

    def asked(self, user: str) -> str:
        return f"{self.prefix}asked:{user}"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    def turns(self, conversation: str) -> str:
        return f"{self.prefix}conv:{conversation}:turns"

    def files(self, conversation: str) -> str:
        return f"{self.prefix}conv:{conversation}:files"

    def answer_index(self, conversation: str) -> str:
        return f"{self.prefix}conv:{conversation}:answers"

    def answer(self, conversation: str, key: str) -> str:
        return f"{self.prefix}conv:{conversation}:answer:{key}"
