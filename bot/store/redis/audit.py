"""The audit log with Redis: records stay in the replica's local file; the per-user question count is shared."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bot.store.base import AuditRecord, AuditSummary
from bot.store.redis.client import RedisPart


class RedisAudit(RedisPart):
    """Audit records stay in the replica's local file; the per-user question count (daily quota) is shared.

    Each answered (or cached) question adds its job id to ``asked:<user>``, a sorted set scored by time and trimmed
    to the last two days, so ``count_for_user`` sees every replica's answers and a quota holds across replicas.
    """

    COUNTED = ("answered", "cached")
    WINDOW_S = 2 * 24 * 3600.0

    async def record(self, record: AuditRecord) -> None:
        await self._owner.local.audit.record(record)
        if record.outcome not in self.COUNTED:
            return
        key = self._keys.asked(record.user)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {record.job_id: record.created_at})
            pipe.zremrangebyscore(key, "-inf", record.created_at - self.WINDOW_S)
            pipe.expire(key, int(self.WINDOW_S))
            await pipe.execute()

    async def summary(self, since: float, top: int = 5) -> AuditSummary:
        return await self._owner.local.audit.summary(since, top)

    async def count_for_user(self, user: str, since: float, outcomes: Sequence[str] = COUNTED) -> int:
        if tuple(outcomes) != self.COUNTED or since < time.time() - self.WINDOW_S:
            return await self._owner.local.audit.count_for_user(user, since, outcomes)
        return int(await self._redis.zcount(self._keys.asked(user), since, "+inf"))

    async def expire_audit(self, older_than_s: float) -> int:
        return await self._owner.local.audit.expire_audit(older_than_s)
