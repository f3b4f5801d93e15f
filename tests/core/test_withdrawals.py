"""Deleted and recalled messages: not answered, forgotten, audited without content.

Through the core (an adapter on local files, an engine that holds its answers back while a test deletes), then
end to end through the loopback Slack and Feishu fakes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from adapters.feishu import FeishuAdapter
from adapters.slack import SlackAdapter
from bot.app import Application
from bot.settings import Settings
from bot.store.base import JobState
from bot.types import Adapter, IncomingMessage, MessageWithdrawn
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.fake_feishu import FakeFeishu, feishu_environment
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message, png, save_png
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401


@dataclass
class RetractableRecordingReply(RecordingReply):
    retracted: bool = False

    async def retract(self) -> None:
        self.retracted = True
        self.done.set()


SMALL_IMAGES = peekbot_environment(http_port=0, max_pixels=128 * 128)


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    return save_png(tmp_path / "secret.png", (10, 120, 200), (120, 80))


@asynccontextmanager
async def held_back(
    start_app: AppStarter, env: Mapping[str, str], adapter: Callable[[Settings], Adapter]
) -> AsyncIterator[tuple[Application, FakeEngine]]:
    """The core with ``adapter`` and an engine that holds answers back when told; released before the core stops."""
    application = await start_app(
        {**env, **SMALL_IMAGES}, engine=lambda _: FakeEngine(), adapters=lambda settings: [adapter(settings)]
    )
    try:
        yield application, engine(application)
    finally:
        engine(application).release()


@pytest.fixture
async def app(start_app: AppStarter) -> AsyncIterator[Application]:
    async with held_back(start_app, {}, lambda _: LocalFilesAdapter()) as (application, _):
        yield application


def engine(application: Application) -> FakeEngine:
    assert isinstance(application.engine, FakeEngine)
    return application.engine


def deleted(msg: IncomingMessage, *, kind: str = "deleted") -> MessageWithdrawn:
    return MessageWithdrawn(
        msg.platform, f"del-{msg.message_id}", message_id=msg.message_id, conversation=msg.conversation, kind=kind
    )


def audit_rows(application: Application, outcome: str) -> list[tuple[Any, ...]]:
    path = Path(application.settings.core.data_dir) / "state.db"
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT job_id, question_chars, answer_chars, image_hashes FROM audit WHERE outcome = ?", (outcome,)
        ).fetchall()
    conn.close()
    return rows


async def test_a_question_deleted_while_it_is_answered_is_stopped_and_its_reply_taken_back(
    app: Application, screenshot: Path
) -> None:
    gated = engine(app)
    gated.hold()
    question = message("what is the password on this?", local_image(screenshot))
    reply = RetractableRecordingReply()
    assert await app.handle(question, reply)
    await asyncio.wait_for(gated.waiting.wait(), 10)

    await app.withdraw(deleted(question))
    assert await app.wait_idle(10)
    await app.withdraw(deleted(question))  # the platform delivers the deletion again

    assert reply.retracted and reply.final is None and reply.error is None
    assert gated.cancelled == [gated.requests[0].request_id], "the generation was cancelled"
    job = await app.store.jobs.get(f"local:{question.message_id}")
    assert job is not None and (job.state, job.error) == (JobState.FAILED, "withdrawn")
    assert await app.store.jobs.unfinished() == [], "finished, never retried"
    assert await app.store.conversations.turns(str(question.conversation), 10) == []
    assert audit_rows(app, "withdrawn") == [(f"local:{question.message_id}", 0, 0, "[]")], "only that it happened"
    assert audit_rows(app, "answered") == audit_rows(app, "failed") == []


async def test_a_question_deleted_before_it_arrives_is_never_answered(app: Application, screenshot: Path) -> None:
    question = message("what is the password on this?", local_image(screenshot))
    await app.withdraw(deleted(question))  # the platform delivered the deletion first

    reply = RetractableRecordingReply()
    assert not await app.handle(question, reply)
    assert not await app.handle(replace(question, event_id=f"{question.event_id}-again"), reply)  # redelivered
    assert await app.wait_idle(10)
    assert (reply.final, reply.error, reply.retracted) == (None, None, False)
    assert engine(app).generations == 0
    assert len(audit_rows(app, "withdrawn")) == 1


async def test_a_question_deleted_after_its_answer_leaves_the_threads_context(
    app: Application, screenshot: Path
) -> None:
    gated = engine(app)
    question = message("what does this say?", local_image(screenshot), thread="T9")
    first = RecordingReply()
    assert await app.handle(question, first)
    await first.wait(10)
    assert await app.wait_idle(10)
    conversation = str(question.conversation)
    assert len(await app.store.conversations.turns(conversation, 10)) == 2
    assert len(await app.store.conversations.files(conversation, 10)) == 1

    await app.withdraw(
        MessageWithdrawn(
            "local",
            "ev-del",
            message_id=question.message_id,
            conversation=question.conversation,
            file_ids=(question.files[0].file_id,),
        )
    )

    assert first.final == "answer 1", "an answer already given stays"
    assert await app.store.conversations.turns(conversation, 10) == []
    assert await app.store.conversations.files(conversation, 10) == []
    follow_up = RecordingReply()
    assert await app.handle(message("and the date on it?", thread="T9"), follow_up)
    await follow_up.wait(10)
    last = gated.requests[-1]
    assert (last.images, last.history) == ([], []), "neither the picture nor the deleted question reach the model"
    assert len(audit_rows(app, "withdrawn")) == 1


# --- Slack, end to end ----------------------------------------------------------------------------------------------


@pytest.fixture
async def slack_app(
    slack: FakeSlack, start_app: AppStarter
) -> AsyncIterator[tuple[FakeSlack, Application, FakeEngine]]:
    async with held_back(start_app, slack_environment(slack), SlackAdapter) as (application, gated):
        yield slack, application, gated


async def test_slack_a_question_deleted_while_answered_loses_its_placeholder(slack_app) -> None:
    slack, app, gated = slack_app
    gated.hold()
    shot = slack.add_file("secret.png", png((200, 0, 0)), "image/png")
    question = slack.user_message("D0DM", "what is the password here?", files=[shot])
    await slack.send_event(question)
    await asyncio.wait_for(gated.waiting.wait(), 10)
    await slack.wait_until(lambda: slack.bot_messages("D0DM"), what="the placeholder")

    deletion = slack.delete_message("D0DM", question["ts"])  # a parent with a reply: it becomes a tombstone
    assert deletion["subtype"] == "message_changed"
    envelope = await slack.send_event(deletion)

    await slack.wait_for(lambda calls: any(c.method == "chat.delete" and c.ok for c in calls), what="chat.delete")
    await slack.wait_for_ack(envelope)
    assert await app.wait_idle(10)
    gated.release()
    await asyncio.sleep(0.2)
    assert slack.bot_messages("D0DM") == [], "no placeholder, no answer"
    assert gated.cancelled
    job = await app.store.jobs.get(f"slack:D0DM:{question['ts']}")
    assert job is not None and job.error == "withdrawn"


async def test_slack_a_deletion_that_comes_first_keeps_the_question_unanswered(slack_app) -> None:
    slack, app, gated = slack_app
    question = slack.user_message("D0DM", "what is on this screenshot?")
    deletion = slack.delete_message("D0DM", question["ts"])
    assert deletion["subtype"] == "message_deleted"
    await slack.wait_for_ack(await slack.send_event(deletion))
    await slack.wait_for_ack(await slack.send_event(question))
    assert await app.wait_idle(10)
    assert slack.bot_messages("D0DM") == [] and gated.generations == 0


async def test_slack_a_deleted_file_leaves_the_threads_context(slack_app) -> None:
    slack, app, gated = slack_app
    shot = slack.add_file("secret.png", png((0, 200, 0)), "image/png")
    question = slack.user_message("D0DM", "what is this?", files=[shot])
    await slack.send_event(question)
    await slack.wait_answered(question)
    assert await app.wait_idle(30)  # the answer shows before the conversation store records it
    conversation = f"slack:{slack.TEAM_ID}:D0DM:{question['ts']}"
    assert len(await app.store.conversations.files(conversation, 10)) == 1

    await slack.wait_for_ack(await slack.send_event(slack.delete_file(shot["id"])))
    assert await app.store.conversations.files(conversation, 10) == []

    follow_up = slack.user_message("D0DM", "and what else?", thread_ts=question["ts"])
    await slack.send_event(follow_up)
    await slack.wait_answered(follow_up)
    assert gated.requests[-1].images == [], "the deleted picture is not sent again"


# --- Feishu, end to end ---------------------------------------------------------------------------------------------


@pytest.fixture
async def feishu_app(
    feishu: FakeFeishu, start_app: AppStarter
) -> AsyncIterator[tuple[FakeFeishu, Application, FakeEngine]]:
    async with held_back(start_app, feishu_environment(feishu, fast_heartbeat=True), FeishuAdapter) as (app, gated):
        yield feishu, app, gated


async def test_feishu_a_question_recalled_while_answered_loses_its_card(feishu_app) -> None:
    fake, app, gated = feishu_app
    gated.hold()
    event = fake.message_event(msg_type="image", content={"image_key": "img_secret"})
    question_id = event["event"]["message"]["message_id"]
    fake.add_resource(question_id, "img_secret", png((0, 0, 200)))
    await fake.push_event(event)
    await asyncio.wait_for(gated.waiting.wait(), 10)
    [card] = await fake.wait_for(lambda: fake.replies_to(question_id), what="the card")

    transport_id = await fake.push_event(fake.recall_event(question_id))

    await fake.wait_for(lambda: card.deleted, what="the card recalled")
    await fake.wait_for(lambda: any(a.code == 200 for a in fake.acks_for(transport_id)), what="the ack")
    assert await app.wait_idle(10)
    gated.release()
    await asyncio.sleep(0.2)
    assert all(reply.deleted for reply in fake.replies_to(question_id)), "nothing else was sent"
    assert fake.calls_to("DELETE", rf"^/open-apis/im/v1/messages/{card.message_id}$")
    assert gated.cancelled
    rows = audit_rows(app, "withdrawn")
    assert [row[1:] for row in rows] == [(0, 0, "[]")]


async def test_feishu_a_recall_that_comes_first_keeps_the_question_unanswered(feishu_app) -> None:
    fake, app, gated = feishu_app
    event = fake.message_event(msg_type="text", content={"text": "what does the error say?"})
    question_id = event["event"]["message"]["message_id"]
    recall = fake.recall_event(question_id)
    recall_transport = await fake.push_event(recall)
    await fake.wait_for(lambda: fake.acks_for(recall_transport), what="the recall acked")
    question_transport = await fake.push_event(event)
    await fake.wait_for(lambda: fake.acks_for(question_transport), what="the question acked")
    assert await app.wait_idle(10)
    assert fake.replies_to(question_id) == [] and gated.generations == 0


# --- two replicas, one Redis ------------------------------------------------------------------------------------------


@pytest.fixture
async def replicas(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[Application, Application]]:
    pytest.importorskip("redis", reason="the Redis client is not installed")
    started: list[Application] = []
    for name in ("replica-a", "replica-b"):
        for key, value in {
            "PEEKBOT_STORE_URL": redis_server.url,
            "PEEKBOT_DATA_DIR": str(tmp_path / name),
            "PEEKBOT_INSTANCE_ID": name,
            "PEEKBOT_HTTP_PORT": "0",
            "PEEKBOT_MAX_PIXELS": str(128 * 128),
        }.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        for layer in ("core", "engine", "images", "access", "scheduler"):
            getattr(settings, layer)  # read now, with this replica's environment
        application = Application(settings, engine=FakeEngine(), adapters=[LocalFilesAdapter()], services=[])
        await application.start()
        started.append(application)
    try:
        yield started[0], started[1]
    finally:
        for application in started:
            engine(application).release()
            await application.stop()


async def test_a_replica_that_sees_the_deletion_stops_the_answer_another_replica_writes(
    replicas: tuple[Application, Application], screenshot: Path
) -> None:
    answering, other = replicas
    gated = engine(answering)
    gated.hold()
    question = message("what is the password on this?", local_image(screenshot), message_id="shared-1")
    reply = RetractableRecordingReply()
    assert await answering.handle(question, reply)
    await asyncio.wait_for(gated.waiting.wait(), 10)

    await other.withdraw(deleted(question))  # the deletion event reached the other replica
    gated.release()
    assert await answering.wait_idle(10)

    assert reply.retracted and reply.final is None, "the answer was not delivered; the placeholder went"
    job = await answering.store.jobs.get(f"local:{question.message_id}")
    assert job is not None and (job.state, job.error) == (JobState.FAILED, "withdrawn")
    assert await answering.store.conversations.turns(str(question.conversation), 10) == []


def test_slack_events_that_withdraw_something_and_those_that_do_not() -> None:
    from adapters.slack.events import Identity, withdrawal

    me = Identity(team_id="T1", user_id="U0BOT", bot_id="B0BOT")
    shot = {"id": "F1", "name": "a.png", "mimetype": "image/png", "url_private": "https://files.slack.com/a"}
    asked = {"type": "message", "user": "U1", "text": "<@U0BOT> what is this?", "ts": "10.0", "files": [shot]}

    def event(subtype: str, previous: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"type": "message", "subtype": subtype, "channel": "C1", "previous_message": previous, **extra}

    def parse(payload: dict[str, Any]) -> MessageWithdrawn | None:
        return withdrawal(payload, me, event_id="Ev1", team_id="T1")

    gone = parse(event("message_deleted", asked, deleted_ts="10.0"))
    assert gone is not None and (gone.message_id, gone.file_ids) == ("C1:10.0", ("F1",))
    assert str(gone.conversation) == "slack:T1:C1:10.0"
    tombstone = {"type": "message", "subtype": "tombstone", "ts": "10.0", "thread_ts": "10.0"}
    assert parse(event("message_changed", asked, message=tombstone)) == gone
    file_removed = parse(
        event("message_changed", asked, message={**asked, "files": [{"id": "F1", "mode": "tombstone"}]})
    )
    assert file_removed is not None and (file_removed.message_id, file_removed.file_ids) == ("", ("F1",))
    assert parse(event("message_changed", asked, message={**asked, "text": "edited"})) is None, "an edit"
    assert parse(event("message_deleted", {**asked, "user": "U0BOT", "bot_id": "B0BOT"})) is None, "our own"
    chatter = {"type": "message", "user": "U1", "text": "lunch?", "ts": "11.0"}
    assert parse(event("message_deleted", chatter, deleted_ts="11.0", channel_type="channel")) is None
    assert parse({"type": "file_deleted", "file_id": "F9"}) == MessageWithdrawn(
        "slack", "Ev1", file_ids=("F9",), kind="file_deleted"
    )
