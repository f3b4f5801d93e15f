"""Shared by the tests of replies that outlive their process: a stand-in core and adapters on the loopback fakes.

Import the fixtures a test module needs, e.g.
``from tests.support.resume_support import Core, journaled, slack, start_slack  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from adapters.feishu import FeishuAdapter
from adapters.slack import SlackAdapter
from bot.settings import Settings
from bot.store.codec import decode_message, encode_message
from bot.types import IncomingMessage, ReplyHandle
from tests.support.fake_feishu import FakeFeishu, feishu_environment
from tests.support.fake_slack import FakeSlack


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


StartSlack = Callable[[Core], Awaitable[SlackAdapter]]
StartFeishu = Callable[[Core], Awaitable[FeishuAdapter]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=0.6) as server:
        yield server


@pytest.fixture
async def start_slack(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartSlack]:
    """Starts Slack adapters (one per simulated process) against the fake; stops them at the end."""
    for key, value in {
        "SLACK_BOT_TOKEN": slack.BOT_TOKEN,
        "SLACK_APP_TOKEN": slack.APP_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "SLACK_UPDATE_INTERVAL_S": "0.05",
        "SLACK_WATCHDOG_INTERVAL_S": "0.2",
        "SLACK_AUTH_CHECK_INTERVAL_S": "0",
        "SLACK_STARTUP_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    started: list[SlackAdapter] = []

    async def start(core: Core) -> SlackAdapter:
        adapter = SlackAdapter(Settings())
        await adapter.start(core)
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        await adapter.stop()


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(ack_timeout_s=0.5) as server:
        yield server


@pytest.fixture
async def start_feishu(feishu: FakeFeishu, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartFeishu]:
    """Starts Feishu adapters (one per simulated process) against the fake; stops them at the end."""
    for key, value in feishu_environment(feishu, fast_heartbeat=True).items():
        monkeypatch.setenv(key, value)
    started: list[FeishuAdapter] = []

    async def start(core: Core) -> FeishuAdapter:
        adapter = FeishuAdapter(Settings())
        await adapter.start(core)
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        await adapter.stop()
