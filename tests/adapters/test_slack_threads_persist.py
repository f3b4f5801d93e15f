"""Follow-ups in a Slack thread need no mention, also after a restart and on another replica.

The threads a process answered live in its memory; the state store knows every conversation the bot answered.
A reply without a mention in a thread this process does not know is looked up there (one bounded lookup before
the ack). Real slack-bolt/slack_sdk run against the loopback fake Slack; the end-to-end tests answer with the
tiny real model, the others hand the adapter a conversation directory of their own and no model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import SlackAdapter
from bot.app import Application
from bot.engine import ChatTurn
from bot.types import ConversationKey, IncomingMessage, ReplyHandle, UsesConversationDirectory
from sandbox.slack_server import Delivery, FakeSlack, slack_environment
from tests.support.apps import AdapterStarter, AppStarter, set_environment, tiny_bot_environment, tiny_engine
from tests.support.engines import RecordingEngine
from tests.support.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.timeout(90)

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
CHANNEL = "C0GENERAL"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=3.0) as server:
        yield server


async def acked(fake: FakeSlack, event: dict[str, Any]) -> Delivery:
    """Send ``event`` and wait for its ack (before Slack would send it again): the adapter has decided about the
    event by then, as it acks after the handler returned."""
    return await fake.wait_for_ack(await fake.send_event(event), timeout=fake.ack_timeout_s)


# end to end: Application + tiny model ------------------------------------------------------------
@dataclass
class Bot:
    app: Application
    adapter: SlackAdapter
    engine: RecordingEngine


StartBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
def start_bot(fake: FakeSlack, start_app: AppStarter, tiny_qwen3_dir: Path, tiny_loaded: Any) -> StartBot:
    """``await start_bot(data_dir, **env)`` starts one bot process's worth (adapter + Application); the test may
    stop it with ``bot.app.stop()``, the rest are stopped at the end."""

    async def start(data_dir: Path, **env: str) -> Bot:
        app = await start_app(
            {
                **tiny_bot_environment(tiny_qwen3_dir, data_dir=data_dir, max_new_tokens=4, rate_limit_per_minute=0),
                **slack_environment(fake, fast_watchdog=True),
                **env,
            },
            engine=tiny_engine(tiny_loaded),
            adapters=lambda settings: [SlackAdapter(settings)],
        )
        adapter, engine = app.adapters["slack"], app.engine
        assert isinstance(adapter, SlackAdapter) and isinstance(engine, RecordingEngine)
        return Bot(app, adapter, engine)

    return start


async def answered(fake: FakeSlack, question: dict[str, Any], timeout: float = 30.0) -> list[str]:
    """Wait until the answer to ``question`` is complete; the texts of the bot's messages in its thread."""
    return await fake.wait_answered(question, timeout)


def earlier_turns(bot: Bot, question: str) -> list[ChatTurn]:
    [request] = [r for r in bot.engine.requests if r.question == question]
    return list(request.history)


async def test_follow_up_after_a_restart_needs_no_mention_and_keeps_the_history(
    fake: FakeSlack, start_bot: StartBot, tmp_path: Path
) -> None:
    first = await start_bot(tmp_path / "data")
    question = fake.user_message(CHANNEL, f"{MENTION} what is on this dashboard?")
    await fake.send_event(question)
    [first_answer] = await answered(fake, question)
    await first.app.stop()

    second = await start_bot(tmp_path / "data")  # the next process: same SQLite store, empty memory
    assert isinstance(second.adapter, UsesConversationDirectory)
    follow_up = fake.user_message(CHANNEL, "and which panel is red?", thread_ts=question["ts"])
    await fake.send_event(follow_up)
    texts = await answered(fake, follow_up)
    assert len(texts) == 2 and texts[0] == first_answer and texts[1].strip()
    history = earlier_turns(second, "and which panel is red?")
    assert [(t.role, t.text) for t in history] == [
        ("user", "what is on this dashboard?"),
        ("assistant", first_answer),
    ]

    # Still not for the bot: a reply in a thread it never answered, and one addressed to someone else.
    chatter = fake.user_message(CHANNEL, "deploy at five?")
    aside = fake.user_message(CHANNEL, "fine by me", thread_ts=chatter["ts"])
    elsewhere = fake.user_message(CHANNEL, "<@U0BOB> can you check the red panel?", thread_ts=question["ts"])
    for event in (chatter, aside, elsewhere):
        await acked(fake, event)
    assert second.app.counters["accepted"] == 1
    await asyncio.sleep(0.3)
    assert fake.bot_messages(CHANNEL, chatter["ts"]) == []
    assert len(fake.bot_messages(CHANNEL, question["ts"])) == 2
    assert [r.question for r in second.engine.requests] == ["and which panel is red?"]


