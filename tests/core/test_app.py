"""The core end to end: a local adapter → Application → real engine with a tiny model → reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import PAUSED_REPLY, Application
from bot.settings import Settings
from tests.support.engines import RecordingEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, handled, local_image, message


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen3_dir: Path) -> Settings:
    monkeypatch.setenv("PEEKBOT_MODEL", str(tiny_qwen3_dir))
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEEKBOT_HTTP_PORT", "0")
    monkeypatch.setenv("PEEKBOT_ADMINS", "local:ADMIN")
    monkeypatch.setenv("PEEKBOT_MAX_NEW_TOKENS", "12")
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(256 * 256))
    return Settings()


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[tuple[Application, LocalFilesAdapter, RecordingEngine]]:
    from inference.transformers_engine import TransformersEngine

    adapter = LocalFilesAdapter()
    engine = RecordingEngine(TransformersEngine(settings.engine))
    async with Application(settings, engine=engine, adapters=[adapter]) as app:
        yield app, adapter, engine


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    path = tmp_path / "shot.png"
    Image.new("RGB", (320, 200), (30, 120, 200)).save(path)
    return path


ask = handled


async def test_question_with_image_is_answered_and_streamed(running, screenshot: Path) -> None:
    app, adapter, engine = running
    reply = await ask(app, message("what is this?", local_image(screenshot)))
    assert reply.error is None
    assert reply.final and reply.final.strip()
    assert reply.progress[0] is None  # visible feedback comes before the answer
    assert reply.updates and reply.final.startswith(reply.updates[-1].strip()[:1])
    assert adapter.fetched == ["shot.png"]
    assert len(engine.requests[0].images) == 1
    assert app.counters["answered"] == 1


async def test_duplicate_event_or_message_is_answered_once(running, screenshot: Path) -> None:
    app, _, engine = running
    first = message("hello", local_image(screenshot), event_id="E1", message_id="M1")
    reply = RecordingReply()
    assert await app.handle(first, reply)
    assert not await app.handle(first, RecordingReply())  # the same event redelivered
    again = message("hello", local_image(screenshot), event_id="E2", message_id="M1")
    assert not await app.handle(again, RecordingReply())  # the same message under a new event id
    await reply.wait()
    assert len(engine.requests) == 1
    assert app.counters["duplicates"] == 2


async def test_follow_up_in_thread_sees_earlier_turns_and_context_images(running, screenshot: Path) -> None:
    app, _, engine = running
    await ask(app, message("what is this?", local_image(screenshot), thread="T9"))
    follow = await ask(app, message("and the colour?", thread="T9", context=(local_image(screenshot),)))
    assert follow.error is None
    second = engine.requests[1]
    assert [turn.role for turn in second.history] == ["user", "assistant"]
    assert second.history[0].text == "what is this?"
    assert len(second.images) == 1  # the earlier image came along


async def test_unsupported_file_gets_a_clear_reply_and_the_bot_keeps_serving(running, tmp_path: Path,
                                                                             screenshot: Path) -> None:
    app, _, engine = running
    junk = tmp_path / "notes.docx"
    junk.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    reply = await ask(app, message("read this", local_image(junk, "application/vnd.openxmlformats")))
    assert reply.error and "PDF" in reply.error
    assert engine.requests == []
    ok = await ask(app, message("and this?", local_image(screenshot)))
    assert ok.error is None


async def test_empty_message_asks_for_an_image(running) -> None:
    app, _, _ = running
    reply = await ask(app, message(""))
    assert reply.error and "/help" in reply.error


async def test_commands_and_admin_permissions(running, screenshot: Path) -> None:
    app, _, engine = running
    user_help = await ask(app, message("/help"))
    assert "/status" in (user_help.final or "") and "/pause" not in (user_help.final or "")
    admin_help = await ask(app, message("/help", user="ADMIN"))
    assert "/pause" in (admin_help.final or "")

    refused = await ask(app, message("/pause", user="U1"))
    assert "admins only" in (refused.final or "")
    assert not app.paused

    assert "Paused" in ((await ask(app, message("/pause", user="ADMIN"))).final or "")
    paused = await ask(app, message("what is this?", local_image(screenshot)))
    assert paused.final == PAUSED_REPLY and engine.requests == []
    await ask(app, message("resume", user="ADMIN", is_command=True))
    assert not app.paused

    unknown = await ask(app, message("/frobnicate"))
    assert "don't know the command /frobnicate" in (unknown.final or "")

    status_user = await ask(app, message("/status"))
    assert "Queue:" in (status_user.final or "") and "Model:" not in (status_user.final or "")
    status_admin = await ask(app, message("/status", user="ADMIN"))
    assert "Model:" in (status_admin.final or "") and "local: connected" in (status_admin.final or "")


async def test_reset_forgets_the_thread(running, screenshot: Path) -> None:
    app, _, engine = running
    await ask(app, message("first", local_image(screenshot), thread="T5"))
    assert "forgot" in ((await ask(app, message("/reset", thread="T5"))).final or "")
    await ask(app, message("second", local_image(screenshot), thread="T5"))
    assert engine.requests[-1].history == []


async def test_stop_drains_an_answer_in_flight(settings: Settings, screenshot: Path) -> None:
    from inference.transformers_engine import TransformersEngine

    adapter = LocalFilesAdapter()
    app = Application(settings, engine=TransformersEngine(settings.engine), adapters=[adapter])
    await app.start()
    reply = RecordingReply()
    await app.handle(message("describe", local_image(screenshot)), reply)
    await asyncio.sleep(0)  # the question is scheduled, not answered yet
    await app.stop()
    assert reply.done.is_set() and reply.error is None and reply.final


async def test_a_question_that_starts_with_a_path_is_not_a_command(running, screenshot: Path) -> None:
    app, _, engine = running
    reply = await ask(app, message("/usr/bin/python crashes with this error, why?", local_image(screenshot)))
    assert reply.error is None and "don't know the command" not in (reply.final or "")
    assert engine.requests[-1].question.startswith("/usr/bin/python")
