"""Per-channel instructions in Redis, shared by every replica."""

from __future__ import annotations

import time

from bot.store.base import ChannelInstructions
from bot.store.redis.client import RedisPart


class RedisInstructions(RedisPart):
    """``instructions:<channel>``: a hash of the text, who set it and when; no TTL (kept until cleared)."""

    async def get_instructions(self, channel: str) -> ChannelInstructions | None:
        fields = await self._redis.hgetall(self._keys.instructions(channel))
        if not fields or "text" not in fields:
            return None
        return ChannelInstructions(
            channel=channel,
            text=str(fields["text"]),
            set_by=str(fields.get("set_by", "")),
            set_at=float(fields.get("set_at") or 0.0),
        )

    async def set_instructions(self, channel: str, text: str, set_by: str) -> ChannelInstructions:
        stored = ChannelInstructions(channel=channel, text=text, set_by=set_by, set_at=time.time())
        key = self._keys.instructions(channel)
        async with self._redis.pipeline(transaction=True) as pipe:  # replace the whole hash at once
            pipe.delete(key)
            pipe.hset(key, mapping={"text": text, "set_by": set_by, "set_at": repr(stored.set_at)})
            await pipe.execute()
        return stored

    async def clear_instructions(self, channel: str) -> bool:
        return bool(await self._redis.delete(self._keys.instructions(channel)))
