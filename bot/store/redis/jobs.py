"""Dedupe keys and the job journal in Redis: what was already seen, and who answers which question.

A job is a hash (``job:<id>``); ``jobs:unfinished`` scores unfinished ids by lease expiry, ``jobs:finished`` scores
finished ids by finish time (and finished jobs get a TTL). Changes that must be atomic run as Lua scripts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.store.base import Job, JobState
from bot.store.redis import scripts
from bot.store.redis.client import RedisPart
from bot.store.redis.keys import ms

if TYPE_CHECKING:
    from bot.store.redis.store import RedisStore

log = logging.getLogger(__name__)


def _job_to_fields(job: Job) -> list[str]:
    fields = {
        "job_id": job.job_id,
        "platform": job.platform,
        "conversation": job.conversation,
        "user": job.user,
        "message": job.message,
        "state": JobState(job.state).value,
        "reply_state": json.dumps(job.reply_state),
        "attempts": str(job.attempts),
        "error": job.error,
    }
    return [item for pair in fields.items() for item in pair]


def _job_from_hash(raw: dict[str, str] | Sequence[str]) -> Job:
    data = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
    return Job(
        job_id=data["job_id"],
        platform=data.get("platform", ""),
        conversation=data.get("conversation", ""),
        user=data.get("user", ""),
        message=data.get("message", ""),
        state=JobState(data.get("state", JobState.ACCEPTED.value)),
        reply_state=json.loads(data.get("reply_state") or "{}"),
        attempts=int(data.get("attempts") or 0),
        owner=data.get("owner", ""),
        lease_until=float(data.get("lease_until") or 0.0),
        created_at=float(data.get("created_at") or 0.0),
        updated_at=float(data.get("updated_at") or 0.0),
        error=data.get("error", ""),
    )


class RedisDedupe(RedisPart):
    """Dedupe keys: ``SET NX PX`` with the caller's TTL."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        return bool(await self._redis.set(self._keys.dedupe(key), "1", nx=True, px=ms(ttl_s)))

    async def expire_keys(self) -> int:
        """Redis forgets expired keys by itself: nothing to do, nothing counted."""
        return 0


class RedisJobJournal(RedisPart):
    """The job journal shared by the replicas; every change of a job's owner or state is one Lua script."""

    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._accept = owner.register(scripts.ACCEPT)
        self._mark = owner.register(scripts.MARK)
        self._renew = owner.register(scripts.RENEW)
        self._take_over = owner.register(scripts.TAKE_OVER)
        self._pending_for = owner.register(scripts.PENDING_FOR)

    async def accept(self, job: Job, owner: str, lease_s: float) -> bool:
        keys = [self._keys.job(job.job_id), self._keys.unfinished, self._keys.finished]
        created = f"{job.created_at:.6f}" if job.created_at else ""
        args = [job.job_id, owner, repr(float(lease_s)), created, ms(self._owner.finished_job_ttl_s)]
        return bool(await self._accept(keys=keys, args=[*args, *_job_to_fields(job)]))

    async def mark(
        self,
        job_id: str,
        state: JobState,
        *,
        owner: str | None = None,
        reply_state: dict[str, str] | None = None,
        error: str = "",
    ) -> bool:
        keys = [self._keys.job(job_id), self._keys.unfinished, self._keys.finished]
        args = [
            job_id,
            JobState(state).value,
            "0" if reply_state is None else "1",
            json.dumps(reply_state or {}),
            error,
            ms(self._owner.finished_job_ttl_s),
            owner or "",
        ]
        if await self._mark(keys=keys, args=args):
            return True
        if owner is None:
            log.warning("job %s is not in the journal (expired?); state %s not recorded", job_id, state)
        else:
            log.info("job %s is no longer %s's; not marked %s", job_id, owner, JobState(state).value)
        return False

    async def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> set[str]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return set()
        keys = [self._keys.unfinished, *(self._keys.job(job_id) for job_id in ids)]
        return {str(job_id) for job_id in await self._renew(keys=keys, args=[owner, repr(float(lease_s)), *ids])}

    async def take_over(self, owner: str, lease_s: float, *, include_live: bool = False) -> list[Job]:
        args = [owner, repr(float(lease_s)), "1" if include_live else "0", self._keys.job_prefix]
        claimed = await self._take_over(keys=[self._keys.unfinished], args=args)
        jobs = sorted((_job_from_hash(raw) for raw in claimed), key=lambda job: (job.created_at, job.job_id))
        if jobs:
            log.info("took over %d unfinished job(s) as %s", len(jobs), owner)
        return jobs

    async def get(self, job_id: str) -> Job | None:
        raw = await self._redis.hgetall(self._keys.job(job_id))
        return _job_from_hash(raw) if raw else None

    async def unfinished(self) -> list[Job]:
        ids = await self._redis.zrange(self._keys.unfinished, 0, -1)
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self._keys.job(job_id))
            hashes = await pipe.execute()
        jobs = [_job_from_hash(raw) for raw in hashes if raw]
        return sorted((job for job in jobs if not job.state.finished), key=lambda job: (job.created_at, job.job_id))

    async def pending_for(self, user: str) -> int:
        return int(await self._pending_for(keys=[self._keys.unfinished], args=[user, self._keys.job_prefix]))

    async def expire_jobs(self, older_than_s: float) -> int:
        seconds, micros = await self._redis.time()  # finish times come from the server's clock
        cutoff = seconds + micros / 1e6 - older_than_s
        ids = await self._redis.zrangebyscore(self._keys.finished, "-inf", cutoff)
        if not ids:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            for job_id in ids:
                pipe.zrem(self._keys.finished, job_id)
            for job_id in ids:
                pipe.delete(self._keys.job(job_id))
            results = await pipe.execute()
        return sum(1 for removed in results[: len(ids)] if removed)
