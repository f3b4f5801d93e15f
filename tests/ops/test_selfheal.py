"""Self-healing when the model's worker hangs: apologise for the question it hung on, exit, answer the rest.

In process (the real engine on the tiny model): the question being generated gets an apology and is finished as
failed, the others stay in the journal and the next start answers them. End to end (``peekbot run`` processes
against the loopback fake Slack, started through ``tests/support/hang_launcher.py``, whose worker blocks for good on a
marked question): the process exits with code 75 by itself, tells systemd READY/WATCHDOG/STOPPING on the way, and
the restart answers the other questions once and leaves the poison one alone.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import ENGINE_STUCK_EXIT_CODE, STALLED_REPLY
from bot.durability import job_id_for
from bot.store.base import JobState
from bot.wiring import build_application
from inference.execution import BatchRunner
from sandbox.slack_server import FakeSlack, slack_environment
from scheduler.service import LIVENESS
from scheduler.systemd import notify
from tests.support.apps import tiny_bot_environment
from tests.support.hang_launcher import MARKER, make_generation_hang
from tests.support.helpers import LocalFilesAdapter, RecordingReply, message
from tests.support.ops_support import configure, tiny_engine
from tests.support.processes import BotProcess, child_environment
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(170)

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"


# ------------------------------------------------------------------------------------------- in process


async def test_the_question_the_worker_hangs_on_gets_an_apology_and_the_others_are_answered_after_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen3_dir: Path
) -> None:
    release = threading.Event()
    monkeypatch.setattr(BatchRunner, "_prefill", BatchRunner._prefill)  # restored after the test
    make_generation_hang(BatchRunner, release=release)
    settings = configure(
        monkeypatch,
        tmp_path,
        tiny_qwen3_dir,
        HEALTH_INTERVAL_S=3600,  # pinged by hand below, once the worker hangs
        LIVENESS_TIMEOUT_S=0.2,
        ENGINE_STUCK_EXIT_S=0.6,
        DRAIN_TIMEOUT_S=1,
        MAX_NEW_TOKENS=4,
    )
    adapter = LocalFilesAdapter()
    app = build_application(settings, engine=tiny_engine(settings), adapters=[adapter])
    poison, other = message(f"{MARKER} what is this?", thread="T1"), message("and this?", thread="T2")
    poison_reply, other_reply = RecordingReply(), RecordingReply()
    await app.start()
    stopping: asyncio.Task[None] | None = None
    try:
        assert adapter.handler is not None
        assert await adapter.handler(poison, poison_reply)
        await eventually(lambda: app.engine.running_requests() != [], what="the worker to hang")
        assert [r.job_id for r in app.engine.running_requests()] == [job_id_for(poison)]
        assert await adapter.handler(other, other_reply)  # waits behind the hung batch
        maintenance = app.maintenance
        assert maintenance is not None
        await maintenance.jobs.run_now(LIVENESS)
        assert not app.exit_requested.is_set() and poison_reply.error is None  # not stuck for long enough yet
        await asyncio.sleep(0.6)
        await maintenance.jobs.run_now(LIVENESS)
        assert app.exit_requested.is_set()
        assert app.exit_code == ENGINE_STUCK_EXIT_CODE and app.unhealthy
        await poison_reply.wait(10)
        assert poison_reply.error == STALLED_REPLY and poison_reply.final is None
        for _ in range(100):  # the journal is written right after the apology
            poison_job = await app.store.jobs.get(job_id_for(poison))
            if poison_job is not None and poison_job.state != JobState.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert poison_job is not None and poison_job.state == JobState.FAILED
        assert poison_job.error == "stalled the model"
        # What `peekbot run` does next: stop, draining (bounded) what is in flight.
        stopping = asyncio.create_task(app.stop())
        await eventually(lambda: app.in_flight == 0, what="the drain to give up on the other question")
    finally:
        release.set()  # the worker of `peekbot run` stays hung; here it is let go so that the test stops quickly
        await (stopping if stopping is not None else app.stop())
    assert other_reply.final is None and other_reply.error is None, "the other question was not left alone"

    restarted = build_application(settings, engine=tiny_engine(settings), adapters=[adapter])
    async with restarted:
        assert [m.message_id for m, _, _ in adapter.resumed] == [other.message_id], "the poison one was retried"
        resumed_reply = adapter.resumed[0][2]
        await resumed_reply.wait(60)
        assert resumed_reply.error is None and resumed_reply.final
        assert await restarted.wait_idle(30)
        assert (await restarted.store.jobs.get(job_id_for(other))).state == JobState.ANSWERED  # type: ignore[union-attr]
    assert poison_reply.error == STALLED_REPLY and len(adapter.resumed) == 1


async def test_systemd_notifications_never_block_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notify socket nobody reads fills up (10 datagrams on Linux); the bot drops messages rather than wait."""
    name = f"@peekbot-test-{uuid.uuid4().hex[:12]}"
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind("\0" + name[1:])
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    try:
        sent = await asyncio.wait_for(asyncio.to_thread(lambda: [notify("WATCHDOG=1") for _ in range(100)]), 5)
    finally:
        unread.close()  # unblocks a sender that waits, so that a failing test ends
    assert sent[0] is True and sent[-1] is False
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False  # not under systemd: nothing to do