async def test_follow_up_delivered_to_another_replica_is_answered_there(
    fake: FakeSlack, start_bot: StartBot, tmp_path: Path
) -> None:
    pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis", binary=binary) as redis:
        shared = {"PEEKBOT_STORE_URL": redis.url}
        replica_a = await start_bot(tmp_path / "a", PEEKBOT_INSTANCE_ID="replica-a", **shared)
        [connection_a] = fake.open_connection_numbers
        replica_b = await start_bot(tmp_path / "b", PEEKBOT_INSTANCE_ID="replica-b", **shared)
        [connection_b] = [n for n in fake.open_connection_numbers if n != connection_a]

        question = fake.user_message(CHANNEL, f"{MENTION} why did the job fail?")
        await fake.send_event(question, connection=connection_a)
        [first_answer] = await answered(fake, question)

        follow_up = fake.user_message(CHANNEL, "how do I rerun it?", thread_ts=question["ts"])
        await fake.send_event(follow_up, connection=connection_b)
        texts = await answered(fake, follow_up)
        assert len(texts) == 2
        assert [r.question for r in replica_a.engine.requests] == ["why did the job fail?"]
        history = earlier_turns(replica_b, "how do I rerun it?")
        assert [(t.role, t.text) for t in history] == [("user", "why did the job fail?"), ("assistant", first_answer)]
        await replica_b.app.stop()
        await replica_a.app.stop()


# the adapter's lookups, with a directory of the test's own -----------------------------------------
@dataclass
class Directory:
    """A conversation directory that knows the conversations in ``answered``; may fail or hang."""

    answered: set[ConversationKey] = field(default_factory=set)
    failure: Exception | None = None
    hang: bool = False
    asked: list[ConversationKey] = field(default_factory=list)

    async def answered_before(self, conversation: ConversationKey) -> bool:
        self.asked.append(conversation)
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure
        return conversation in self.answered


@dataclass
class Core:
    """Stands in for ``Application.handle``: keeps what it is given."""

    taken: list[IncomingMessage] = field(default_factory=list)

    async def __call__(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        self.taken.append(message)
        return True


@pytest.fixture
async def adapter_with(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[Directory, Core], Awaitable[SlackAdapter]]]:
    set_environment(monkeypatch, slack_environment(fake, fast_watchdog=True))
    async with AdapterStarter(SlackAdapter) as start:

        async def start_with(directory: Directory, core: Core) -> SlackAdapter:
            return await start(core, configure=lambda adapter: adapter.use_conversation_directory(directory))

        yield start_with


def thread_of(event: dict[str, Any]) -> ConversationKey:
    return ConversationKey(platform="slack", workspace=FakeSlack.TEAM_ID, channel=event["channel"], thread=event["ts"])


async def test_only_replies_in_unknown_threads_are_looked_up_and_once_per_thread(
    fake: FakeSlack, adapter_with: Callable[[Directory, Core], Awaitable[SlackAdapter]]
) -> None:
    answered_root = fake.user_message(CHANNEL, "the build is red again")
    directory, core = Directory(answered={thread_of(answered_root)}), Core()
    await adapter_with(directory, core)

    # Not thread replies, or addressed to someone: no lookup.
    for event in (
        fake.user_message(CHANNEL, "good morning"),
        fake.user_message("D0ALICE", "hi there"),
        fake.user_message(CHANNEL, "<@U0BOB> any idea?", thread_ts=answered_root["ts"]),
    ):
        await acked(fake, event)
    assert directory.asked == []
    assert [m.text for m in core.taken] == ["hi there"]

    # A reply in an answered thread: one lookup, with the same key the core gets; later replies use the cache.
    follow_up = fake.user_message(CHANNEL, "any news?", thread_ts=answered_root["ts"])
    await acked(fake, follow_up)
    again = fake.user_message(CHANNEL, "still red", thread_ts=answered_root["ts"])
    await acked(fake, again)
    assert [m.text for m in core.taken[1:]] == ["any news?", "still red"]
    assert directory.asked == [core.taken[1].conversation] == [thread_of(answered_root)]
    assert not core.taken[1].mentions_bot

    # A reply in a thread nobody answered: looked up, then left alone.
    lunch = fake.user_message(CHANNEL, "lunch?")
    await acked(fake, fake.user_message(CHANNEL, "yes", thread_ts=lunch["ts"]))
    assert directory.asked[-1] == thread_of(lunch)
    assert len(core.taken) == 3


async def test_a_failing_or_silent_directory_leaves_the_reply_unanswered_and_acked(
    fake: FakeSlack, adapter_with: Callable[[Directory, Core], Awaitable[SlackAdapter]]
) -> None:
    root = fake.user_message(CHANNEL, "the build is red again")
    directory, core = Directory(answered={thread_of(root)}, failure=ConnectionError("store unreachable")), Core()
    await adapter_with(directory, core)

    await acked(fake, fake.user_message(CHANNEL, "any news?", thread_ts=root["ts"]))
    assert len(directory.asked) == 1 and core.taken == []

    directory.failure, directory.hang = None, True
    delivery = await acked(fake, fake.user_message(CHANNEL, "still red?", thread_ts=root["ts"]))
    assert len(directory.asked) == 2 and core.taken == []
    assert len(fake.deliveries_of(delivery.envelope["payload"]["event_id"])) == 1  # not sent again

    # The adapter keeps serving: a mention in that thread is taken, and follow-ups there need no lookup now.
    directory.hang = False
    await acked(fake, fake.user_message(CHANNEL, f"{MENTION} what broke?", thread_ts=root["ts"]))
    await acked(fake, fake.user_message(CHANNEL, "and why?", thread_ts=root["ts"]))
    assert [m.text for m in core.taken] == ["what broke?", "and why?"]
    assert len(directory.asked) == 2
