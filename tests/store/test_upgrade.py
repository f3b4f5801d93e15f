"""Upgrades keep state: what the previous release wrote is read by this one, and its jobs in flight are answered once.

The fixtures in ``tests/fixtures`` were written by the previous release's own store code
(``tests/fixtures/write_release_state.py``, run against that release): a gzipped SQLite state file and the keys its
Redis store wrote. ``EXPECTED`` in that script says what they hold.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.app import Application
from bot.settings import Settings
from bot.store.base import JobState, Rating, Store
from bot.store.codec import decode_file, decode_message
from bot.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.fixtures.write_release_state import CONVERSATION, DOCUMENT_ID, EXPECTED
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASE_SCHEMA = 3
"""The schema version of the release that wrote the fixtures."""
SQLITE_FIXTURE = FIXTURES / f"state-v{RELEASE_SCHEMA}.db.gz"
REDIS_FIXTURE = FIXTURES / f"redis-v{RELEASE_SCHEMA}.json"

pytestmark = pytest.mark.timeout(120)


def unpack_state(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(SQLITE_FIXTURE, "rb") as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return target


async def restore_redis(url: str) -> None:
    """Put back every key the previous release wrote, with its remaining TTL."""
    from redis import asyncio as aioredis

    dump = json.loads(REDIS_FIXTURE.read_text())
    client = aioredis.from_url(url, decode_responses=True)
    try:
        await client.flushall()
        for entry in dump["keys"]:
            key, kind, value = entry["key"], entry["type"], entry["value"]
            if kind == "string":
                await client.set(key, value)
            elif kind == "hash":
                await client.hset(key, mapping=value)
            elif kind == "list":
                await client.rpush(key, *value)
            elif kind == "set":
                await client.sadd(key, *value)
            elif kind == "zset":
                await client.zadd(key, {member: score for member, score in value})
            else:
                raise AssertionError(f"unexpected type {kind}")
            if entry["pttl"] > 0:
                await client.pexpire(key, entry["pttl"])
    finally:
        await client.aclose()


async def assert_shared_state_read_back(store: Store) -> None:
    """Jobs, conversation, cache, dedupe keys and the daily-quota count: what every store keeps."""
    unfinished = await store.jobs.unfinished()
    assert [job.job_id for job in unfinished] == sorted(EXPECTED["in_flight"])
    for job_id, (state, question, reply_state) in EXPECTED["in_flight"].items():
        job = await store.jobs.get(job_id)
        assert job is not None and job.state is JobState(state) and job.reply_state == reply_state
        assert decode_message(job.message).text == question
    for job_id, (state, error) in EXPECTED["finished"].items():
        job = await store.jobs.get(job_id)
        assert job is not None and (job.state, job.error) == (JobState(state), error)

    turns = await store.conversations.turns(CONVERSATION, 10)
    assert [(t.role, t.text) for t in turns] == EXPECTED["turns"]
    files = await store.conversations.files(CONVERSATION, 10)
    assert [f.content_hash for f in files] == EXPECTED["files"]
    assert decode_file(files[0].file_ref).name == "shot-1.png"
    key, answer = EXPECTED["cache"]
    assert await store.cache.get_answer(CONVERSATION, key) == answer
    for dedupe_key in EXPECTED["dedupe"]:
        assert not await store.dedupe.claim(dedupe_key, 60), f"{dedupe_key} was forgotten"
    answered = EXPECTED["audit_outcomes"]["answered"] + EXPECTED["audit_outcomes"]["cached"]
    assert await store.audit.count_for_user(EXPECTED["asked_user"], 0) == answered

    # What this release added works on the upgraded state.
    assert await store.jobs.pending_for("local:U1") == len(EXPECTED["in_flight"])
    await store.controls.put("paused", "1")
    assert await store.controls.get("paused") == "1"
    assert await store.ratings.ratings(0) == [], "the old state gains the ratings, empty"
    job_id = next(iter(EXPECTED["finished"]))
    assert await store.ratings.rate(Rating(job_id, "slack", EXPECTED["asked_user"], "helpful")) is None
    assert [rating.job_id for rating in await store.ratings.ratings(0)] == [job_id]


async def test_a_state_file_of_the_previous_release_is_migrated_and_read_back_in_full(tmp_path: Path) -> None:
    store = SQLiteStore(unpack_state(tmp_path / "state.db"))
    await store.open()
    try:
        assert store.schema_version == SCHEMA_VERSION > RELEASE_SCHEMA
        await assert_shared_state_read_back(store)
        [document] = await store.documents.documents(CONVERSATION)
        assert (document.document_id, document.name, document.page_count) == (DOCUMENT_ID, "report.pdf", 3)
        assert document.indexed_pages == 3
        [hit] = await store.documents.search([DOCUMENT_ID], "Kestrel turbine", 5)
        assert hit.page == 1
        page, page_hash, text = EXPECTED["transcribed_page"]
        assert await store.documents.transcription(page_hash) == text
        assert await store.documents.indexed_pages(DOCUMENT_ID) == {1, 2, page}
        summary = await store.audit.summary(0)
        assert summary.by_outcome == EXPECTED["audit_outcomes"]
    finally:
        await store.close()


async def test_redis_keys_of_the_previous_release_are_read_back(tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")
    from bot.store.redis import RedisStore
    from tests.support.redis_server import RedisServer, require_redis_server

    with RedisServer(tmp_path / "redis", binary=require_redis_server()) as server:
        await restore_redis(server.url)
        store = RedisStore(server.url, SQLiteStore(unpack_state(tmp_path / "local.db")))
        await store.open()
        try:
            await assert_shared_state_read_back(store)
            taken = await store.jobs.take_over("new-replica", 60)  # the old replica's leases ran out long ago
            assert sorted(job.job_id for job in taken) == sorted(EXPECTED["in_flight"])
        finally:
            await store.close()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for key, value in {"DATA_DIR": tmp_path / "data", "HTTP_PORT": 0, "INSTANCE_ID": "upgraded"}.items():
        monkeypatch.setenv(f"PEEKBOT_{key}", str(value))
    return Settings()


async def run_on(settings: Settings, store: Store) -> tuple[Application, LocalFilesAdapter, FakeEngine]:
    adapter = LocalFilesAdapter()
    engine = FakeEngine()
    app = Application(settings, engine=engine, adapters=[adapter], services=[], store=store)
    await app.start()
    return app, adapter, engine


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_jobs_in_flight_across_an_upgrade_are_answered_once(
    backend: str, settings: Settings, tmp_path: Path
) -> None:
    state_file = unpack_state(Path(settings.core.data_dir) / "state.db")
    server: Any = None
    if backend == "redis":
        pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")
        from bot.store.redis import RedisStore
        from tests.support.redis_server import RedisServer, require_redis_server

        server = RedisServer(tmp_path / "redis", binary=require_redis_server()).start()
        await restore_redis(server.url)

        def open_store() -> Store:
            return RedisStore(server.url, SQLiteStore(state_file))
    else:

        def open_store() -> Store:
            return SQLiteStore(state_file)

    try:
        app, adapter, engine = await run_on(settings, open_store())
        try:
            # Both stores hand the jobs over at the start: SQLite as this bot's own, Redis as leases long run out.
            assert len(adapter.resumed) == len(EXPECTED["in_flight"])
            for _, _, reply in adapter.resumed:
                await reply.wait(60)
                assert reply.error is None and reply.final
            assert await app.wait_idle(30)
            questions = {message.text: state for message, state, _ in adapter.resumed}
            assert questions == {question: state for _, question, state in EXPECTED["in_flight"].values()}
            assert sorted(request.question for request in engine.requests) == sorted(questions)
            for job_id in EXPECTED["in_flight"]:
                job = await app.store.jobs.get(job_id)
                assert job is not None and job.state is JobState.ANSWERED and job.owner == "upgraded"
            for job_id, (state, _) in EXPECTED["finished"].items():
                assert (await app.store.jobs.get(job_id)).state is JobState(state)  # type: ignore[union-attr]
        finally:
            await app.stop()
        app, adapter, engine = await run_on(settings, open_store())  # the next start has nothing left to do
        try:
            await asyncio.sleep(1.0)
            assert adapter.resumed == [] and engine.requests == []
        finally:
            await app.stop()
    finally:
        if server is not None:
            server.stop()
