"""Leases mean ownership, delivered answers are not posted again, and the controls hold across replicas and restarts.

Two Applications on one state file stand for two replicas (each its own instance id and adapter, the file shared as
a shared store is). Replies are the recording doubles of ``tests.support.helpers``; each replica's engine is a
``FakeEngine`` (the engine is not what these tests are about), optionally held at a gate to stall the replica.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import PAUSED_REPLY, Application
from bot.durability import DELIVERED, FINAL_TEXT
from bot.ratelimit import RateLimiter
from bot.settings import Settings
from bot.store.base import Job, JobState
from bot.store.sqlite import SQLiteStore
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, message
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

LEASE_S = 1.0
"""The lease of the stalling replica's test; the others keep the default, so a slow machine takes nothing over."""


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Settings of one replica (``instance``), all on one data directory."""

    def settings(instance: str, **extra: Any) -> Settings:
        for key, value in {
            "DATA_DIR": tmp_path / "data", "HTTP_PORT": 0, "MAX_NEW_TOKENS": 4,
            "WARMUP": "false", "DRAIN_TIMEOUT_S": 1, "INSTANCE_ID": instance, **extra,
        }.items():  # fmt: skip
            monkeypatch.setenv(f"PEEKBOT_{key}", str(value))
        return Settings()

    return settings


Replica = tuple[Application, LocalFilesAdapter, FakeEngine]


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[..., Any]]:
    started: list[Application] = []

    async def start(settings: Settings, *, gate: asyncio.Event | None = None, shared: bool = True) -> Replica:
        engine = FakeEngine(gate=gate, chunks_before_gate=0)  # a closed gate: the replica stalls before answering
        adapter = LocalFilesAdapter()
        store = SQLiteStore(Path(settings.core.data_dir) / "state.db", single_process=not shared)
        app = Application(settings, engine=engine, adapters=[adapter], services=[], store=store)
        await app.start()
        started.append(app)
        return app, adapter, engine

    yield start
    for app in started:
        await app.stop()


until = functools.partial(eventually, timeout=30.0, interval=0.05)


async def stored_job(settings: Settings, job_id: str) -> Job | None:
    """The journal entry as the next process finds it."""
    store = SQLiteStore(Path(settings.core.data_dir) / "state.db")
    await store.open()
    try:
        return await store.jobs.get(job_id)
    finally:
        await store.close()


async def journaled_final(app: Application, job_id: str) -> str | None:
    job = await app.store.jobs.get(job_id)
    return None if job is None else job.reply_state.get(FINAL_TEXT)


async def test_a_replica_that_stalls_past_its_lease_leaves_the_answer_to_the_one_that_took_over(
    configure: Callable[..., Settings], replicas: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    stalled, _, stalled_engine = await replicas(configure("replica-a", JOB_LEASE_S=LEASE_S), gate=gate)
    other, other_adapter, other_engine = await replicas(configure("replica-b", JOB_LEASE_S=LEASE_S))
    keep_alive, keep_taking = stalled.jobs.renew, stalled.jobs.take_over

    async def no_renewal() -> set[str]:
        return set()

    async def takes_nothing(**_: Any) -> list[Any]:
        return []

    # Replica A stalls: its leases are not renewed, and it takes over nothing (not even its own expired job).
    monkeypatch.setattr(stalled.jobs, "renew", no_renewal)
    monkeypatch.setattr(stalled.jobs, "take_over", takes_nothing)
    first_reply = RecordingReply()
    question = message("what does the dialog say?")
    assert await stalled.handle(question, first_reply)
    await until(lambda: stalled_engine.requests, "replica A to start generating")

    await until(lambda: other_adapter.resumed, "replica B to take the job over")  # A's lease ran out
    [(resumed, _, second_reply)] = other_adapter.resumed
    assert resumed.message_id == question.message_id
    await second_reply.wait(60)
    assert second_reply.final and second_reply.error is None

    monkeypatch.setattr(stalled.jobs, "renew", keep_alive)
    monkeypatch.setattr(stalled.jobs, "take_over", keep_taking)
    gate.set()  # A wakes up with its answer generated
    assert await stalled.wait_idle(30)
    await asyncio.sleep(LEASE_S)  # and its lease loop runs again

    assert first_reply.final is None and first_reply.error is None, "the stalled replica answered too"
    assert first_reply.updates == [], "the stalled replica edited a reply that is not its own any more"
    assert stalled.jobs.lost == 1
    job = await other.store.jobs.get(f"local:{question.message_id}")
    assert job is not None and (job.state, job.owner) == (JobState.ANSWERED, "replica-b")
    assert len(other_engine.requests) == 1


async def test_a_restart_after_the_answer_was_delivered_posts_nothing_new(
    configure: Callable[..., Settings], replicas: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = configure("only")
    app, _, engine = await replicas(settings, shared=False)

    async def crash_before_finishing(*_: Any, **__: Any) -> bool:
        await asyncio.Event().wait()  # the process dies here: the answer is out, the job not marked answered
        return True

    monkeypatch.setattr(app.jobs, "finished", crash_before_finishing)
    reply = RecordingReply()
    question = message("what is on the screen?")
    assert await app.handle(question, reply)
    await reply.wait(60)
    await app.stop()  # cancels the stuck task: the job stays unfinished in the journal, as after a kill
    job = await stored_job(settings, f"local:{question.message_id}")
    assert job is not None and job.state is JobState.RUNNING
    assert job.reply_state[DELIVERED] == "1" and job.reply_state[FINAL_TEXT] == reply.final

    app, adapter, engine = await replicas(settings, shared=False)
    assert await app.wait_idle(10)
    assert adapter.resumed == [], "the delivered answer's reply was taken up again"
    assert engine.requests == [], "the delivered answer was generated again"
    job = await app.store.jobs.get(f"local:{question.message_id}")
    assert job is not None and job.state is JobState.ANSWERED


async def test_a_journaled_final_answer_is_delivered_again_without_generating(
    configure: Callable[..., Settings], replicas: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = configure("only")
    app, adapter, engine = await replicas(settings, shared=False)
    question = message("and the second line?")
    reply = RecordingReply()

    async def die_while_delivering(text: str) -> None:
        await asyncio.Event().wait()  # the process dies while the final answer goes out

    monkeypatch.setattr(reply, "finish", die_while_delivering)
    assert await app.handle(question, reply)
    job_id = f"local:{question.message_id}"
    deadline = time.monotonic() + 60
    while (generated := await journaled_final(app, job_id)) is None:
        assert time.monotonic() < deadline, "the final text was never journaled"
        await asyncio.sleep(0.05)
    await app.stop()

    app, adapter, engine = await replicas(settings, shared=False)
    [(_, _, resumed)] = adapter.resumed
    await resumed.wait(30)
    assert resumed.final == generated and engine.requests == []
    assert await app.wait_idle(10)
    assert (await app.store.jobs.get(job_id)).state is JobState.ANSWERED  # type: ignore[union-attr]


async def test_pause_holds_on_every_replica_and_across_a_restart(
    configure: Callable[..., Settings], replicas: Callable[..., Any]
) -> None:
    first, _, first_engine = await replicas(configure("replica-a", ADMINS="local:ADMIN"))
    second, _, second_engine = await replicas(configure("replica-b", ADMINS="local:ADMIN"))
    paused = RecordingReply()
    assert await first.handle(message("/pause", user="ADMIN"), paused)
    await paused.wait(10)
    assert "Paused" in (paused.final or "")

    on_the_other = RecordingReply()
    assert await second.handle(message("what is this?"), on_the_other)
    await on_the_other.wait(10)
    assert on_the_other.final == PAUSED_REPLY and second_engine.requests == []
    await first.stop()

    restarted, _, restarted_engine = await replicas(configure("replica-a", ADMINS="local:ADMIN"))
    assert restarted.paused, "a restart forgot the pause"
    after_restart = RecordingReply()
    assert await restarted.handle(message("and now?"), after_restart)
    await after_restart.wait(10)
    assert after_restart.final == PAUSED_REPLY and restarted_engine.requests == first_engine.requests == []

    resumed = RecordingReply()
    assert await second.handle(message("/resume", user="ADMIN"), resumed)
    await resumed.wait(10)
    answered = RecordingReply()
    assert await restarted.handle(message("answer me"), answered)
    await answered.wait(60)
    assert answered.final != PAUSED_REPLY and len(restarted_engine.requests) == 1


async def test_two_replicas_share_one_rate_limit_bucket_and_pending_count_per_user(
    configure: Callable[..., Settings], replicas: Callable[..., Any]
) -> None:
    limits = {"RATE_LIMIT_PER_MINUTE": 1, "RATE_LIMIT_BURST": 2, "MAX_PENDING_PER_USER": 1}
    gate = asyncio.Event()
    gate.set()
    first, _, first_engine = await replicas(configure("replica-a", **limits), gate=gate)
    second, _, _ = await replicas(configure("replica-b", **limits))
    replies = [RecordingReply() for _ in range(3)]
    for replica, question, reply in zip((first, second, first), ("one?", "two?", "three?"), replies, strict=True):
        assert await replica.handle(message(question), reply)
        await reply.wait(60)
        assert await replica.wait_idle(30)  # answered and journaled: no longer pending
    assert [r.final is not None for r in replies[:2]] == [True, True]
    assert replies[2].error is not None and "faster than I can keep up" in replies[2].error

    gate.clear()  # U2's first question stays pending on replica A…
    waiting = RecordingReply()
    generating = len(first_engine.requests) + 1
    assert await first.handle(message("a slow one", user="U2"), waiting)
    await until(lambda: len(first_engine.requests) == generating, "U2's first question to be generating")
    refused = RecordingReply()
    assert await second.handle(message("another one", user="U2"), refused)  # …and counts on replica B
    await refused.wait(10)
    assert refused.error is not None and "already have 1 question waiting" in refused.error
    gate.set()
    await waiting.wait(60)
    assert waiting.final is not None

    await first.stop()
    restarted, _, restarted_engine = await replicas(configure("replica-a", **limits))
    again = RecordingReply()
    assert await restarted.handle(message("four?"), again)
    assert await restarted.wait_idle(10)
    assert again.final is None and restarted_engine.requests == [], "a restart refilled the bucket"


class BrokenBuckets:
    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float:
        raise OSError("the store is unreachable")


async def test_the_rate_limit_holds_with_this_process_bucket_while_the_store_fails() -> None:
    limiter = RateLimiter(per_minute=1, burst=2, buckets=BrokenBuckets())
    assert [await limiter.acquire("slack:U1") for _ in range(2)] == [None, None]
    wait = await limiter.acquire("slack:U1")
    assert wait is not None and 0 < wait <= 60
