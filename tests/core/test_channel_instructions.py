"""Per-channel instructions, as admins and people in a chat meet them: set, shown, applied to that channel only,
kept across restarts, refused to others and audited without their text."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.app import Application
from bot.questions import answer_question
from bot.settings import Settings
from bot.store.sqlite import SQLiteStore
from inference.prompts import INSTRUCTIONS_HEADER, system_text
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message, save_png

JAPANESE = "Answer in Japanese. This is the payments team; our runbook is attached."


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    return save_png(tmp_path / "error.png", (200, 40, 40), (120, 80))


def environment(tmp_path: Path) -> dict[str, str]:
    return peekbot_environment(
        http_port=0, max_pixels=128 * 128, admins="local:ADMIN", data_dir=tmp_path / "state", max_instructions_chars=200
    )


async def start(start_app: AppStarter, tmp_path: Path) -> Application:
    return await start_app(environment(tmp_path), engine=lambda _: FakeEngine())


async def say(app: Application, text: str, *files, user: str = "U1", channel: str = "C1", thread: str = "T1") -> str:
    reply = RecordingReply()
    assert await app.handle(message(text, *files, user=user, channel=channel, thread=thread), reply)
    await reply.wait(30)
    assert await app.wait_idle(30)
    assert reply.error is None, reply.error
    assert reply.final is not None
    return reply.final


def system_prompt_sent(app: Application, index: int) -> str:
    """The system message the engine's ``index``-th request renders to (as both engines build it)."""
    engine = app.engine
    assert isinstance(engine, FakeEngine)
    request = engine.requests[index]
    return system_text(request.system_prompt or "", request.instructions)


async def test_instructions_reach_the_prompt_of_every_thread_in_that_channel_only(
    start_app: AppStarter, tmp_path: Path, screenshot: Path
) -> None:
    app = await start(start_app, tmp_path)
    answer = await say(app, f"/instructions set {JAPANESE}", user="ADMIN", thread="T0")
    assert answer.startswith("Done: every question in this channel now comes with these instructions")

    await say(app, "what is this?", local_image(screenshot), thread="T1")
    await say(app, "and this?", local_image(screenshot), thread="T2")  # another thread of the same channel
    await say(app, "what is this?", local_image(screenshot), channel="C2")  # another channel

    first, second, elsewhere = (system_prompt_sent(app, i) for i in range(3))
    assert first.endswith(f"{INSTRUCTIONS_HEADER}\n{JAPANESE}")
    assert second.endswith(f"{INSTRUCTIONS_HEADER}\n{JAPANESE}")
    assert JAPANESE not in elsewhere and INSTRUCTIONS_HEADER not in elsewhere

    assert "Cleared" in await say(app, "/instructions clear", user="ADMIN")
    await say(app, "what is this?", local_image(screenshot), thread="T3")
    assert JAPANESE not in system_prompt_sent(app, 3)


async def test_show_status_and_the_length_limit(start_app: AppStarter, tmp_path: Path) -> None:
    app = await start(start_app, tmp_path)
    assert (await say(app, "/instructions show", user="ADMIN")).startswith("This channel has no instructions.")
    too_long = "x" * 201
    refusal = await say(app, f"/instructions set {too_long}", user="ADMIN")
    assert refusal == "Those instructions are 201 characters long; the limit is 200. Please shorten them and try again."
    assert "Please put the instructions after `set`" in await say(app, "/instructions set", user="ADMIN")
    assert "I don't know /instructions shout" in await say(app, "/instructions shout", user="ADMIN")

    await say(app, "/instructions set\nAnswer in Japanese.\nKeep it short.", user="ADMIN")
    shown = await say(app, "/instructions show", user="ADMIN", thread="T9")
    assert shown.startswith("Instructions for this channel (set by local:ADMIN on ")
    assert shown.endswith("):\nAnswer in Japanese.\nKeep it short.")

    status = await say(app, "/status", user="U2")
    assert "Instructions for this channel: “Answer in Japanese. Keep it short.”" in status.splitlines()
    assert "Instructions for this channel (set by local:ADMIN" in await say(app, "/status", user="ADMIN")
    assert "Instructions" not in await say(app, "/status", user="U2", channel="C2")


