"""Scheduler jobs against a running application with the real engine on the tiny model."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from bot.engine import GenerationRequest
from bot.errors import DeadlineExceeded
from bot.usage import RequestRecord
from scheduler import IntervalScheduler, JobResult
from scheduler.service import CLEANUP, EXPIRY, LIVENESS, SNAPSHOT, WATCHDOG, MaintenanceScheduler
from tests.support.ops_support import ControlledAdapter, block_worker, configure, running_app, screenshot
from tests.support.waiting import eventually


@pytest.fixture
def model_dir(tiny_qwen3_dir: Path) -> Path:
    return tiny_qwen3_dir


def _maintenance(app) -> MaintenanceScheduler:  # type: ignore[no-untyped-def]
    maintenance = app.maintenance
    assert isinstance(maintenance, MaintenanceScheduler)
    return maintenance


async def test_cleanup_is_skipped_while_the_engine_is_busy_and_runs_when_idle(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, CLEANUP_INTERVAL_S=3600)
    async with running_app(settings, [ControlledAdapter("slack")]) as app:
        maintenance = _maintenance(app)
        # A long answer keeps the engine generating.
        stream = app.engine.submit(GenerationRequest("count", max_new_tokens=4000, min_new_tokens=4000))
        await eventually(lambda: app.engine.stats().in_flight == 1, what="the engine to start generating")
        busy = await maintenance.jobs.run_now(CLEANUP)
        assert busy.outcome == "skipped"
        assert "busy" in busy.detail and "1 in flight" in busy.detail
        stream.cancel()
        await eventually(lambda: app.engine.stats().in_flight == 0, what="the engine to go idle")

        idle = await maintenance.jobs.run_now(CLEANUP)
        assert idle.outcome == "ok"
        assert idle.data["before"]["host_rss_bytes"] > 0 and idle.data["after"]["host_rss_bytes"] > 0
        assert "host RSS" in idle.detail and "gc collected" in idle.detail
        state = maintenance.jobs.state(CLEANUP)
        assert (state.runs, state.skips, state.failures) == (2, 1, 0)
        assert state.last is not None and state.last.outcome == "ok" and state.last.duration_s > 0


async def test_cleanup_runs_on_its_interval(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, CLEANUP_INTERVAL_S=0.2)
    async with running_app(settings, [ControlledAdapter("slack")]) as app:
        maintenance = _maintenance(app)
        await eventually(lambda: maintenance.jobs.state(CLEANUP).runs >= 2, what="two scheduled cleanups")
        last = maintenance.jobs.state(CLEANUP).last
        assert last is not None and last.outcome == "ok" and "gc collected" in last.detail


async def test_liveness_ping_detects_a_hung_worker(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, LIVENESS_TIMEOUT_S=1.0)
    async with running_app(settings, [ControlledAdapter("slack")]) as app:
        maintenance = _maintenance(app)
        healthy = await maintenance.jobs.run_now(LIVENESS)
        assert healthy.outcome == "ok" and maintenance.liveness.alive is True

        blocker = await block_worker(app, 2.5)
        stuck = await maintenance.jobs.run_now(LIVENESS)
        assert stuck.outcome == "failed"
        assert "did not answer within 1 s" in stuck.detail
        assert maintenance.liveness.alive is False and maintenance.liveness.stuck_count == 1
        assert maintenance.jobs.state(LIVENESS).failures == 1

        await blocker
        recovered = await maintenance.jobs.run_now(LIVENESS)
        assert recovered.outcome == "ok" and maintenance.liveness.alive is True
        assert maintenance.liveness.stuck_count == 1

        # A long answer does not delay the ping: the worker serves it between two decoding steps.
        stream = app.engine.submit(GenerationRequest("count", max_new_tokens=4000, min_new_tokens=4000))
        await eventually(lambda: app.engine.stats().in_flight == 1, what="the engine to start generating")
        busy = await maintenance.jobs.run_now(LIVENESS)
        stream.cancel()
        assert busy.outcome == "ok", busy.detail
        assert maintenance.liveness.alive is True and maintenance.liveness.stuck_count == 1


async def test_requests_settled_on_the_event_loop_while_the_worker_hangs_are_not_progress(
    monkeypatch, tmp_path, model_dir
) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, LIVENESS_TIMEOUT_S=1.0, ENGINE_STUCK_EXIT_S=0)
    async with running_app(settings, [ControlledAdapter("slack")]) as app:
        maintenance = _maintenance(app)
        gate, holding = threading.Event(), threading.Event()
        hung = asyncio.create_task(app.engine.run_on_worker(lambda: holding.set() or gate.wait(30), 30))
        try:
            assert await asyncio.to_thread(holding.wait, 10)  # the worker hangs before the question arrives
            # A question whose deadline passes while the ping waits: settled by the event loop, not the worker.
            stream = app.engine.submit(GenerationRequest("what is this?", timeout_s=0.2))
            stuck = await maintenance.jobs.run_now(LIVENESS)
            assert app.engine.stats().requests_by_outcome.get("timeout") == 1
            with pytest.raises(DeadlineExceeded):
                await stream.text()
            assert stuck.outcome == "failed" and "did not answer within 1 s" in stuck.detail
            assert maintenance.liveness.alive is False
        finally:
            gate.set()
            await hung
        # ENGINE_STUCK_EXIT_S=0: the process is never given up on, however long the worker was stuck.
        assert app.unhealthy is None and not app.exit_requested.is_set()


async def test_watchdog_reconnects_stale_and_disconnected_adapters(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, WATCHDOG_STALE_AFTER_S=60)
    slack, feishu, steady = ControlledAdapter("slack"), ControlledAdapter("feishu"), ControlledAdapter("console")
    async with running_app(settings, [slack, feishu, steady]) as app:
        watchdog = _maintenance(app).jobs
        slack.last_pong_age_s = 61.0  # connected, but no pong for longer than allowed: reconnected at once
        feishu.drop()  # disconnected: its own reconnect gets one check interval first
        steady.last_pong_age_s = 59.0

        first = await watchdog.run_now(WATCHDOG)
        assert first.outcome == "ok" and first.data["reconnected"] == ["slack"]
        assert "reconnected slack (no pong for 61 s)" in first.detail
        assert "feishu not connected (socket closed): giving its own reconnect until the next check" in first.detail
        assert (slack.reconnect_calls, feishu.reconnect_calls) == (1, 0)

        second = await watchdog.run_now(WATCHDOG)
        assert second.data["reconnected"] == ["feishu"] and feishu.connected
        third = await watchdog.run_now(WATCHDOG)
        assert third.detail == "healthy: slack, feishu, console"
        assert (slack.reconnect_calls, feishu.reconnect_calls, steady.reconnect_calls) == (1, 1, 0)
        assert _maintenance(app).watchdog.forced_reconnects == {"slack": 1, "feishu": 1}

        feishu.drop()
        await watchdog.run_now(WATCHDOG)
        feishu.connect()  # the adapter's own reconnect worked in time
        assert (await watchdog.run_now(WATCHDOG)).detail.startswith("healthy")
        assert feishu.reconnect_calls == 1


async def test_a_failing_reconnect_is_counted_and_retried(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, WATCHDOG_INTERVAL_S=0.1)
    slack = ControlledAdapter("slack")
    async with running_app(settings, [slack]) as app:
        maintenance = _maintenance(app)
        slack.reconnect_error = ConnectionError("apps.connections.open failed")
        slack.drop()
        await eventually(lambda: slack.reconnect_calls >= 2, what="repeated reconnect attempts")
        state = maintenance.jobs.state(WATCHDOG)
        assert state.failures >= 2
        assert state.last_failure is not None and "apps.connections.open failed" in state.last_failure.detail
        slack.reconnect_error = None
        await eventually(lambda: slack.connected, what="the reconnect to succeed")
        assert maintenance.jobs.running


async def test_a_job_that_raises_does_not_stop_the_scheduler() -> None:
    jobs = IntervalScheduler()
    calls = {"broken": 0, "steady": 0, "slow": 0}
    active = {"slow": 0, "max": 0}

    async def broken() -> JobResult:
        calls["broken"] += 1
        raise ValueError(f"boom {calls['broken']}")

    async def steady() -> JobResult:
        calls["steady"] += 1
        return JobResult("fine")

    async def slow() -> JobResult:
        calls["slow"] += 1
        active["slow"] += 1
        active["max"] = max(active["max"], active["slow"])
        try:
            await asyncio.sleep(0.25)
        finally:
            active["slow"] -= 1
        return JobResult("slow")

    jobs.add_job("broken", broken, 0.05)
    jobs.add_job("steady", steady, 0.05)
    jobs.add_job("slow", slow, 0.05)  # fires far more often than it finishes
    await jobs.start()
    try:
        await eventually(lambda: calls["broken"] >= 4 and calls["steady"] >= 4 and calls["slow"] >= 2,
                         what="several runs of every job")
        manual = await jobs.run_now("slow")  # waits for the timer's run instead of overlapping it
        assert manual.outcome == "ok"
    finally:
        await jobs.stop()
    broken_state = jobs.state("broken")
    assert broken_state.failures == broken_state.runs >= 4
    assert broken_state.last_failure is not None and broken_state.last_failure.detail.startswith("ValueError: boom")
    assert jobs.state("steady").failures == 0 and jobs.state("steady").last.outcome == "ok"  # type: ignore[union-attr]
    assert active["max"] == 1  # runs of one job never overlap
    runs_after_stop = dict(calls)
    await asyncio.sleep(0.2)
    assert calls == runs_after_stop  # stopped means stopped
    assert not jobs.running


async def test_stop_cancels_runs_in_progress_but_not_who_asked_for_them() -> None:
    jobs = IntervalScheduler()
    started = {"timer": asyncio.Event(), "manual": asyncio.Event()}

    def endless(which: str):  # type: ignore[no-untyped-def]
        async def run() -> JobResult:
            started[which].set()
            await asyncio.sleep(3600)
            return JobResult()

        return run

    jobs.add_job("timer", endless("timer"), 0.05)
    jobs.add_job("manual", endless("manual"), 3600)
    await jobs.start()
    asker = asyncio.create_task(jobs.run_now("manual"))
    await asyncio.wait_for(asyncio.gather(started["timer"].wait(), started["manual"].wait()), 5)
    await asyncio.wait_for(jobs.stop(), 5)
    manual = await asyncio.wait_for(asker, 5)  # the caller gets an answer instead of being cancelled
    assert manual.outcome == "cancelled"
    last = jobs.state("timer").last
    assert last is not None and last.outcome == "cancelled"


async def test_expiry_forgets_old_dedupe_keys_conversations_and_usage(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, CONVERSATION_RETENTION_DAYS=0.1 / 86400)
    async with running_app(settings, [ControlledAdapter("slack")]) as app:
        store = app.store
        assert await store.dedupe.claim("slack:event:E1", 0.05)
        assert await store.dedupe.claim("slack:msg:M1", 0.05)
        await store.conversations.add_turn("slack:W1:C1:T1", "user", "what is this?")
        old = time.time() - 40 * 86400
        app.usage.record(RequestRecord(old, "slack", "slack:W1:C1", "slack:U1", "answered", None, 1.0))
        await asyncio.sleep(0.3)
        run = await _maintenance(app).jobs.run_now(EXPIRY)
        assert run.outcome == "ok"
        assert run.data["dedupe_keys"] == 2
        assert run.data["conversations"] == 1
        assert run.data["usage_days"] == 1
        assert await store.conversations.turns("slack:W1:C1:T1", 10) == []
        assert await store.dedupe.claim("slack:event:E1", 60)  # forgotten, so a new delivery counts again


async def test_snapshots_fill_the_ring_while_running(monkeypatch, tmp_path, model_dir) -> None:
    settings = configure(monkeypatch, tmp_path, model_dir, SNAPSHOT_INTERVAL_S=0.1, SNAPSHOT_HISTORY_S=1)
    slack = ControlledAdapter("slack")
    async with running_app(settings, [slack]) as app:
        maintenance = _maintenance(app)
        assert maintenance.ring.capacity == 11
        reply = await slack.ask("what is this?", screenshot(tmp_path / "a.png"))
        assert reply.error is None
        await eventually(lambda: any(s.requests for s in maintenance.ring), what="a snapshot with the answer")
        answered = next(s for s in maintenance.ring if s.requests)
        assert answered.latency_p50_s is not None and answered.latency_p50_s > 0
        assert answered.rss_bytes is not None and answered.rss_bytes > 10 * 2**20
        await eventually(lambda: maintenance.jobs.state(SNAPSHOT).runs >= 13, what="more snapshots than fit")
        assert len(maintenance.ring) == 11  # the oldest were dropped
    count = len(maintenance.ring)
    latest = maintenance.ring.latest()
    await asyncio.sleep(0.3)
    assert len(maintenance.ring) == count and maintenance.ring.latest() is latest  # stopped with the app
