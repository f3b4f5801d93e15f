"""A Redis-backed store for several replicas of the bot (``PEEKBOT_STORE_URL=redis://host:6379/0``).

Replicas must agree on what was already seen (dedupe keys), on who answers which question (the job journal
and its leases), on each conversation's turns and files, on cached answers and on the controls (the pause flag,
rate-limit buckets): those live in Redis.
Documents (page text and the full-text index) and the audit log stay in each replica's LOCAL SQLite file:
page text is a cache that any replica can rebuild from the conversation's files, and every replica keeps
the audit of the questions it answered. The per-user count of answered questions (the daily quota) is shared.

Keys (all under ``key_prefix``):

- ``dedupe:<key>``: a string with a TTL (``SET NX PX``).
- ``job:<id>``: a hash per job; ``jobs:unfinished``: sorted set of unfinished job ids scored by lease expiry;
  ``jobs:finished``: sorted set of finished job ids scored by finish time (finished jobs also get a TTL).
  Accepting, marking, renewing and taking over run as Lua scripts with the server's clock, so two replicas
  never take the same job and clock drift between hosts does not matter.
- ``conv:<conversation>:turns`` (list, capped), ``conv:<conversation>:files`` (hash keyed by content hash),
  ``conv:<conversation>:answers`` (set of cached answer keys), ``conv:<conversation>:answer:<key>`` (string
  with a TTL); ``conversations``: sorted set of conversations scored by last activity. Activity refreshes
  the conversation keys' TTL, so an idle conversation disappears even when nothing calls the expiry job.
- ``asked:<user>``: sorted set of the user's answered question ids scored by time (last two days), for quotas.
- ``control:<name>``: a shared value such as the pause flag; ``bucket:<name>``: a rate-limit token bucket (hash of
  tokens and time, a Lua script with the server's clock takes tokens; it expires once full again).

TTLs come from the settings (``open_store``): finished jobs are kept as long as dedupe keys
(``PEEKBOT_DEDUPE_TTL_S``), an idle conversation's keys for ``PEEKBOT_CONVERSATION_RETENTION_DAYS``, cached answers
and dedupe keys for the TTL their callers pass.

The take-over script reads job hashes whose names it builds from the prefix, so use a single Redis server
(or a primary with replicas/Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bot.redact import redact, redact_url, url_secrets
from bot.store.base import AuditLog, AuditRecord, AuditSummary, DocumentIndex, Job, JobState, StoredFile, StoredTurn

try:
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("PEEKBOT_STORE_URL=redis://… needs the Redis client: pip install 'peekbot[redis]'") from exc

if TYPE_CHECKING:
    from bot.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached or refused the connection."""


def _scrub(text: str, url: str) -> str:
    """``text`` without the secrets of ``url`` (even short ones) nor any other credential."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return redact(text)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# --- Lua scripts (server clock; every one is atomic) -------------------------------------------------------

_LUA_PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function finished(state) return state == 'answered' or state == 'failed' end
"""