# ------------------------------------------------------------------------------------------- end to end


class NotifySocket:
    """systemd's side of the notify protocol: an abstract Unix datagram socket read by a thread, as systemd does."""

    def __init__(self) -> None:
        self.name = f"@peekbot-test-{uuid.uuid4().hex[:12]}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name[1:])
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self.received: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.received.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self._sock.close()


def bot_process(env: dict[str, str], log: Path) -> BotProcess:
    """One ``peekbot run`` through the hanging launcher."""
    return BotProcess(env, log, command=("-m", "tests.support.hang_launcher"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=2.0) as server:
        yield server


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def bot_env(fake: FakeSlack, tmp_path: Path, tiny_qwen3_dir: Path, notify_socket: NotifySocket) -> dict[str, str]:
    return child_environment({
        **tiny_bot_environment(
            tiny_qwen3_dir, cpu_threads=1, data_dir=tmp_path / "data", max_new_tokens=16, max_pixels=128 * 128,
            log_format="text", rate_limit_per_minute=0, health_interval_s=0.3, liveness_timeout_s=0.3,
            engine_stuck_exit_s=3, drain_timeout_s=2, stop_timeout_s=1, job_lease_s=5,
        ),
        **slack_environment(fake, fail_fast=False),
        "NOTIFY_SOCKET": notify_socket.name,
        "WATCHDOG_USEC": "400000",
        "HANG_SIGNAL_FILE": str(tmp_path / "hung"),
    })


async def _ask(fake: FakeSlack, text: str) -> dict[str, Any]:
    event = fake.user_message("C0GENERAL", f"{MENTION} {text}")
    await fake.wait_for_ack(await fake.send_event(event), timeout=30)
    return event


def _answered(fake: FakeSlack, event: dict[str, Any]) -> bool:
    return any(c.method == "reactions.remove" and c.args.get("timestamp") == event["ts"] for c in fake.calls())


async def test_a_hung_worker_exits_with_its_code_and_the_restart_answers_the_rest_once(
    fake: FakeSlack,
    bot_env: dict[str, str],
    tmp_path: Path,
    processes: list[BotProcess],
    notify_socket: NotifySocket,
) -> None:
    hung = tmp_path / "hung"
    first = bot_process(bot_env, tmp_path / "bot-1.log")
    processes.append(first)
    await fake.wait_for_connection(1, timeout=90)
    await eventually(lambda: "READY=1" in "\n".join(notify_socket.received), "READY=1 from the bot", timeout=30)
    assert "engine ready" in first.log.read_text(), "READY=1 came before the model was loaded"

    poison = await _ask(fake, f"{MARKER} what is in this picture?")
    await eventually(hung.exists, "the model's worker to hang", timeout=60)
    others = [await _ask(fake, "what is peekbot?"), await _ask(fake, "what is a screenshot?")]

    code = await first.wait(90)
    assert code == ENGINE_STUCK_EXIT_CODE, first.log.read_text()[-3000:]
    log = first.log.read_text()
    assert "Stalled on slack:" in log and "2 other questions in flight stay in the journal" in log
    await eventually(lambda: "STOPPING=1" in notify_socket.received, "STOPPING=1 from the bot", timeout=5)
    notes = list(notify_socket.received)
    assert "WATCHDOG=1" in notes and notes[-1] == "STOPPING=1", notes  # no watchdog ping once it gave up
    apology = fake.bot_messages(poison["channel"], poison["ts"])
    assert [m["text"] for m in apology] == [f":warning: {STALLED_REPLY}"]
    assert not any(_answered(fake, event) for event in others), "the others should be answered by the restart"

    hung.unlink()
    second = bot_process(bot_env, tmp_path / "bot-2.log")
    processes.append(second)
    for event in others:
        texts = await fake.wait_answered(event, 90)
        assert len(texts) == 1 and texts[0].strip(), texts
        assert not any(word in texts[0].lower() for word in ("sorry", "stall", "restart")), texts[0]
    assert "resuming job slack:" in second.log.read_text()
    assert not hung.exists(), "the restart tried the poison question again"
    assert [m["text"] for m in fake.bot_messages(poison["channel"], poison["ts"])] == [f":warning: {STALLED_REPLY}"]
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait(60) == 0
