"""The Redis store: the connection, its scripts, and the parts on it; documents stay in the local SQLite file."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.redact import redact, redact_url, url_secrets
from bot.store.base import AuditLog, DocumentIndex
from bot.store.redis.audit import RedisAudit
from bot.store.redis.client import RedisError, StoreUnavailable, aioredis
from bot.store.redis.controls import RedisControls
from bot.store.redis.conversations import RedisAnswerCache, RedisConversations
from bot.store.redis.instructions import RedisInstructions
from bot.store.redis.jobs import RedisDedupe, RedisJobJournal
from bot.store.redis.keys import KeyLayout, ms
from bot.store.redis.ratings import RedisRatings

if TYPE_CHECKING:
    from bot.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)


def _scrub(text: str, url: str) -> str:
    """``text`` without the secrets of ``url`` (even short ones) nor any other credential."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return redact(text)


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
        self.keys = KeyLayout(key_prefix)
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
        self.instructions = RedisInstructions(self)
        self.ratings = RedisRatings(self)
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
        ttl_ms = ms(self.conversation_ttl_s)
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
            f"Redis {redact_url(self.url)} (prefix {self.keys.prefix!r}) for dedupe, jobs, conversations, "
            f"cache, ratings and instructions; documents and audit in this replica's {self.local.describe()}"
        )
