"""The Redis-backed store: the behaviour every store has, plus what several replicas rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")

from redis import asyncio as aioredis

from bot.redact import redact_url
from bot.settings import Settings
from bot.store import open_store
from bot.store.base import AuditRecord, Job, JobState
from bot.store.redis import RedisStore, StoreUnavailable
from bot.store.sqlite import SQLiteStore
from tests.store.contract import *  # noqa: F403
from tests.support.redis_server import RedisServer, free_port, redis_server, require_redis_server  # noqa: F401


async def _flushed(server: RedisServer) -> None:
    client = aioredis.from_url(server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def _open_replica(server: RedisServer, directory: Path, name: str) -> RedisStore:
    store = RedisStore(server.url, SQLiteStore(directory / f"{name}.sqlite3"))
    await store.open()
    return store


@pytest.fixture
async def store(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[RedisStore]:  # noqa: F811
    """A RedisStore on this module's redis-server (flushed first) with a fresh local SQLite file."""
    await _flushed(redis_server)
    opened = await _open_replica(redis_server, tmp_path, "local")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def replicas(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[RedisStore, RedisStore]]:  # noqa: F811
    """Two stores, as two bot processes would open them: one Redis, each with its own local SQLite file."""
    await _flushed(redis_server)
    first = await _open_replica(redis_server, tmp_path, "replica-a")
    second = await _open_replica(redis_server, tmp_path, "replica-b")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _job(job_id: str) -> Job:
    return Job(job_id=job_id, platform="slack", conversation="slack:T1:C1", user="U1", message="{}")


