"""The pause flag and the rate-limit token buckets in Redis, shared by every replica."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.store.redis import scripts
from bot.store.redis.client import RedisPart
from bot.store.redis.keys import ms

if TYPE_CHECKING:
    from bot.store.redis.store import RedisStore


class RedisControls(RedisPart):
    """The pause flag and the rate-limit buckets, shared by every replica (``control:<name>``, ``bucket:<name>``)."""

    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._take = owner.register(scripts.TAKE_TOKEN)

    async def get(self, name: str) -> str | None:
        value = await self._redis.get(self._keys.control(name))
        return None if value is None else str(value)

    async def put(self, name: str, value: str | None, ttl_s: float | None = None) -> None:
        if value is None:
            await self._redis.delete(self._keys.control(name))
        else:
            await self._redis.set(self._keys.control(name), value, px=None if ttl_s is None else ms(ttl_s))

    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float:
        if rate_per_s <= 0:
            return 0.0
        wait = await self._take(keys=[self._keys.bucket(bucket)], args=[repr(float(rate_per_s)), max(int(burst), 1)])
        return float(wait)