# KEYS: job hash, unfinished zset, finished zset.
# ARGV: job id, owner, lease_s, created_at ('' = now), finished ttl ms, field/value pairs…
_ACCEPT = (
    _LUA_PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = now()
local lease = t + tonumber(ARGV[3])
local created = ARGV[4]
if created == '' then created = fmt(t) end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'lease_until', fmt(lease), 'created_at', created, 'updated_at', fmt(t))
if finished(redis.call('HGET', KEYS[1], 'state')) then
  redis.call('ZADD', KEYS[3], fmt(t), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
  redis.call('ZADD', KEYS[2], fmt(lease), ARGV[1])
end
return 1
"""
)

# KEYS: job hash, unfinished zset, finished zset.
# ARGV: job id, new state, '1' when reply_state is given, reply_state JSON, error, finished ttl ms,
# owner ('' = whoever holds it; else only while the job is unfinished and leased to that owner).
_MARK = (
    _LUA_PRELUDE
    + """
local fields = redis.call('HMGET', KEYS[1], 'state', 'owner')
local current = fields[1]
if not current then return 0 end
if ARGV[7] ~= '' and (fields[2] ~= ARGV[7] or finished(current)) then return 0 end
local t = now()
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', fmt(t), 'error', ARGV[5])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'reply_state', ARGV[4]) end
if finished(ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], fmt(t), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
elseif finished(current) then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until'), ARGV[1])
end
return 1
"""
)

# KEYS: unfinished zset, then one job hash per id. ARGV: owner, lease_s, then the ids (same order as KEYS[2..]).
_RENEW = (
    _LUA_PRELUDE
    + """
local lease = fmt(now() + tonumber(ARGV[2]))
local renewed = {}
for i = 2, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'owner', 'state')
  if fields[1] == ARGV[1] and fields[2] and not finished(fields[2]) then
    redis.call('HSET', KEYS[i], 'lease_until', lease)
    redis.call('ZADD', KEYS[1], lease, ARGV[i + 1])
    renewed[#renewed + 1] = ARGV[i + 1]
  end
end
return renewed
"""
)

# KEYS: unfinished zset. ARGV: user, job key prefix. The unfinished set is small (bounded by the queues).
_PENDING_FOR = (
    _LUA_PRELUDE
    + """
local count = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[2] .. id, 'user', 'state')
  if fields[1] == ARGV[1] and fields[2] and not finished(fields[2]) then count = count + 1 end
end
return count
"""
)

# KEYS: bucket hash. ARGV: tokens per second, burst. Returns '0' when a token was taken, else the seconds to wait.
# A bucket that has refilled completely is the same as none, so the key expires then.
_TAKE_TOKEN = (
    _LUA_PRELUDE
    + """
local t = now()
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local fields = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = capacity
if fields[1] then
  tokens = math.min(capacity, tonumber(fields[1]) + math.max(t - tonumber(fields[2]), 0) * rate)
end
if tokens < 1 then return fmt((1 - tokens) / rate) end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'updated', fmt(t))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / rate * 1000)))
return '0'
"""
)

# KEYS: unfinished zset. ARGV: owner, lease_s, '1' to include live leases, job key prefix.
# Returns the claimed jobs' hashes (flat field/value arrays).
_TAKE_OVER = (
    _LUA_PRELUDE
    + """
local t = now()
local upto = fmt(t)
if ARGV[3] == '1' then upto = '+inf' end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto)
local lease = fmt(t + tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local state = redis.call('HGET', key, 'state')
  if (not state) or finished(state) then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HSET', key, 'owner', ARGV[1], 'lease_until', lease, 'updated_at', fmt(t))
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', KEYS[1], lease, id)
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""
)

# KEYS: files hash. ARGV: content hash, file ref, created_at, max files.
# Each entry remembers its insertion number (counter in the reserved field '#seq') so files keep their order.
_ADD_FILE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], '#seq', 1)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({file_ref = ARGV[2], created_at = ARGV[3], seq = seq}))
local excess = redis.call('HLEN', KEYS[1]) - 1 - tonumber(ARGV[4])
if excess > 0 then
  local all = redis.call('HGETALL', KEYS[1])
  local entries = {}
  for i = 1, #all, 2 do
    if all[i] ~= '#seq' then entries[#entries + 1] = {all[i], cjson.decode(all[i + 1]).seq} end
  end
  table.sort(entries, function(a, b) return a[2] < b[2] end)
  for i = 1, excess do redis.call('HDEL', KEYS[1], entries[i][1]) end
end
return 1
"""
_SEQ_FIELD = "#seq"

# KEYS: turns list. ARGV: message id. Removes the turns of one chat message; returns how many.
_FORGET_TURNS = """
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, turn = pcall(cjson.decode, item)
  if ok and type(turn) == 'table' and turn.message_id == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, item)
  end
