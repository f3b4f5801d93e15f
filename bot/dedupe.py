"""Remembers which events and messages were already accepted, for a bounded time."""

from __future__ import annotations

import time
from collections import OrderedDict


class SeenKeys:
    """A TTL set with a size bound. ``add`` returns False when the key was already there."""

    def __init__(self, ttl_s: float = 24 * 3600, max_keys: int = 200_000) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._keys: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        expires = self._keys.get(key)
        return expires is not None and expires > time.monotonic()

    def add(self, key: str) -> bool:
        now = time.monotonic()
        if key in self:
            return False
        self._keys[key] = now + self._ttl_s
        self._keys.move_to_end(key)
        self.expire(now)
        return True

    def expire(self, now: float | None = None) -> int:
        """Drop expired keys (and the oldest beyond the size bound); returns how many were dropped."""
        now = time.monotonic() if now is None else now
        dropped = 0
        while self._keys:
            key, expires = next(iter(self._keys.items()))
            if expires > now and len(self._keys) <= self._max_keys:
                break
            del self._keys[key]
            dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._keys)
