"""The job journal through the Application: leftovers of an earlier run are answered once, or given up politely."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.app import Application
from bot.durability import job_id_for
from bot.settings import Settings
from bot.store import open_store
from bot.store.base import Job, JobState
from bot.store.codec import encode_message
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    values = {"DATA_DIR": tmp_path / "data", "HTTP_PORT": 0, "MAX_PIXELS": 128 * 128, "MAX_JOB_ATTEMPTS": 3}
    for key, value in values.items():
        monkeypatch.setenv(f"PEEKBOT_{key}", str(value))
    return Settings()


@pytest.fixture
def shot(tmp_path: Path) -> Path:
    path = tmp_path / "shot.png"
    Image.new("RGB", (120, 80), (10, 160, 90)).save(path)
    return path


async def leave_unfinished(settings: Settings, job_for: Callable[[], Job], *, state: JobState) -> Job:
    """Journal a job as a process that died would have left it."""
    store = open_store(settings)
    await store.open()
    try:
        job = job_for()
        assert await store.jobs.accept(job, "dead-process", 60.0)
        await store.jobs.mark(job.job_id, state, reply_state={"placeholder": "P1"})
        return job
    finally:
        await store.close()


def journal_entry(msg, attempts: int = 0) -> Job:  # type: ignore[no-untyped-def]
    return Job(
        job_id=job_id_for(msg), platform=msg.platform, conversation=str(msg.conversation), user=msg.user.key,
        message=encode_message(msg), attempts=attempts, created_at=time.time(), updated_at=time.time(),
    )


async def started(settings: Settings) -> tuple[Application, LocalFilesAdapter, FakeEngine]:
    adapter = LocalFilesAdapter()
    engine = FakeEngine()
    app = Application(settings, engine=engine, adapters=[adapter], services=[])
    await app.start()
    return app, adapter, engine


async def test_a_question_left_running_by_a_dead_process_is_answered_once_on_start(
    settings: Settings, shot: Path
) -> None:
    msg = message("what broke here?", local_image(shot), thread="T-left")
    job = await leave_unfinished(settings, lambda: journal_entry(msg), state=JobState.RUNNING)
    app, adapter, engine = await started(settings)
    try:
        [(resumed, state, reply)] = adapter.resumed
        assert resumed == msg and state == {"placeholder": "P1"}  # the adapter can finish the same placeholder
        await reply.wait(60)
        assert reply.error is None and reply.final
        assert [r.question for r in engine.requests] == ["what broke here?"]
        assert adapter.fetched == ["shot.png"]  # files are fetched again: the journal holds no bytes
        assert await app.wait_idle(30)
        stored = await app.store.jobs.get(job.job_id)
        assert stored is not None and stored.state is JobState.ANSWERED and stored.attempts == 1
        # The platform re-delivering the same message now is a duplicate, not a second answer.
        assert not await app.handle(msg, RecordingReply())
    finally:
        await app.stop()
    app, adapter, engine = await started(settings)  # and the next start has nothing left to do
    try:
        assert adapter.resumed == [] and engine.requests == []
    finally:
        await app.stop()


async def test_a_question_that_keeps_crashing_the_bot_gets_an_apology_instead_of_another_try(
    settings: Settings, shot: Path
) -> None:
    msg = message("this one crashes", local_image(shot), thread="T-poison")
    job = await leave_unfinished(settings, lambda: journal_entry(msg, attempts=2), state=JobState.RUNNING)
    app, adapter, engine = await started(settings)
    try:
        [(_, _, reply)] = adapter.resumed
        await reply.wait(30)
        assert reply.error is not None and "interrupted 3 times" in reply.error
        assert engine.requests == []
        stored = await app.store.jobs.get(job.job_id)
        assert stored is not None and stored.state is JobState.FAILED
    finally:
        await app.stop()


async def test_a_question_arriving_while_stopping_is_kept_for_the_next_start(settings: Settings, shot: Path) -> None:
    app, adapter, engine = await started(settings)
    app._accepting = False  # what stop() does first; the adapters are still connected while answers drain
    late = message("asked during the restart", local_image(shot), thread="T-late")
    assert await app.handle(late, RecordingReply())  # journaled and acked, not answered by this process
    await app.stop()
    assert engine.requests == []
    app, adapter, engine = await started(settings)
    try:
        [(resumed, _, reply)] = adapter.resumed
        assert resumed.message_id == late.message_id
        await reply.wait(60)
        assert reply.error is None and [r.question for r in engine.requests] == ["asked during the restart"]
    finally:
        await app.stop()


async def test_a_store_failure_before_journaling_leaves_the_redelivery_answerable(
    settings: Settings, shot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _, engine = await started(settings)
    try:
        msg = message("is this saved?", local_image(shot), thread="T-fault")
        real_accept = app.store.jobs.accept

        async def failing_accept(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError("disk I/O error")

        monkeypatch.setattr(app.store.jobs, "accept", failing_accept)
        with pytest.raises(OSError):  # the adapter sees it and does not ack: the platform delivers again
            await app.handle(msg, RecordingReply())
        monkeypatch.setattr(app.store.jobs, "accept", real_accept)
        redelivered = RecordingReply()
        assert await app.handle(msg, redelivered), "the redelivery was taken for a duplicate: the question is lost"
        await redelivered.wait(60)
        assert redelivered.error is None and [r.question for r in engine.requests] == ["is this saved?"]
    finally:
        await app.stop()
