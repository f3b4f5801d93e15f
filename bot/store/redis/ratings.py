"""Ratings of answers in Redis, shared by every replica: one entry per person per answer, no content.

``ratings`` is a hash from a rating's id (its job and user) to the rating as JSON; ``ratings:by-time`` scores the
same ids by the time they were given, for the summaries and for expiry.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bot.store.base import Rating
from bot.store.redis import scripts
from bot.store.redis.client import RedisPart

if TYPE_CHECKING:
    from bot.store.redis.store import RedisStore


class RedisRatings(RedisPart):
    """One entry per (job, user) in a hash, scored by time in a sorted set; a later rating replaces the earlier."""

    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._rate = owner.register(scripts.RATE)
        self._expire = owner.register(scripts.EXPIRE_RATINGS)

    async def rate(self, rating: Rating) -> str | None:
        created_at = rating.created_at or await self._now()
        record = {
            "job_id": rating.job_id,
            "platform": rating.platform,
            "user": rating.user,
            "rating": rating.rating,
            "reason": rating.reason,
            "created_at": created_at,
        }
        replaced = await self._rate(
            keys=[self._keys.ratings, self._keys.ratings_by_time],
            args=[json.dumps([rating.job_id, rating.user]), json.dumps(record), repr(created_at)],
        )
        return None if replaced is None else str(replaced)

    async def ratings(self, since: float) -> list[Rating]:
        ids = await self._redis.zrangebyscore(self._keys.ratings_by_time, repr(since), "+inf")
        if not ids:
            return []
        found: list[Rating] = []
        for raw in await self._redis.hmget(self._keys.ratings, ids):
            if raw is None:
                continue  # expired between the two reads
            data = json.loads(raw)
            found.append(
                Rating(
                    job_id=str(data["job_id"]),
                    platform=str(data.get("platform", "")),
                    user=str(data.get("user", "")),
                    rating=str(data.get("rating", "")),
                    reason=str(data.get("reason", "")),
                    created_at=float(data.get("created_at") or 0.0),
                )
            )
        return found

    async def expire_ratings(self, older_than_s: float) -> int:
        cutoff = await self._now() - older_than_s
        return int(await self._expire(keys=[self._keys.ratings, self._keys.ratings_by_time], args=[repr(cutoff)]))

    async def _now(self) -> float:
        """The server's clock, so replicas on different hosts order ratings alike."""
        seconds, micros = await self._redis.time()
        return float(seconds) + float(micros) / 1_000_000