end
return removed
"""
FORGET_BATCH = 500
"""Conversations whose files one round trip reads when deleted files are looked for."""
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*?[]"})


class _Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.job_prefix = f"{prefix}job:"
        self.unfinished = f"{prefix}jobs:unfinished"
        self.finished = f"{prefix}jobs:finished"
        self.conversations = f"{prefix}conversations"

    def dedupe(self, key: str) -> str:
        return f"{self.prefix}dedupe:{key}"

    def control(self, name: str) -> str:
        return f"{self.prefix}control:{name}"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}bucket:{name}"

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


class _RedisPart:
    """Shared access to the open client for the store's parts."""

    def __init__(self, owner: RedisStore) -> None:
        self._owner = owner
        self._keys = owner.keys

    @property
    def _redis(self) -> aioredis.Redis:
        return self._owner.client


class RedisDedupe(_RedisPart):
    async def claim(self, key: str, ttl_s: float) -> bool:
        return bool(await self._redis.set(self._keys.dedupe(key), "1", nx=True, px=_ms(ttl_s)))

    async def expire_keys(self) -> int:
        """Redis forgets expired keys by itself: nothing to do, nothing counted."""
        return 0


class RedisJobJournal(_RedisPart):
    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._accept = owner.register(_ACCEPT)
        self._mark = owner.register(_MARK)
        self._renew = owner.register(_RENEW)
        self._take_over = owner.register(_TAKE_OVER)
        self._pending_for = owner.register(_PENDING_FOR)

    async def accept(self, job: Job, owner: str, lease_s: float) -> bool:
        keys = [self._keys.job(job.job_id), self._keys.unfinished, self._keys.finished]
        created = f"{job.created_at:.6f}" if job.created_at else ""
        args = [job.job_id, owner, repr(float(lease_s)), created, _ms(self._owner.finished_job_ttl_s)]
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
            _ms(self._owner.finished_job_ttl_s),
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


