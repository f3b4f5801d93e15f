"""What the stores forget when a message or file is deleted: turns, files, documents, page text, cached answers.

Every test runs on the SQLite store and on the Redis store (skipped without ``redis-server``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.base import DocumentInfo, Store
from bot.store.codec import decode_file, encode_file
from bot.store.sqlite import SQLiteStore, apply_migrations
from bot.types import FileRef
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

THREAD = "slack:T1:C1:1700000000.000100"
OTHER_THREAD = "slack:T1:C1:1700000000.000900"
ELSEWHERE = "slack:T1:C2:1700000001.000100"
LONG_S = 60.0


def ref(file_id: str, message_id: str = "") -> str:
    source = {"message_id": message_id} if message_id else {}
    return encode_file(FileRef("slack", file_id, f"{file_id}.png", "image/png", source=source))


def named(*file_ids: str):
    return lambda file_ref: decode_file(file_ref).file_id in file_ids


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "state.db")
    else:
        pytest.importorskip("redis", reason="the Redis client is not installed")
        from redis import asyncio as aioredis

        from bot.store.redis import RedisStore

        server: RedisServer = request.getfixturevalue("redis_server")
        client = aioredis.from_url(server.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()
        opened = RedisStore(server.url, SQLiteStore(tmp_path / "local.db"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_deleted_question_leaves_the_history_and_the_cache(store: Store) -> None:
    for message_id, text in (("C1:1.0", "what is this?"), ("C1:2.0", "my password is on it, sorry")):
        await store.conversations.add_turn(THREAD, "user", text, message_id=message_id)
        await store.conversations.add_turn(THREAD, "assistant", f"about: {text}", message_id=message_id)
    await store.conversations.add_turn(OTHER_THREAD, "user", "unrelated", message_id="C1:2.0")
    await store.cache.put_answer(THREAD, "k", "a cached answer", LONG_S)
    await store.cache.put_answer(OTHER_THREAD, "k", "kept", LONG_S)

    assert await store.conversations.forget_message(THREAD, "C1:2.0") == 2

    assert [t.text for t in await store.conversations.turns(THREAD, 10)] == ["what is this?", "about: what is this?"]
    assert await store.cache.get_answer(THREAD, "k") is None, "answers built on the deleted turn go"
    assert [t.text for t in await store.conversations.turns(OTHER_THREAD, 10)] == ["unrelated"]
    assert await store.cache.get_answer(OTHER_THREAD, "k") == "kept"
    assert await store.conversations.forget_message(THREAD, "C1:2.0") == 0, "forgetting twice is harmless"


async def test_a_deleted_file_leaves_every_thread_of_its_scope_with_its_documents(store: Store) -> None:
    for conversation in (THREAD, OTHER_THREAD, ELSEWHERE):
        await store.conversations.add_file(conversation, ref("Fsecret"), "hash-secret")
        await store.conversations.add_file(conversation, ref("Fother"), "hash-other")
        await store.cache.put_answer(conversation, "k", "cached", LONG_S)
    # A long PDF made of the deleted file, one of a file that stays, and an image set (earlier images, searched).
    for document_id, file_id in (("hash-secret", "Fsecret"), ("hash-other", "Fother"), ("image-set-1", "Fother")):
        await store.documents.add_document(DocumentInfo(document_id, THREAD, document_id, 3, ref(file_id)))
        await store.documents.put_page(
            document_id, 1, f"page text of {document_id}", page_hash=f"p-{document_id}", source="transcribed"
        )

    affected = await store.conversations.forget_files("slack:T1:C1", named("Fsecret"))

    assert affected == sorted([THREAD, OTHER_THREAD])
    for conversation in (THREAD, OTHER_THREAD):
        assert [f.content_hash for f in await store.conversations.files(conversation, 10)] == ["hash-other"]
        assert await store.cache.get_answer(conversation, "k") is None
    assert len(await store.conversations.files(ELSEWHERE, 10)) == 2, "another channel is out of scope"
    assert await store.cache.get_answer(ELSEWHERE, "k") == "cached"
    assert [d.document_id for d in await store.documents.documents(THREAD)] == ["hash-other"]
    assert await store.documents.search(["hash-secret", "image-set-1"], "page text", 10) == []
    assert await store.documents.transcription("p-hash-secret") is None, "its transcribed text is gone too"
    assert await store.documents.transcription("p-hash-other") is not None

    assert await store.conversations.forget_files("", named("Fsecret")) == [ELSEWHERE], "an empty scope: everywhere"
    assert [f.content_hash for f in await store.conversations.files(ELSEWHERE, 10)] == ["hash-other"]
    assert await store.conversations.forget_files("", named("Fsecret")) == []


async def test_files_of_a_recalled_message_are_found_by_the_message_they_came_in(store: Store) -> None:
    await store.conversations.add_file("feishu:tenant:oc_1:om_1", ref("img_1", message_id="om_1"), "h1")
    await store.conversations.add_file("feishu:tenant:oc_1:om_1", ref("img_2", message_id="om_2"), "h2")

    def of_om_1(file_ref: str) -> bool:
        return decode_file(file_ref).source.get("message_id") == "om_1"

    assert await store.conversations.forget_files("feishu:tenant:oc_1", of_om_1) == ["feishu:tenant:oc_1:om_1"]
    assert [f.content_hash for f in await store.conversations.files("feishu:tenant:oc_1:om_1", 10)] == ["h2"]


async def test_a_version_4_file_keeps_its_turns_through_migration_5(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert apply_migrations(conn, 4) == 4
        conn.execute("INSERT INTO conversations VALUES (?, 1)", (THREAD,))
        conn.execute(
            "INSERT INTO turns (conversation, role, text, created_at) VALUES (?, 'user', 'old turn', 1)", (THREAD,)
        )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.schema_version >= 5
        assert [t.text for t in await store.conversations.turns(THREAD, 5)] == ["old turn"]
        await store.conversations.add_turn(THREAD, "user", "new turn", message_id="C1:5.0")
        assert await store.conversations.forget_message(THREAD, "C1:5.0") == 1
        assert [t.text for t in await store.conversations.turns(THREAD, 5)] == ["old turn"]
    finally:
        await store.close()
