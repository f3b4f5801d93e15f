"""Durability end to end: `peekbot run` as a real process against the loopback fake Slack, killed or stopped mid-answer.

kill -9 during generation, then a new process: the question is answered exactly once (the same placeholder turns
into the answer, no second message). SIGTERM during generation: the answer in flight is delivered before exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import tiny_bot_environment
from tests.support.processes import BotProcess, child_environment

pytestmark = pytest.mark.timeout(170)

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
THINKING_WORDS = ("thinking", "looking", "queue", "restart")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=2.0) as server:
        yield server


@pytest.fixture
def bot_env(fake: FakeSlack, tmp_path: Path, tiny_qwen3_dir: Path) -> dict[str, str]:
    return child_environment({
        **tiny_bot_environment(
            tiny_qwen3_dir, cpu_threads=1, data_dir=tmp_path / "data", max_pixels=128 * 128, drain_timeout_s=60,
            job_lease_s=5, log_format="text",
            max_new_tokens=600,  # long enough to be interrupted mid-answer
        ),
        **slack_environment(fake, fail_fast=False),
    })


def _placeholder_streaming(fake: FakeSlack, channel: str, ts: str) -> dict[str, Any] | None:
    """The bot's reply in the thread once it shows part of an answer (not just the progress text)."""
    for message in fake.bot_messages(channel, ts):
        text = str(message.get("text", "")).lower()
        if len(text) > 20 and not any(word in text for word in THINKING_WORDS):
            return message
    return None


async def _ask(fake: FakeSlack, channel: str = "C0GENERAL") -> dict[str, Any]:
    await fake.wait_for_connection(1, timeout=90)
    event = fake.user_message(channel, f"{MENTION} describe everything you can in great detail")
    envelope = await fake.send_event(event)
    await fake.wait_for_ack(envelope, timeout=30)
    return event


async def answering(
    fake: FakeSlack, bot_env: dict[str, str], log: Path, processes: list[BotProcess]
) -> tuple[BotProcess, dict[str, Any]]:
    """A new bot process asked a long question, once part of its answer shows: the process and the question."""
    bot = BotProcess(bot_env, log)
    processes.append(bot)
    event = await _ask(fake)
    channel, ts = event["channel"], event["ts"]
    await fake.wait_until(lambda: _placeholder_streaming(fake, channel, ts), 90, "a partial answer")
    return bot, event


async def test_kill_9_mid_answer_then_restart_answers_exactly_once(
    fake: FakeSlack, bot_env: dict[str, str], tmp_path: Path, processes: list[BotProcess]
) -> None:
    first, event = await answering(fake, bot_env, tmp_path / "bot-1.log", processes)
    channel, ts = event["channel"], event["ts"]
    first.kill()
    assert not any(
        c.method == "reactions.remove" and c.args.get("timestamp") == ts for c in fake.calls()
    ), "the first process finished before it was killed; the test proves nothing"
    placeholder_ts = fake.bot_messages(channel, ts)[0]["ts"]

    second = BotProcess(bot_env, tmp_path / "bot-2.log")
    processes.append(second)
    await fake.wait_answered(event, 120)
    assert "resuming job slack:" in (tmp_path / "bot-2.log").read_text(), "the answer did not come from the journal"

    replies = fake.bot_messages(channel, ts)
    assert len(replies) == 1, f"expected one reply in the thread, got {[r.get('text') for r in replies]}"
    assert replies[0]["ts"] == placeholder_ts, "the restarted bot should finish the same placeholder"
    assert not any(word in replies[0]["text"].lower() for word in ("thinking", "sorry")), replies[0]["text"]
    posts = [c for c in fake.reply_posts() if c.args.get("thread_ts") == ts]
    assert len(posts) == 1, "a second placeholder was posted"
    await second.terminate(60)
    # The next start has nothing left to answer: no new message appears.
    third = BotProcess(bot_env, tmp_path / "bot-3.log")
    processes.append(third)
    await fake.wait_for_connection(1, timeout=90)
    await asyncio.sleep(1.0)
    assert len(fake.bot_messages(channel, ts)) == 1
    assert len([c for c in fake.reply_posts() if c.args.get("thread_ts") == ts]) == 1


async def test_sigterm_mid_answer_delivers_the_answer_before_exit(
    fake: FakeSlack, bot_env: dict[str, str], tmp_path: Path, processes: list[BotProcess]
) -> None:
    bot, event = await answering(fake, bot_env, tmp_path / "bot.log", processes)
    channel, ts = event["channel"], event["ts"]
    code = await bot.terminate(90)
    assert code == 0, f"exit code {code}"
    # Delivered before the process exited: the final edit and the reaction removal are already on the fake.
    assert any(c.method == "reactions.remove" and c.args.get("timestamp") == ts for c in fake.calls())
    replies = fake.bot_messages(channel, ts)
    assert len(replies) == 1
    assert not any(word in replies[0]["text"].lower() for word in ("restarting", "sorry")), replies[0]["text"]
