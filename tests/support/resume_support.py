"""Shared by the tests of replies that outlive their process: a stand-in core and adapters on the loopback fakes.

Import the fixtures a test module needs, e.g.
``from tests.support.resume_support import Core, journaled, slack, start_slack  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pytest

from adapters.feishu import FeishuAdapter
from adapters.slack import SlackAdapter
from bot.store.codec import decode_message, encode_message
from bot.types import Adapter, IncomingMessage, ReplyHandle, ResumableReplies
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import AdapterStarter, set_environment
from tests.support.fake_feishu import FakeFeishu, feishu_environment


@dataclass
class Core:
    """Stands in for ``Application.handle``: keeps what it is given; may fail (a broken journal) or say duplicate."""

    failures: int = 0
    delay_s: float = 0.0
    duplicates: set[str] = field(default_factory=set)
    taken: list[tuple[IncomingMessage, ReplyHandle]] = field(default_factory=list)
    calls: int = 0
    returned_at: list[float] = field(default_factory=list)

    async def __call__(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failures > 0:
            self.failures -= 1
            raise OSError("database is locked")
        if message.text in self.duplicates:
            return False
        self.taken.append((message, reply))
        self.returned_at.append(time.monotonic())
        return True

    async def wait_taken(self, count: int = 1, timeout: float = 10.0) -> tuple[IncomingMessage, ReplyHandle]:
        deadline = time.monotonic() + timeout
        while len(self.taken) < count:
            assert time.monotonic() < deadline, f"the core was given {len(self.taken)} messages, not {count}"
            await asyncio.sleep(0.02)
        return self.taken[count - 1]


def journaled(message: IncomingMessage) -> IncomingMessage:
    """The message as the next process reads it from the journal."""
    return decode_message(encode_message(message))


Q = TypeVar("Q")


@dataclass
class Taken(Generic[Q]):
    """A question a process took: its adapter and stand-in core, the platform's question (an event or an id), and
    what the core was given for it."""

    adapter: Any
    core: Core
    question: Q
    message: IncomingMessage
    reply: Any


async def showing_progress(
    start: Callable[[Core], Awaitable[Any]],
    ask: Callable[[Core], Awaitable[tuple[Q, IncomingMessage, ReplyHandle]]],
) -> Taken[Q]:
    """A process (a new adapter from ``start``) takes the question ``ask`` delivers and shows its progress."""
    core = Core()
    adapter = await start(core)
    question, message, reply = await ask(core)
    await reply.start_progress(None)
    return Taken(adapter, core, question, message, reply)


async def next_process_reply(
    start: Callable[[Core], Awaitable[Adapter]], message: IncomingMessage, state: Mapping[str, str] | None = None
) -> ReplyHandle:
    """The reply a new adapter (the next process, started by ``start``) makes for the journaled ``message`` and reply
    ``state`` (``None``: the first process died before journaling any), its progress shown as the core does."""
    journal = dict(state or {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in journal.items()), "the journal stores strings"
    adapter = await start(Core())
    assert isinstance(adapter, ResumableReplies)
    resumed = adapter.reply_for(journaled(message), journal)
    await resumed.start_progress(None)
    return resumed


StartSlack = Callable[[Core], Awaitable[SlackAdapter]]
StartFeishu = Callable[[Core], Awaitable[FeishuAdapter]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=0.6) as server:
        yield server


@pytest.fixture
async def start_slack(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartSlack]:
    """Starts Slack adapters (one per simulated process) against the fake; stops them at the end."""
    set_environment(monkeypatch, slack_environment(slack, fast_watchdog=True))
    async with AdapterStarter(SlackAdapter) as start:
        yield start


@pytest.fixture
def slack_edits(start_slack: StartSlack, monkeypatch: pytest.MonkeyPatch) -> StartSlack:
    """``start_slack`` with native streaming off: replies edit their placeholder with ``chat.update``."""
    monkeypatch.setenv("SLACK_NATIVE_STREAMING", "false")
    return start_slack


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(ack_timeout_s=0.5) as server:
        yield server


@pytest.fixture
async def start_feishu(feishu: FakeFeishu, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartFeishu]:
    """Starts Feishu adapters (one per simulated process) against the fake; stops them at the end."""
    set_environment(monkeypatch, feishu_environment(feishu, fast_heartbeat=True))
    async with AdapterStarter(FeishuAdapter) as start:
        yield start