async def test_non_admins_are_refused_and_nothing_changes(start_app: AppStarter, tmp_path: Path) -> None:
    app = await start(start_app, tmp_path)
    for line in ("/instructions set Answer like a pirate.", "/instructions clear", "/instructions show"):
        assert await say(app, line, user="U_SOMEONE") == "Sorry, /instructions is for peekbot admins only."
    assert await app.store.instructions.get_instructions("local:W1:C1") is None
    assert "/instructions" not in await say(app, "/help", user="U_SOMEONE")
    assert "/instructions" in await say(app, "/help", user="ADMIN")


async def test_instructions_survive_a_restart(start_app: AppStarter, tmp_path: Path, screenshot: Path) -> None:
    first = await start(start_app, tmp_path)
    await say(first, f"/instructions set {JAPANESE}", user="ADMIN")
    await first.stop()

    second = await start(start_app, tmp_path)
    await say(second, "what is this?", local_image(screenshot))
    assert system_prompt_sent(second, 0).endswith(JAPANESE)


async def test_the_audit_says_who_changed_them_where_and_when_but_not_the_text(
    start_app: AppStarter, tmp_path: Path
) -> None:
    app = await start(start_app, tmp_path)
    await say(app, f"/instructions set {JAPANESE}", user="ADMIN")
    await say(app, "/instructions clear", user="ADMIN")
    store = app.store
    assert isinstance(store, SQLiteStore)

    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT * FROM audit WHERE outcome LIKE 'instructions%' ORDER BY id").fetchall()
        columns = [c[0] for c in conn.execute("SELECT * FROM audit").description]
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    assert [(r["outcome"], r["user"], r["conversation"]) for r in records] == [
        ("instructions_set", "local:ADMIN", "local:W1:C1"),
        ("instructions_cleared", "local:ADMIN", "local:W1:C1"),
    ]
    assert all(r["created_at"] > 0 and r["question_chars"] == 0 for r in records)
    stored_text = " ".join(str(value) for row in rows for value in row)
    assert "Japanese" not in stored_text and "payments" not in stored_text
    summary = await store.audit.summary(0)
    assert summary.questions == 0 and not summary.by_outcome  # admins' changes are not counted as questions


async def test_changed_instructions_are_never_answered_from_the_old_cache(
    screenshot: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    settings = Settings()
    engine, adapter = FakeEngine(), LocalFilesAdapter()

    async def why() -> bool:
        reply = RecordingReply()
        answered = await answer_question(
            message("why?", local_image(screenshot)),
            reply,
            adapter=adapter,
            engine=engine,
            settings=settings,
            history=[],
            store=store,
        )
        return answered.cached

    assert await why() is False
    assert await why() is True, "the same question in the same context comes from the cache"
    await store.instructions.set_instructions("local:W1:C1", "Answer in Japanese.", "local:ADMIN")
    assert await why() is False, "new instructions: a new answer"
    assert engine.requests[-1].instructions == "Answer in Japanese."
    assert await why() is True
    assert engine.generations == 2


async def test_a_change_and_an_answer_go_through_when_the_audit_cannot_be_written(
    start_app: AppStarter, tmp_path: Path, screenshot: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = await start(start_app, tmp_path)

    async def broken(record: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app.store.audit, "record", broken)
    assert (await say(app, f"/instructions set {JAPANESE}", user="ADMIN")).startswith("Done")
    assert "Japanese" in await say(app, "/instructions show", user="ADMIN")
    assert await say(app, "what is this?", local_image(screenshot))
    failures = [r for r in caplog.records if r.getMessage().startswith("could not write the audit record")]
    assert {r.getMessage() for r in failures} >= {
        "could not write the audit record (instructions_set)", "could not write the audit record (answered)"
    }
