"""Answer buttons through the core: ratings recorded once per person per answer, and Stop keeping what was written.

An adapter on local files that reports answer actions (``tests.support.buttons``) gets the core's callback at start;
the tests click through that callback as a platform would. The engine is the torch-free ``FakeEngine``, held at its
gate while an answer streams.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Application
from bot.durability import FINAL_KIND, FINAL_TEXT
from bot.ratings import (
    NOT_AN_ANSWER,
    NOT_FINISHED,
    THANKS_HELPFUL,
    THANKS_NOT_HELPFUL,
    THANKS_REASON,
    UNKNOWN_ANSWER,
)
from bot.settings import Settings
from bot.stops import ALREADY_COMPLETE, NOT_YOURS, STOPPING
from bot.store.base import JobState, Store
from bot.store.sqlite import SQLiteStore
from bot.types import AnswerActionKind, IncomingMessage, User
from tests.support.apps import AppStarter
from tests.support.buttons import ButtonsAdapter
from tests.support.engines import FakeEngine
from tests.support.helpers import RecordingReply, message
from tests.support.redis_server import RedisServer, require_redis_server

pytestmark = pytest.mark.timeout(60)

HELPFUL, NOT_HELPFUL, STOP = AnswerActionKind.HELPFUL, AnswerActionKind.NOT_HELPFUL, AnswerActionKind.STOP


Bot = tuple[Application, ButtonsAdapter, FakeEngine]


@pytest.fixture
async def bot(start_app: AppStarter) -> AsyncIterator[Bot]:
    adapter = ButtonsAdapter()
    app = await start_app(
        {"PEEKBOT_ADMINS": "local:BOSS", "PEEKBOT_DRAIN_TIMEOUT_S": 1},
        engine=lambda _: FakeEngine(),
        adapters=lambda _: [adapter],
    )
    engine = app.engine
    assert isinstance(engine, FakeEngine)
    try:
        yield app, adapter, engine
    finally:
        engine.release()


async def answered(app: Application, text: str = "what does this error mean?") -> IncomingMessage:
    question = message(text)
    reply = RecordingReply()
    assert await app.handle(question, reply)
    await reply.wait(10)
    assert await app.wait_idle(10)
    return question


async def streaming(
    app: Application, engine: FakeEngine, text: str = "summarise this"
) -> tuple[IncomingMessage, RecordingReply]:
    """A question whose answer has streamed its first word and waits at the engine's gate."""
    engine.hold()
    question = message(text)
    reply = RecordingReply()
    assert await app.handle(question, reply)
    await asyncio.wait_for(engine.waiting.wait(), 10)
    return question, reply


def rows(app: Application, query: str) -> list[tuple[Any, ...]]:
    """What the state file holds, read as an operator would."""
    with sqlite3.connect(Path(app.settings.core.data_dir) / "state.db") as conn:
        found = conn.execute(query).fetchall()
    conn.close()
    return found


async def test_a_rating_is_stored_once_per_person_and_a_second_click_replaces_it(bot: Bot) -> None:
    app, adapter, _ = bot
    question = await answered(app, "what is the secret on this invoice?")
    job_id = f"local:{question.message_id}"

    assert await adapter.click(question, HELPFUL) == THANKS_HELPFUL
    assert await adapter.click(question, NOT_HELPFUL) == THANKS_NOT_HELPFUL
    assert await adapter.click(question, NOT_HELPFUL, reason="did not read the file") == THANKS_REASON
    assert await adapter.click(question, HELPFUL, user=User("local", "U2", "Bo")) == THANKS_HELPFUL

    ratings = await app.store.ratings.ratings(0)
    assert sorted((r.job_id, r.user, r.rating, r.reason) for r in ratings) == [
        (job_id, "local:U1", "not_helpful", "did not read the file"),
        (job_id, "local:U2", "helpful", ""),
    ], "one rating per person per answer: the change replaced the first click"
    stored = " ".join(str(value) for row in rows(app, "SELECT * FROM ratings") for value in row)
    assert "invoice" not in stored and "answer" not in stored, "no question or answer text is stored"


async def test_only_answers_that_exist_and_are_complete_can_be_rated(bot: Bot) -> None:
    app, adapter, engine = bot
    assert await adapter.click(message("never asked"), HELPFUL) == UNKNOWN_ANSWER
    running, _ = await streaming(app, engine)
    assert await adapter.click(running, HELPFUL) == NOT_FINISHED
    engine.release()
    assert await app.wait_idle(10)

    engine.answer = lambda _: (_ for _ in ()).throw(RuntimeError("the model broke"))
    failed = message("and this one?")
    reply = RecordingReply()
    assert await app.handle(failed, reply)
    await reply.wait(10)
    assert await app.wait_idle(10)
    assert reply.error is not None
    assert await adapter.click(failed, NOT_HELPFUL) == NOT_AN_ANSWER
    assert await app.store.ratings.ratings(0) == [], "nothing stored for what cannot be rated"


