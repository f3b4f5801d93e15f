"""The embedded SQLite store: the shared store contract plus search, migrations, durability and audit."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.store import open_store
from bot.store.base import AuditRecord, DocumentInfo, Job, JobState
from bot.store.codec import CodecError, decode_file, decode_message, encode_file, encode_message
from bot.store.sqlite import SCHEMA_VERSION, SQLiteStore, StoreSchemaError, apply_migrations, fts_query
from bot.types import (
    ChatType,
    ConversationKey,
    FileRef,
    FileSegment,
    ImageSegment,
    IncomingMessage,
    MentionSegment,
    TextSegment,
    User,
)
from tests.store.contract import *  # noqa: F403

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _job(job_id: str) -> Job:
    return Job(job_id, "feishu", "feishu:tenant:oc_1", "feishu:ou_1", encode_message(_full_message()))


def _full_message(thread: str | None = "om_root") -> IncomingMessage:
    source = {"message_id": "om_2", "type": "file"}
    pdf = FileRef("feishu", "file_v3_1", "季度报告.pdf", "application/pdf", None, source)
    image = FileRef("feishu", "img_v3_9", "", "image/png", 51_234, {"message_id": "om_2", "type": "image"})
    earlier = FileRef("feishu", "img_v3_0", "earlier.jpg", "image/jpeg", 10, {"message_id": "om_0"})
    return IncomingMessage(
        event_id="ev-1",
        message_id="om_2",
        conversation=ConversationKey("feishu", "tenant-x", "oc_chat", thread),
        user=User("feishu", "ou_user", "李雷", is_bot=False),
        chat_type=ChatType.GROUP,
        segments=(
            MentionSegment("ou_bot", is_self=True),
            TextSegment('这个报告第三页说了什么? "quotes" and emoji 🙂'),
            ImageSegment(image),
            FileSegment(pdf),
            MentionSegment("ou_other"),
        ),
        mentions_bot=True,
        context_files=(earlier,),
        is_command=False,
        received_at=1_700_000_123.456,
    )


# --- codec ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thread", ["om_root", None])
def test_message_codec_round_trips_every_field(thread: str | None) -> None:
    message = _full_message(thread)
    assert decode_message(encode_message(message)) == message
    command = IncomingMessage(
        "ev-2", "C1:1.2", ConversationKey("slack", "T1", "D1"), User("slack", "U1"), ChatType.DIRECT,
        (TextSegment("/peekbot status"),), is_command=True, received_at=5.0,
    )  # fmt: skip
    assert decode_message(encode_message(command)) == command


def test_file_codec_round_trips_and_refuses_what_it_cannot_read() -> None:
    ref = FileRef("slack", "F9", "shot.png", "image/png", 1234, {"url_private_download": "https://x/F9", "ts": "1.2"})
    assert decode_file(encode_file(ref)) == ref
    assert decode_file(encode_file(FileRef("slack", "F0"))) == FileRef("slack", "F0")
    future = json.loads(encode_file(ref)) | {"v": 99}
    with pytest.raises(CodecError, match="version 99"):
        decode_file(json.dumps(future))
    with pytest.raises(CodecError):
        decode_message("not json")
    with pytest.raises(CodecError, match="incomplete"):
        decode_message(json.dumps({"v": 1, "event_id": "e"}))


# --- full-text search -----------------------------------------------------------------------------------------------

FILLER = (
    "The quarterly operations review covers staffing, facilities, vendor contracts and the travel policy. "
    "Each section lists owners, deadlines and open risks for the next planning cycle."
)


async def _forty_page_document(store: SQLiteStore, conversation: str = "slack:T1:C1:1.0") -> str:
    await store.documents.add_document(DocumentInfo("doc-40", conversation, "ops-review.pdf", 40, "{}"))
    for page in range(1, 41):
        text = f"Page {page}. {FILLER}"
        if page == 27:
            text += " The emergency shutoff valve for the Kestrel turbine sits behind panel 7B."
        await store.documents.put_page("doc-40", page, text, page_hash=f"p{page}", source="text-layer")
    return "doc-40"


async def test_search_finds_the_page_with_a_unique_phrase(store: SQLiteStore) -> None:
    doc = await _forty_page_document(store)

    hits = await store.documents.search([doc], "Where is the Kestrel turbine shutoff valve?", 3)

    assert hits[0].page == 27
    assert hits[0].document_id == doc
    assert "Kestrel turbine" in hits[0].snippet
    assert len(hits[0].snippet) < 200
    assert all(hits[0].score > hit.score for hit in hits[1:])
    assert await store.documents.indexed_pages(doc) == set(range(1, 41))
    [info] = await store.documents.documents("slack:T1:C1:1.0")
    assert (info.page_count, info.indexed_pages, info.name) == (40, 40, "ops-review.pdf")


async def test_search_is_limited_to_the_given_documents(store: SQLiteStore) -> None:
    doc = await _forty_page_document(store)
    await store.documents.add_document(DocumentInfo("doc-other", "slack:T1:C2", "other.pdf", 1, "{}"))
    await store.documents.put_page("doc-other", 1, "Kestrel turbine manual", page_hash="o1", source="text-layer")

    assert {hit.document_id for hit in await store.documents.search([doc], "Kestrel", 10)} == {doc}
    assert [hit.document_id for hit in await store.documents.search(["doc-other"], "Kestrel", 10)] == ["doc-other"]
    assert await store.documents.search([], "Kestrel", 10) == []
    assert await store.documents.search(["no-such-doc"], "Kestrel", 10) == []


async def test_search_finds_chinese_phrases(store: SQLiteStore) -> None:
    conversation = "feishu:tenant:oc_1"
    await store.documents.add_document(DocumentInfo("doc-zh", conversation, "报告.pdf", 3, "{}"))
    pages = {
        1: "公司年度总结：员工人数增长，办公室搬迁到新的地址。",
        2: "第三季度预算表：市场部门的广告费用为一百二十万元，研发部门另行申请。",
        3: "附录：会议纪要与联系人名单（Contact list for the Berlin office）。",
    }
    for page, text in pages.items():
        await store.documents.put_page("doc-zh", page, text, page_hash=f"zh{page}", source="transcribed")

    for question in ("第三季度的预算是多少？", "广告费用", "预算", "Berlin"):
        hits = await store.documents.search(["doc-zh"], question, 2)
        expected = 3 if question == "Berlin" else 2
        assert hits and hits[0].page == expected, question
    assert "预算" in (await store.documents.search(["doc-zh"], "预算", 1))[0].snippet
    assert [h.page for h in await store.documents.search(["doc-zh"], "研", 3)] == [2], "one character finds it too"


@pytest.mark.parametrize(
    "hostile",
    ['"', '""', "*", "NEAR(", "NEAR(a b", "-", "- -", "", "   ", "AND", "OR NOT", "col:umn", "^start", "a' OR '1'='1",
     "(((", "{body}: x", "\x00", "Kestrel*", '"Kestrel'],
)  # fmt: skip
async def test_search_survives_hostile_queries(store: SQLiteStore, hostile: str) -> None:
    doc = await _forty_page_document(store)

    hits = await store.documents.search([doc], hostile, 5)

    assert isinstance(hits, list)
    if "Kestrel" in hostile:
        assert hits[0].page == 27
    expression = fts_query(hostile)
    assert expression is None or all(part.startswith('"') for part in expression.split(" OR "))


async def test_replacing_a_page_replaces_its_searchable_text(store: SQLiteStore) -> None:
    await store.documents.add_document(DocumentInfo("doc-r", "c", "scan.pdf", 2, "{}"))
    await store.documents.put_page("doc-r", 1, "blurry first guess", page_hash="h1", source="transcribed")
    await store.documents.put_page("doc-r", 1, "clear invoice number 4471", page_hash="h1b", source="transcribed")

    assert await store.documents.search(["doc-r"], "blurry", 5) == []
    assert [h.page for h in await store.documents.search(["doc-r"], "invoice", 5)] == [1]
    assert await store.documents.indexed_pages("doc-r") == {1}
    assert await store.documents.transcription("h1b") == "clear invoice number 4471"
    assert await store.documents.transcription("never-seen") is None


async def test_reset_keeps_the_transcription_cache_and_shared_documents(store: SQLiteStore) -> None:
    for conversation in ("c-a", "c-b"):
        await store.documents.add_document(DocumentInfo("shared", conversation, "deck.pdf", 1, "{}"))
    await store.documents.add_document(DocumentInfo("only-a", "c-a", "notes.pdf", 1, "{}"))
    await store.documents.put_page("shared", 1, "roadmap milestones", page_hash="s1", source="text-layer")
    await store.documents.put_page("only-a", 1, "handwritten notes", page_hash="a1", source="transcribed")

    assert await store.conversations.reset("c-a")

    assert await store.documents.documents("c-a") == []
    assert [h.document_id for h in await store.documents.search(["shared"], "roadmap", 5)] == ["shared"]
    assert await store.documents.search(["only-a"], "handwritten", 5) == []
    assert await store.documents.indexed_pages("only-a") == set()
    assert await store.documents.transcription("a1") == "handwritten notes"
    with sqlite3.connect(store.path) as conn:
        indexed = conn.execute("SELECT COUNT(*) FROM pages_fts").fetchone()[0]
        assert indexed == conn.execute("SELECT COUNT(*) FROM pages").fetchone()[0] == 1, "no orphaned index rows"
    conn.close()


# --- schema and durability ------------------------------------------------------------------------------------------


async def test_a_version_1_file_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert apply_migrations(conn, 1) == 1
        conn.execute(
            "INSERT INTO jobs (job_id, platform, conversation, user, message, state, reply_state, attempts, owner, "
            "lease_until, created_at, updated_at) VALUES ('old-job', 'feishu', 'feishu:tenant:oc_1', 'feishu:ou_1', "
            "?, 'running', '{\"card_id\": \"c1\"}', 1, 'old-pid', 0, 1, 1)",
            (encode_message(_full_message()),),
        )
        conn.execute("INSERT INTO dedupe_keys VALUES ('feishu:msg:om_2', ?)", (time.time() + 3600,))
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"jobs", "dedupe_keys"}
        assert "turns" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.schema_version == SCHEMA_VERSION >= 4
        assert f"schema v{SCHEMA_VERSION}" in store.describe()
        [job] = await store.jobs.take_over("new-pid", 60)
        assert (job.job_id, job.state, job.attempts) == ("old-job", JobState.RUNNING, 2)
        assert job.reply_state == {"card_id": "c1"}
        assert decode_message(job.message) == _full_message()
        assert not await store.dedupe.claim("feishu:msg:om_2", 60)
        await store.conversations.add_turn("feishu:tenant:oc_1", "user", "works after the migration")
        assert len(await store.conversations.turns("feishu:tenant:oc_1", 5)) == 1
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreSchemaError, match="newer than this peekbot"):
        await store.open()
    with pytest.raises(RuntimeError, match="not open"):
        await store.dedupe.claim("k", 1)


async def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"
    first = SQLiteStore(path)
    await first.open()
    assert await first.jobs.accept(_job("j1"), "run-1", 60)
    await first.jobs.mark("j1", JobState.RUNNING, reply_state={"card_id": "c-9", "sequence": "4"})
    assert await first.dedupe.claim("slack:event:E1", 3600)
    await first.conversations.add_turn("conv", "user", "first question")
    await first.conversations.add_file("conv", encode_file(FileRef("slack", "F1")), "h1")
    await first.cache.put_answer("conv", "key", "an answer", 3600)
    await _forty_page_document(first, "conv")
    record = AuditRecord("j0", "slack", "slack:U1", "conv", ("h1",), 10, 99, 1.5, "answered", time.time())
    await first.audit.record(record)
    await first.close()
    await first.close()  # closing twice is harmless
    assert not path.with_name("state.db-wal").exists() or path.with_name("state.db-wal").stat().st_size == 0

    second = SQLiteStore(path)
    await second.open()
    try:
        [job] = await second.jobs.unfinished()
        assert (job.job_id, job.state, job.reply_state) == ("j1", JobState.RUNNING, {"card_id": "c-9", "sequence": "4"})
        assert not await second.dedupe.claim("slack:event:E1", 3600)
        assert [t.text for t in await second.conversations.turns("conv", 5)] == ["first question"]
        assert [f.content_hash for f in await second.conversations.files("conv", 5)] == ["h1"]
        assert await second.cache.get_answer("conv", "key") == "an answer"
        assert (await second.documents.search(["doc-40"], "Kestrel", 1))[0].page == 27
        assert (await second.audit.summary(0)).questions == 1
    finally:
        await second.close()


async def test_an_accepted_job_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from bot.store.base import Job
        from bot.store.sqlite import SQLiteStore

        async def main():
            store = SQLiteStore({str(path)!r})
            await store.open()
            ok = await store.jobs.accept(Job("doomed", "slack", "c", "u", "{{}}"), "pid-1", 60)
            print("accepted" if ok else "refused", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    assert stdout.decode().strip() == "accepted"

    store = SQLiteStore(path)
    await store.open()
    try:
        [job] = await store.jobs.take_over("pid-2", 60, include_live=True)
        assert (job.job_id, job.attempts, job.owner) == ("doomed", 1, "pid-2")
    finally:
        await store.close()


async def test_two_stores_on_one_file_hand_each_job_to_one(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    a, b = SQLiteStore(path, busy_timeout_s=30), SQLiteStore(path, busy_timeout_s=30)
    await asyncio.gather(a.open(), b.open())
    try:
        ids = [f"job-{i:02d}" for i in range(20)]
        for i, job_id in enumerate(ids):
            assert await (a if i % 2 else b).jobs.accept(_job(job_id), "dead", 0.05)
        assert not await b.jobs.accept(_job("job-00"), "b", 60), "the other store sees the first accept"
        await asyncio.sleep(0.2)

        taken: dict[str, list[str]] = {"a": [], "b": []}

        async def grab(name: str, store: SQLiteStore) -> None:
            for _ in range(5):
                taken[name] += [job.job_id for job in await store.jobs.take_over(name, 60)]

        await asyncio.gather(grab("a", a), grab("b", b))

        everything = taken["a"] + taken["b"]
        assert sorted(everything) == ids, "each job exactly once"
        for job_id in ids:
            job = await a.jobs.get(job_id)
            assert job is not None
            assert job.attempts == 1
            assert job_id in taken[job.owner]
    finally:
        await asyncio.gather(a.close(), b.close())


# --- expiry, audit ----------------------------------------------------------------------------------------------------


async def test_expiry_deletes_by_age(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    try:
        await store.dedupe.claim("old-key", 60)
        await store.conversations.add_turn("idle", "user", "old question")
        await store.documents.add_document(DocumentInfo("idle-doc", "idle", "a.pdf", 1, "{}"))
        await store.documents.put_page("idle-doc", 1, "stale text", page_hash="t-idle", source="transcribed")
        await store.cache.put_answer("idle", "k", "old answer", 60)
        clock.now += 3600
        await store.dedupe.claim("new-key", 60)
        await store.conversations.add_turn("active", "user", "new question")

        assert await store.dedupe.expire_keys() == 1
        assert await store.dedupe.claim("old-key", 60), "an expired key can be claimed again"
        assert await store.conversations.expire_conversations(1800) == 1

        assert await store.conversations.turns("idle", 5) == []
        assert await store.documents.documents("idle") == []
        assert await store.documents.transcription("t-idle") is None, "old transcriptions no page uses go too"
        assert [t.text for t in await store.conversations.turns("active", 5)] == ["new question"]
        assert await store.conversations.expire_conversations(1800) == 0
    finally:
        await store.close()


def _record(user: str, outcome: str, latency: float, *, at: float, platform: str = "slack") -> AuditRecord:
    job_id = f"job-{user}-{at}-{latency}"
    return AuditRecord(job_id, platform, user, "conv", ("h1", "h2"), 30, 200, latency, outcome, at)


async def test_audit_summary_counts_and_latency(store: SQLiteStore) -> None:
    now = time.time()
    await store.audit.record(_record("slack:U-old", "answered", 99.0, at=now - 10_000))
    for i in range(20):
        await store.audit.record(_record("slack:U1", "answered", float(i + 1), at=now - 100 + i))
    await store.audit.record(_record("slack:U2", "refused", 0.0, at=now - 50))
    await store.audit.record(_record("feishu:ou_3", "cached", 0.01, at=now - 40, platform="feishu"))
    await store.audit.record(_record("feishu:ou_3", "failed", 3.0, at=now - 30, platform="feishu"))

    summary = await store.audit.summary(now - 1000, top=2)

    assert summary.questions == 23
    assert summary.by_outcome == {"answered": 20, "refused": 1, "cached": 1, "failed": 1}
    assert summary.by_platform == {"slack": 21, "feishu": 2}
    assert summary.top_users == [("slack:U1", 20), ("feishu:ou_3", 2)]
    assert summary.mean_latency_s == pytest.approx(10.5)
    assert summary.p95_latency_s == 19.0
    assert await store.audit.count_for_user("feishu:ou_3", now - 1000) == 1
    assert await store.audit.count_for_user("slack:U1", now - 90) == 10
    assert await store.audit.count_for_user("slack:U2", now - 1000, outcomes=("refused",)) == 1

    empty = await store.audit.summary(now + 1)
    assert (empty.questions, empty.mean_latency_s, empty.p95_latency_s, empty.top_users) == (0, None, None, [])
    assert await store.audit.expire_audit(5000) == 1
    assert (await store.audit.summary(0)).questions == 23


# --- open_store -------------------------------------------------------------------------------------------------------


def _settings(monkeypatch: pytest.MonkeyPatch, data_dir: Path, url: str | None) -> Settings:
    monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(data_dir))
    if url is None:
        monkeypatch.delenv("PEEKBOT_STORE_URL", raising=False)
    else:
        monkeypatch.setenv("PEEKBOT_STORE_URL", url)
    return Settings()


def test_open_store_picks_sqlite_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_store(_settings(monkeypatch, data_dir, None))
    assert isinstance(store, SQLiteStore)
    assert store.path == data_dir / "state.db"
    assert data_dir.is_dir(), "the data dir is created"
    assert store.describe().startswith(f"SQLite at {data_dir / 'state.db'}")

    relative = open_store(_settings(monkeypatch, data_dir, "sqlite:///sub/bot.db"))
    assert isinstance(relative, SQLiteStore)
    assert relative.path == data_dir / "sub" / "bot.db"
    absolute = open_store(_settings(monkeypatch, data_dir, f"sqlite:///{tmp_path / 'abs.db'}"))
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"


def test_open_store_refuses_unknown_urls_without_echoing_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PEEKBOT_STORE_URL must be") as caught:
        open_store(_settings(monkeypatch, tmp_path, "postgres://admin:hunter2@db:5432/bot"))
    assert "hunter2" not in str(caught.value)


def test_open_store_selects_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    redis_module = pytest.importorskip("bot.store.redis")
    store = open_store(_settings(monkeypatch, tmp_path / "d", "redis://:secret@127.0.0.1:6399/0"))
    assert isinstance(store, redis_module.RedisStore)
    assert "secret" not in store.describe()


async def test_a_locked_file_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """While another process holds the write lock, the store waits on its own thread; the loop keeps running."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path, busy_timeout_s=20)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.create_task(store.conversations.add_turn("conv", "user", "waits for the lock"))
        await asyncio.sleep(0.3)
        assert not pending.done(), "the write waits for the other process's lock"
        other.execute("ROLLBACK")
        await asyncio.wait_for(pending, 15)
        assert [t.text for t in await store.conversations.turns("conv", 5)] == ["waits for the lock"]
    finally:
        other.close()
        await store.close()
