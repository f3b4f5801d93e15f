"""The Redis client library (an optional dependency) and the base of the store's parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("PEEKBOT_STORE_URL=redis://… needs the Redis client: pip install 'peekbot[redis]'") from exc

if TYPE_CHECKING:
    from bot.store.redis.store import RedisStore

__all__ = ["RedisError", "RedisPart", "StoreUnavailable", "aioredis"]


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached or refused the connection."""


class RedisPart:
    """Shared access to the open client for the store's parts."""

    def __init__(self, owner: RedisStore) -> None:
        self._owner = owner
        self._keys = owner.keys

    @property
    def _redis(self) -> aioredis.Redis:
        return self._owner.client
