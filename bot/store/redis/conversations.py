"""Conversations in Redis: turns (a capped list), files (a hash keyed by content hash) and cached answers.

Activity refreshes the TTL of a conversation's keys (``RedisStore.touch_conversation``), so an idle conversation
disappears even when nothing calls the expiry job. Documents stay in the replica's local SQLite file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.store.base import StoredFile, StoredTurn
from bot.store.redis import scripts
from bot.store.redis.client import RedisPart
from bot.store.redis.keys import ms
from bot.store.redis.scripts import SEQ_FIELD

if TYPE_CHECKING:
    from bot.store.redis.store import RedisStore

FORGET_BATCH = 500
"""Conversations whose files one round trip reads when deleted files are looked for."""
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*?[]"})


class RedisConversations(RedisPart):
    """Turns and files of conversations, shared by the replicas; each replica forgets its own documents too."""

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
        self._add_file = owner.register(scripts.ADD_FILE)
        self._forget_turns = owner.register(scripts.FORGET_TURNS)

    async def add_file(self, conversation: str, file_ref: str, content_hash: str) -> None:
        key = self._keys.files(conversation)
        await self._add_file(keys=[key], args=[content_hash, file_ref, repr(time.time()), self._owner.max_files])
        async with self._redis.pipeline(transaction=False) as pipe:
            self._owner.touch_conversation(pipe, conversation)
            await pipe.execute()

    async def _all_files(self, conversation: str) -> list[StoredFile]:
        raw = await self._redis.hgetall(self._keys.files(conversation))
        entries = {content_hash: json.loads(value) for content_hash, value in raw.items() if content_hash != SEQ_FIELD}
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
                entries = {h: json.loads(value) for h, value in raw.items() if h != SEQ_FIELD}
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


class RedisAnswerCache(RedisPart):
    """Cached answers with a TTL, indexed per conversation so that forgetting it finds them."""

    async def get_answer(self, conversation: str, key: str) -> str | None:
        value = await self._redis.get(self._keys.answer(conversation, key))
        return None if value is None else str(value)

    async def put_answer(self, conversation: str, key: str, answer: str, ttl_s: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.answer(conversation, key), answer, px=ms(ttl_s))
            pipe.sadd(self._keys.answer_index(conversation), key)
            self._owner.touch_conversation(pipe, conversation)
            await pipe.execute()