class RedisConversations(_RedisPart):
    async def add_turn(self, conversation: str, role: str, text: str, *, message_id: str = "") -> None:
        turn = json.dumps({"role": role, "text": text, "created_at": time.time(), "message_id": message_id})
        key = self._keys.turns(conversation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, turn)
            pipe.ltrim(key, -self._owner.max_turns, -1)
            self._owner.touch_conversation(pipe, conversation)
            await pipe.execute()

    async def turns(self, conversation: str, limit: int) -> list[StoredTurn]:
        if limit <= 0:
            return []
        raw = await self._redis.lrange(self._keys.turns(conversation), -limit, -1)
        turns = [json.loads(item) for item in raw]
        return [StoredTurn(role=t["role"], text=t["text"], created_at=float(t["created_at"])) for t in turns]

    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._add_file = owner.register(_ADD_FILE)
        self._forget_turns = owner.register(_FORGET_TURNS)

    async def add_file(self, conversation: str, file_ref: str, content_hash: str) -> None:
        key = self._keys.files(conversation)
        await self._add_file(keys=[key], args=[content_hash, file_ref, repr(time.time()), self._owner.max_files])
        async with self._redis.pipeline(transaction=False) as pipe:
            self._owner.touch_conversation(pipe, conversation)
            await pipe.execute()

    async def _all_files(self, conversation: str) -> list[StoredFile]:
        raw = await self._redis.hgetall(self._keys.files(conversation))
        entries = {content_hash: json.loads(value) for content_hash, value in raw.items() if content_hash != _SEQ_FIELD}
        ordered = sorted(entries.items(), key=lambda item: int(item[1]["seq"]))
        return [StoredFile(e["file_ref"], content_hash, float(e["created_at"])) for content_hash, e in ordered]

    async def files(self, conversation: str, limit: int) -> list[StoredFile]:
        if limit <= 0:
            return []
        return (await self._all_files(conversation))[-limit:]

    async def _delete(self, conversation: str) -> int:
        """Delete the conversation's keys; returns how many existed."""
        answers = await self._redis.smembers(self._keys.answer_index(conversation))
        keys = [
            self._keys.turns(conversation),
            self._keys.files(conversation),
            self._keys.answer_index(conversation),
            *(self._keys.answer(conversation, key) for key in answers),
        ]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.zrem(self._keys.conversations, conversation)
            deleted, _ = await pipe.execute()
        return int(deleted)

    async def reset(self, conversation: str) -> bool:
        shared = await self._delete(conversation)
        local = await self._owner.local.conversations.reset(conversation)
        return shared > 0 or local

    async def forget_message(self, conversation: str, message_id: str) -> int:
        if not message_id:
            return 0
        removed = int(await self._forget_turns(keys=[self._keys.turns(conversation)], args=[message_id]))
        await self._forget_answers(conversation)
        return removed

    async def forget_files(self, scope: str, withdrawn: Callable[[str], bool]) -> list[str]:
        """The shared files and answers here; the documents in this replica's local file (other replicas' local
        page text is no longer reachable from the conversation and goes with its retention)."""
        affected: list[str] = []
        conversations = await self._conversations_in(scope)
        for start in range(0, len(conversations), FORGET_BATCH):  # one round trip per batch of conversations
            batch = conversations[start : start + FORGET_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for conversation in batch:
                    pipe.hgetall(self._keys.files(conversation))
                all_files = await pipe.execute()
            for conversation, raw in zip(batch, all_files, strict=True):
                entries = {h: json.loads(value) for h, value in raw.items() if h != _SEQ_FIELD}
                doomed = [h for h, entry in entries.items() if withdrawn(entry["file_ref"])]
                if not doomed:
                    continue
                await self._redis.hdel(self._keys.files(conversation), *doomed)
                await self._forget_answers(conversation)
                await self._owner.local.documents.forget_documents(conversation, set(entries) - set(doomed))
                affected.append(conversation)
        return sorted(affected)

    async def _conversations_in(self, scope: str) -> list[str]:
        """The conversation ``scope`` and those under it (every conversation for an empty scope)."""
        pattern = f"{scope.translate(_GLOB_SPECIAL)}:*" if scope else "*"
        scan = self._redis.zscan_iter(self._keys.conversations, match=pattern, count=1000)
        found = {str(conversation) async for conversation, _ in scan}
        if scope and await self._redis.zscore(self._keys.conversations, scope) is not None:
            found.add(scope)
        return sorted(found)

    async def _forget_answers(self, conversation: str) -> None:
        index = self._keys.answer_index(conversation)
        answers = await self._redis.smembers(index)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(index, *(self._keys.answer(conversation, key) for key in answers))
            await pipe.execute()

    async def expire_conversations(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        idle = await self._redis.zrangebyscore(self._keys.conversations, "-inf", cutoff)
        for conversation in idle:
            await self._delete(conversation)
        await self._owner.local.conversations.expire_conversations(older_than_s)
        return len(idle)


class RedisAnswerCache(_RedisPart):
    async def get_answer(self, conversation: str, key: str) -> str | None:
        value = await self._redis.get(self._keys.answer(conversation, key))
        return None if value is None else str(value)

    async def put_answer(self, conversation: str, key: str, answer: str, ttl_s: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.answer(conversation, key), answer, px=_ms(ttl_s))
            pipe.sadd(self._keys.answer_index(conversation), key)
            self._owner.touch_conversation(pipe, conversation)
            await pipe.execute()


class RedisControls(_RedisPart):
    """The pause flag and the rate-limit buckets, shared by every replica (``control:<name>``, ``bucket:<name>``)."""

    def __init__(self, owner: RedisStore) -> None:
        super().__init__(owner)
        self._take = owner.register(_TAKE_TOKEN)

    async def get(self, name: str) -> str | None:
        value = await self._redis.get(self._keys.control(name))
        return None if value is None else str(value)

    async def put(self, name: str, value: str | None, ttl_s: float | None = None) -> None:
        if value is None:
            await self._redis.delete(self._keys.control(name))
        else:
            await self._redis.set(self._keys.control(name), value, px=None if ttl_s is None else _ms(ttl_s))

    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float:
        if rate_per_s <= 0:
            return 0.0
        wait = await self._take(keys=[self._keys.bucket(bucket)], args=[repr(float(rate_per_s)), max(int(burst), 1)])
        return float(wait)


class RedisAudit(_RedisPart):
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


class RedisStore:
    """The shared store for several replicas; documents and audit stay in each replica's local SQLite file.

    ``url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL (a password in it is never logged or shown);
    ``local`` is this replica's own SQLite store (documents' page text and full-text index, audit log).
    """

    single_process = False
    """Other replicas share the journal: at start, take over only jobs whose lease ran out."""

    def __init__(
        self,
        url: str,
        local: SQLiteStore,
        key_prefix: str = "peekbot:",
        *,
        connect_timeout_s: float = 3.0,
        command_timeout_s: float = 10.0,
        finished_job_ttl_s: float = 7 * 24 * 3600.0,
        conversation_ttl_s: float = 30 * 24 * 3600.0,
        max_turns: int = 200,
        max_files: int = 200,
    ) -> None:
        self.url = url
        self.local = local
        self.keys = _Keys(key_prefix)
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.finished_job_ttl_s = finished_job_ttl_s
        self.conversation_ttl_s = conversation_ttl_s
        self.max_turns = max_turns
        self.max_files = max_files
        self._client: aioredis.Redis | None = None
        self._scripts: list[tuple[str, Any]] = []
        self.dedupe = RedisDedupe(self)
        self.jobs = RedisJobJournal(self)
        self.conversations = RedisConversations(self)
        self.cache = RedisAnswerCache(self)
        self.controls = RedisControls(self)
        self.documents: DocumentIndex = local.documents
        self.audit: AuditLog = RedisAudit(self)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable(f"the Redis store at {redact_url(self.url)} is not open")
        return self._client

    def register(self, source: str) -> Any:
        """A Lua script callable as ``await script(keys=…, args=…)`` once the store is open."""
        index = len(self._scripts)
        self._scripts.append((source, None))

        async def call(keys: Sequence[str], args: Sequence[Any]) -> Any:
            script = self._scripts[index][1]
            if script is None:
                script = self.client.register_script(source)
                self._scripts[index] = (source, script)
            return await script(keys=list(keys), args=list(args))

        return call

    def touch_conversation(self, pipe: Any, conversation: str) -> None:
        """Queue on ``pipe``: record activity and refresh the TTL of the conversation's keys."""
        ttl_ms = _ms(self.conversation_ttl_s)
        pipe.zadd(self.keys.conversations, {conversation: time.time()})
        for key in (
            self.keys.turns(conversation),
            self.keys.files(conversation),
            self.keys.answer_index(conversation),
        ):
            pipe.pexpire(key, ttl_ms)

    async def open(self) -> None:
        if self._client is not None:
            return
        where = redact_url(self.url)
        try:
            client = aioredis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=self.connect_timeout_s,
                socket_timeout=self.command_timeout_s,
                health_check_interval=30,
            )
        except (ValueError, RedisError) as exc:
            raise StoreUnavailable(f"Invalid Redis URL {where}: {_scrub(str(exc), self.url)}") from None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            detail = _scrub(str(exc) or type(exc).__name__, self.url)
            raise StoreUnavailable(f"Can't reach Redis at {where}: {detail}") from None
        self._client = client
        self._scripts = [(source, None) for source, _ in self._scripts]
        try:
            await self.local.open()
        except BaseException:
            await self._close_client()
            raise
        log.info("store: %s", self.describe())

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def close(self) -> None:
        try:
            await self._close_client()
        finally:
            await self.local.close()

    def describe(self) -> str:
        return (
            f"Redis {redact_url(self.url)} (prefix {self.keys.prefix!r}) for dedupe, jobs, conversations and "
            f"cache; documents and audit in this replica's {self.local.describe()}"
        )