async def test_two_replicas_racing_take_over_get_each_expired_job_exactly_once(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    for index in range(20):
        assert await first.jobs.accept(_job(f"job-{index}"), "crashed-replica", lease_s=0.05)
    await asyncio.sleep(0.15)

    rounds = await asyncio.gather(
        *(store.jobs.take_over(name, lease_s=30) for _ in range(5) for store, name in ((first, "a"), (second, "b")))
    )
    taken = [job.job_id for batch in rounds for job in batch]
    assert sorted(taken) == sorted(f"job-{index}" for index in range(20))
    for batch, owner in zip(rounds, ["a", "b"] * 5, strict=True):
        for job in batch:
            assert job.owner == owner
            assert job.attempts == 1
            stored = await second.jobs.get(job.job_id)
            assert stored is not None and stored.owner == owner
    assert await first.jobs.take_over("c", lease_s=30) == []


async def test_a_job_is_handed_over_only_after_its_lease_expires(replicas: tuple[RedisStore, RedisStore]) -> None:
    first, second = replicas
    assert not first.single_process, "a replica that starts must not take live jobs of the others"
    assert await first.jobs.accept(_job("q1"), "replica-a", lease_s=1.0)
    assert not await second.jobs.accept(_job("q1"), "replica-b", lease_s=1.0)  # the redelivered duplicate
    await first.jobs.mark("q1", JobState.RUNNING, reply_state={"placeholder": "ts-1"})

    assert await second.jobs.take_over("replica-b", lease_s=30) == []
    await first.jobs.renew("replica-a", ["q1"], lease_s=0.6)
    await asyncio.sleep(0.05)
    assert await second.jobs.take_over("replica-b", lease_s=30) == []

    await asyncio.sleep(0.8)  # replica-a stopped renewing: its lease runs out
    (job,) = await second.jobs.take_over("replica-b", lease_s=30)
    assert (job.job_id, job.owner, job.attempts, job.state) == ("q1", "replica-b", 1, JobState.RUNNING)
    assert job.reply_state == {"placeholder": "ts-1"}
    assert job.lease_until > time.time() + 20

    await first.jobs.renew("replica-a", ["q1"], lease_s=60)  # the old owner's late renewal changes nothing
    assert (await second.jobs.get("q1")).owner == "replica-b"  # type: ignore[union-attr]
    await second.jobs.mark("q1", JobState.ANSWERED)
    assert await first.jobs.unfinished() == []
    assert await first.jobs.take_over("replica-a", lease_s=30, include_live=True) == []


async def test_finished_jobs_leave_the_unfinished_set_and_get_a_ttl(
    store: RedisStore, redis_server: RedisServer  # noqa: F811
) -> None:
    assert await store.jobs.accept(_job("done"), "me", lease_s=30)
    assert await store.jobs.accept(_job("open"), "me", lease_s=30)
    await store.jobs.mark("done", JobState.FAILED, error="engine unavailable")
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await client.zrange("peekbot:jobs:unfinished", 0, -1) == ["open"]
        assert 0 < await client.ttl("peekbot:job:done") <= store.finished_job_ttl_s
        assert await client.ttl("peekbot:job:open") == -1
    finally:
        await client.aclose()
    assert [job.job_id for job in await store.jobs.unfinished()] == ["open"]
    assert (await store.jobs.get("done")).error == "engine unavailable"  # type: ignore[union-attr]


async def test_dedupe_and_conversations_are_shared_between_replicas(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    assert await first.dedupe.claim("slack:event:Ev1", ttl_s=60)
    assert not await second.dedupe.claim("slack:event:Ev1", ttl_s=60)

    await first.conversations.add_turn("slack:T1:C1:1.0", "user", "what is on this screenshot?")
    await first.conversations.add_file("slack:T1:C1:1.0", '{"file_id": "F1"}', "sha-1")
    await first.cache.put_answer("slack:T1:C1:1.0", "q-key", "a login dialog", ttl_s=60)
    assert [turn.text for turn in await second.conversations.turns("slack:T1:C1:1.0", 10)] == [
        "what is on this screenshot?"
    ]
    assert [f.content_hash for f in await second.conversations.files("slack:T1:C1:1.0", 10)] == ["sha-1"]
    assert await second.cache.get_answer("slack:T1:C1:1.0", "q-key") == "a login dialog"

    assert await second.conversations.reset("slack:T1:C1:1.0")
    assert await first.conversations.turns("slack:T1:C1:1.0", 10) == []
    assert await first.conversations.files("slack:T1:C1:1.0", 10) == []
    assert await first.cache.get_answer("slack:T1:C1:1.0", "q-key") is None
    assert not await first.conversations.reset("slack:T1:C1:1.0")


async def test_turns_are_capped_and_idle_conversations_expire(
    redis_server: RedisServer, tmp_path: Path  # noqa: F811
) -> None:
    await _flushed(redis_server)
    store = RedisStore(redis_server.url, SQLiteStore(tmp_path / "local.sqlite3"), max_turns=3, conversation_ttl_s=0.6)
    await store.open()
    try:
        for index in range(5):
            await store.conversations.add_turn("c1", "user", f"turn {index}")
        assert [t.text for t in await store.conversations.turns("c1", 10)] == ["turn 2", "turn 3", "turn 4"]
        await asyncio.sleep(0.9)  # no activity for longer than the TTL: Redis forgets the keys itself
        assert await store.conversations.turns("c1", 10) == []
        await store.conversations.add_turn("c2", "user", "fresh")
        assert await store.conversations.expire_conversations(older_than_s=0.6) == 1  # c1 only
        assert [t.text for t in await store.conversations.turns("c2", 10)] == ["fresh"]
    finally:
        await store.close()


async def test_files_keep_their_order_and_the_oldest_go_past_the_cap(
    redis_server: RedisServer, tmp_path: Path  # noqa: F811
) -> None:
    await _flushed(redis_server)
    store = RedisStore(redis_server.url, SQLiteStore(tmp_path / "local.sqlite3"), max_files=3)
    await store.open()
    try:
        for name in ["f", "e", "d", "c", "b"]:  # content hashes deliberately not in sorted order
            await store.conversations.add_file("c1", f'{{"file_id": "{name}"}}', f"sha-{name}")
        await store.conversations.add_file("c1", '{"file_id": "again"}', "sha-d")  # the same content again
        files = await store.conversations.files("c1", 10)
        assert [f.content_hash for f in files] == ["sha-d", "sha-c", "sha-b"]
        assert files[0].file_ref == '{"file_id": "d"}'
        assert [f.content_hash for f in await store.conversations.files("c1", 2)] == ["sha-c", "sha-b"]
    finally:
        await store.close()


async def test_documents_and_audit_stay_in_the_replica_local_sqlite_file(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    assert first.documents is first.local.documents
    assert "replica-a.sqlite3" in first.describe()
    await first.documents.put_page("doc-1", 1, "quarterly budget", page_hash="p1", source="text-layer")
    assert await first.documents.indexed_pages("doc-1") == {1}
    assert await second.documents.indexed_pages("doc-1") == set()
    await first.audit.record(_audit("slack:1", "slack:U1", "answered"))
    assert (await first.audit.summary(0)).questions == 1
    assert (await second.audit.summary(0)).questions == 0  # each replica audits what it answered


def _audit(job_id: str, user: str, outcome: str, at: float | None = None) -> AuditRecord:
    return AuditRecord(job_id=job_id, platform="slack", user=user, conversation="slack:T:C", image_hashes=(),
                       question_chars=10, answer_chars=20, latency_s=1.0, outcome=outcome,
                       created_at=time.time() if at is None else at)


async def test_a_users_answered_questions_count_across_replicas_for_the_daily_quota(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    now = time.time()
    await first.audit.record(_audit("slack:1", "slack:U1", "answered", now - 60))
    await second.audit.record(_audit("slack:2", "slack:U1", "cached", now - 30))
    await second.audit.record(_audit("slack:3", "slack:U1", "rate_limited", now - 20))  # not a question answered
    await second.audit.record(_audit("slack:4", "slack:U2", "answered", now - 10))
    await first.audit.record(_audit("slack:5", "slack:U1", "answered", now - 3 * 3600))  # before "today"
    today = now - 3600
    assert await first.audit.count_for_user("slack:U1", today) == 2
    assert await second.audit.count_for_user("slack:U1", today) == 2
    assert await second.audit.count_for_user("slack:U2", today) == 1


async def test_store_url_selects_the_redis_store_with_a_local_file_in_the_data_dir(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    await _flushed(redis_server)
    monkeypatch.setenv("PEEKBOT_STORE_URL", redis_server.url)
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    store = open_store(Settings())
    assert isinstance(store, RedisStore)
    await store.open()
    try:
        assert await store.dedupe.claim("slack:event:Ev9", ttl_s=5)
        assert str(tmp_path / "data") in store.describe()
    finally:
        await store.close()


async def test_a_password_in_the_url_never_shows(tmp_path: Path) -> None:
    binary = require_redis_server()
    secret = "s3cret-Pa55"
    with RedisServer(tmp_path / "redis", password=secret, binary=binary) as server:
        store = RedisStore(server.url, SQLiteStore(tmp_path / "local.sqlite3"))
        assert secret not in store.describe()
        assert f"127.0.0.1:{server.port}/0" in store.describe()
        await store.open()
        try:
            assert await store.dedupe.claim("k", ttl_s=5)
            assert secret not in store.describe()
        finally:
            await store.close()

        wrong = RedisStore(server.url.replace(secret, "wrong-" + secret), SQLiteStore(tmp_path / "b.sqlite3"))
        with pytest.raises(StoreUnavailable) as refused:
            await wrong.open()
        assert secret not in str(refused.value)
        assert f"Can't reach Redis at redis://:***@127.0.0.1:{server.port}/0" in str(refused.value)


async def test_redis_down_at_open_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://admin:hunter2@127.0.0.1:{port}/0"
    store = RedisStore(url, SQLiteStore(tmp_path / "local.sqlite3"), connect_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as down:
        await store.open()
    assert time.monotonic() - started < 10
    message = str(down.value)
    assert message.startswith(f"Can't reach Redis at redis://admin:***@127.0.0.1:{port}/0: ")
    assert "hunter2" not in message
    assert not (tmp_path / "local.sqlite3").exists()  # nothing half-opened
    await store.close()  # closing a store that never opened is harmless


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("redis://bot:pw@redis.internal/2", "redis://bot:***@redis.internal/2"),
        ("rediss://token@[::1]:6380/0", "rediss://***@[::1]:6380/0"),
        ("redis://redis.internal:6379/0?password=pw&db=1", "redis://redis.internal:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_redact_url_hides_every_form_of_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_replicas_share_the_pause_flag_one_bucket_per_user_and_pending_counts(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    await first.controls.put("paused", "1")
    assert await second.controls.get("paused") == "1"
    assert await first.controls.take("rate:slack:U1", 0.01, 2) == 0.0
    assert await second.controls.take("rate:slack:U1", 0.01, 2) == 0.0
    assert await first.controls.take("rate:slack:U1", 0.01, 2) > 0, "two replicas took from one bucket"
    assert await second.controls.take("rate:slack:U1", 0.01, 2) > 0
    assert await first.jobs.accept(Job("q1", "slack", "slack:T1:C1", "slack:U1", "{}"), "replica-a", 60)
    assert await second.jobs.accept(Job("q2", "slack", "slack:T1:C1", "slack:U1", "{}"), "replica-b", 60)
    assert await first.jobs.pending_for("slack:U1") == await second.jobs.pending_for("slack:U1") == 2


async def test_ttls_of_finished_jobs_and_idle_conversations_come_from_the_settings(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    await _flushed(redis_server)
    for key, value in {
        "STORE_URL": redis_server.url, "DATA_DIR": str(tmp_path / "data"),
        "CONVERSATION_RETENTION_DAYS": "2", "DEDUPE_TTL_S": "600",
    }.items():  # fmt: skip
        monkeypatch.setenv(f"PEEKBOT_{key}", value)
    store = open_store(Settings())
    await store.open()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await store.jobs.accept(_job("done"), "me", lease_s=30)
        assert await store.jobs.mark("done", JobState.ANSWERED, owner="me")
        await store.conversations.add_turn("c1", "user", "hello")
        assert 590 <= await client.ttl("peekbot:job:done") <= 600
        assert 2 * 86400 - 10 <= await client.ttl("peekbot:conv:c1:turns") <= 2 * 86400
    finally:
        await client.aclose()
        await store.close()