async def test_a_rating_pressed_while_the_final_answer_goes_out_counts(bot: Bot) -> None:
    """The buttons appear with the final text, a moment before the journal says "answered": a press then counts."""
    app, adapter, engine = bot
    question, _ = await streaming(app, engine)
    job_id = f"local:{question.message_id}"
    job = await app.store.jobs.get(job_id)
    assert job is not None and job.state is JobState.RUNNING
    final = {**job.reply_state, FINAL_TEXT: "answer", FINAL_KIND: "finish"}
    assert await app.store.jobs.mark(job_id, JobState.RUNNING, reply_state=final)  # journaled, being delivered
    assert await adapter.click(question, HELPFUL) == THANKS_HELPFUL
    engine.release()
    assert await app.wait_idle(10)
    assert [r.rating for r in await app.store.ratings.ratings(0)] == ["helpful"]


async def test_ratings_are_rate_limited_per_person(bot: Bot) -> None:
    app, adapter, _ = bot
    question = await answered(app)
    sentences = [await adapter.click(question, HELPFUL if i % 2 else NOT_HELPFUL) for i in range(14)]
    refused = [s for s in sentences if s.startswith("You're rating faster than I can keep up")]
    assert len(refused) == 4, "a burst of 10, then a polite refusal"
    assert len(await app.store.ratings.ratings(0)) == 1


async def test_stop_by_the_asker_keeps_the_text_so_far_and_is_never_resumed(
    bot: Bot, start_app: AppStarter, caplog: pytest.LogCaptureFixture
) -> None:
    app, adapter, engine = bot
    question, reply = await streaming(app, engine, "transcribe this long document")
    job_id = f"local:{question.message_id}"

    with caplog.at_level("INFO", logger="bot.stops"):
        assert await adapter.click(question, STOP) == STOPPING
    assert await app.wait_idle(10)

    assert reply.final == "answer\n\n(stopped by Ada)", "the text so far stays, with who stopped it"
    assert reply.error is None
    assert engine.cancelled == [engine.requests[0].request_id], "the generation was cancelled"
    job = await app.store.jobs.get(job_id)
    assert job is not None and job.state is JobState.ANSWERED
    assert await adapter.click(question, STOP) == ALREADY_COMPLETE
    assert f"job {job_id}: stopped by local:U1" in caplog.text
    assert "transcribe" not in caplog.text, "a Stop is logged without text"
    audited = rows(app, "SELECT job_id, user, answer_chars FROM audit WHERE outcome = 'stopped'")
    assert audited == [(job_id, "local:U1", 0)], "audited once, without text"

    await app.stop()
    restarted_adapter = ButtonsAdapter()
    restarted = await start_app(engine=lambda _: FakeEngine(), adapters=lambda _: [restarted_adapter])
    await asyncio.sleep(0.3)
    assert restarted_adapter.resumed == [] and restarted.engine.requests == [], "a stopped answer is not resumed"  # type: ignore[attr-defined]


async def test_stop_by_someone_else_is_refused_but_an_admin_may_stop(bot: Bot) -> None:
    app, adapter, engine = bot
    question, reply = await streaming(app, engine)

    assert await adapter.click(question, STOP, user=User("local", "U2", "Bo")) == NOT_YOURS
    await asyncio.sleep(0.1)
    assert not reply.done.is_set() and engine.cancelled == [], "the answer goes on"

    assert await adapter.click(question, STOP, user=User("local", "BOSS", "Admin")) == STOPPING
    assert await app.wait_idle(10)
    assert reply.final == "answer\n\n(stopped by Admin)"


async def test_a_stop_after_the_answer_finished_changes_nothing(bot: Bot) -> None:
    app, adapter, _ = bot
    question = await answered(app)
    assert await adapter.click(question, STOP) == ALREADY_COMPLETE
    assert await adapter.click(message("unknown"), STOP) != STOPPING


# --- two replicas on one shared store -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    """Opens each replica's store: one SQLite file shared as a shared store is, or one Redis with a local file each."""
    if request.param == "sqlite":
        yield lambda _: SQLiteStore(tmp_path / "shared.db", single_process=False)
        return
    pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")
    from bot.store.redis import RedisStore

    with RedisServer(tmp_path / "redis", binary=require_redis_server()) as server:
        yield lambda instance: RedisStore(server.url, SQLiteStore(tmp_path / f"{instance}.db"))


async def test_a_stop_and_a_rating_clicked_on_another_replica_reach_the_answer_where_it_streams(
    shared_store: Callable[[str], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    apps: list[Application] = []
    adapters: list[ButtonsAdapter] = []
    engines: list[FakeEngine] = []
    try:
        for instance in ("replica-a", "replica-b"):
            monkeypatch.setenv("PEEKBOT_INSTANCE_ID", instance)
            adapters.append(ButtonsAdapter())
            engines.append(FakeEngine())
            apps.append(
                Application(Settings(), engine=engines[-1], adapters=[adapters[-1]], store=shared_store(instance))
            )
            await apps[-1].start()
        question, reply = await streaming(apps[0], engines[0])

        assert await adapters[1].click(question, STOP) == STOPPING
        assert await apps[0].wait_idle(10)
        assert reply.final == "answer\n\n(stopped by Ada)"
        job = await apps[1].store.jobs.get(f"local:{question.message_id}")
        assert job is not None and job.state is JobState.ANSWERED

        assert await adapters[1].click(question, NOT_HELPFUL) == THANKS_NOT_HELPFUL
        assert (await apps[0].ratings.summary(7)).line() == "Helpful: 0 % of 1 rated (7 days).", "shared by replicas"
    finally:
        for engine in engines:
            engine.release()
        for app in apps:
            await app.stop()
