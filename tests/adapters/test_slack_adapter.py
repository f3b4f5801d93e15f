"""Slack end to end: real slack-bolt/slack_sdk → loopback fake Slack → SlackAdapter → Application → engine with a
tiny real Qwen3-VL model → the reply as Slack would show it."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.slack import SlackAdapter, SlackStartupError
from bot.app import Application
from bot.types import AdapterHealth
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import AppStarter, tiny_bot_environment, tiny_engine
from tests.support.engines import RecordingEngine

pytestmark = pytest.mark.timeout(120)

ALICE = "U0ALICE"
ADMIN = "U0ADMIN"
MENTION = f"<@{FakeSlack.BOT_USER_ID}>"


def png(width: int = 96, height: int = 64, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf(pages: int = 1) -> bytes:
    buffer = io.BytesIO()
    images = [Image.new("RGB", (200, 260), (255, 255, 255 - 40 * i)) for i in range(pages)]
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:])
    return buffer.getvalue()




@dataclass
class Bot:
    fake: FakeSlack
    app: Application
    adapter: SlackAdapter
    engine: RecordingEngine

    async def answer_to(self, question: dict[str, Any], timeout: float = 60.0) -> list[str]:
        """Wait until the reply to ``question`` is complete; the texts of the bot's messages in its thread."""
        return await self.fake.wait_answered(question, timeout)

    def replies_in(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return self.fake.bot_messages(channel, thread_ts)

    async def reconnected(self, times: int = 1, timeout: float = 15.0) -> AdapterHealth:
        """Wait until the adapter reports ``times`` reconnects and a live connection."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            health = await self.adapter.health()
            if health.reconnects >= times and health.connected:
                return health
            assert asyncio.get_running_loop().time() < deadline, f"no reconnect within {timeout} s: {health}"
            await asyncio.sleep(0.05)


StartBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=1.0) as server:
        yield server


@pytest.fixture
def start_bot(
    fake: FakeSlack, start_app: AppStarter, tmp_path: Path, tiny_qwen3_dir: Path, tiny_loaded: Any
) -> StartBot:
    async def start(**env: str) -> Bot:
        app = await start_app(
            {
                **tiny_bot_environment(tiny_qwen3_dir, data_dir=tmp_path / "data", admins=f"slack:{ADMIN}",
                                       max_new_tokens=6, max_pixels=128 * 128),
                **slack_environment(fake, fast_watchdog=True, SLACK_RECONNECT_INITIAL_S="0.1"),
                **env,
            },
            engine=tiny_engine(tiny_loaded),
            adapters=lambda settings: [SlackAdapter(settings)],
        )
        adapter, engine = app.adapters["slack"], app.engine
        assert isinstance(adapter, SlackAdapter) and isinstance(engine, RecordingEngine)
        return Bot(fake, app, adapter, engine)

    return start


@pytest.fixture
async def bot(start_bot: StartBot) -> Bot:
    return await start_bot()


# what it answers ---------------------------------------------------------------------------------
async def test_dm_with_a_screenshot_is_answered_in_its_thread(bot: Bot) -> None:
    fake = bot.fake
    shot = fake.add_file("screenshot.png", png(), "image/png")
    question = fake.user_message("D0ALICE", "what does this error mean?", files=[shot])
    envelope = await fake.send_event(question)

    texts = await bot.answer_to(question)
    assert len(texts) == 1 and texts[0].strip()  # the placeholder became the answer, in the question's thread
    assert texts[0] != "Looking at it…"
    posts = fake.reply_posts()
    assert posts and all(c.args["thread_ts"] == question["ts"] for c in posts)
    # Ack before work: the envelope was acked before the first Web API call of the answer.
    delivery = fake.deliveries[envelope]
    assert delivery.acked_at is not None and delivery.acked_at <= posts[0].at
    assert [c.args["name"] for c in fake.calls("reactions.add")] == ["eyes"]
    assert fake.downloads == [(shot["id"], True)]
    [request] = bot.engine.requests
    assert len(request.images) == 1 and request.question == "what does this error mean?"

    # A second DM: the assistant status was tried once (the app lacks assistant:write) and not again.
    again = fake.user_message("D0ALICE", "thanks, and now?")
    await fake.send_event(again)
    await bot.answer_to(again)
    assert len(fake.calls("assistant.threads.setStatus")) == 1


async def test_channel_mention_with_a_file_arrives_as_file_share_and_is_answered(bot: Bot) -> None:
    fake = bot.fake
    shot = fake.add_file("build.png", png(color=(200, 30, 30)), "image/png")
    question = fake.user_message("C0GENERAL", f"{MENTION} why is the build red?", files=[shot])
    assert question["subtype"] == "file_share"
    await fake.send_event(question)

    texts = await bot.answer_to(question)
    assert len(texts) == 1
    [request] = bot.engine.requests
    assert request.question == "why is the build red?"  # the mention token is gone
    assert len(request.images) == 1


async def test_follow_up_in_the_thread_needs_no_mention_and_sees_the_earlier_image(bot: Bot) -> None:
    fake = bot.fake
    shot = fake.add_file("chart.png", png(), "image/png")
    first = fake.user_message("C0GENERAL", f"{MENTION} what is this chart?", files=[shot])
    await fake.send_event(first)
    await bot.answer_to(first)

    follow_up = fake.user_message("C0GENERAL", "and what is the peak value?", thread_ts=first["ts"])
    await fake.send_event(follow_up)
    await bot.answer_to(follow_up)
    assert len(bot.replies_in("C0GENERAL", first["ts"])) == 2
    second = bot.engine.requests[1]
    assert second.question == "and what is the peak value?"
    assert len(second.images) == 1  # the chart from the thread's first message
    assert [f for f, _ in fake.downloads] == [shot["id"], shot["id"]]

    # A reply in another, unanswered thread without a mention is channel chatter.
    other = fake.user_message("C0GENERAL", "lunch?")
    aside = fake.user_message("C0GENERAL", "sure, at noon", thread_ts=other["ts"])
    for event in (other, aside):
        await fake.wait_for_ack(await fake.send_event(event))
    await asyncio.sleep(0.3)
    assert bot.replies_in("C0GENERAL", other["ts"]) == []
    assert len(bot.engine.requests) == 2


async def test_a_mention_in_a_thread_reads_the_screenshot_posted_earlier(bot: Bot) -> None:
    fake = bot.fake
    shot = fake.add_file("error.png", png(color=(250, 250, 0)), "image/png")
    posted = fake.user_message("C0GENERAL", "prod is down, see screenshot", files=[shot])
    await fake.wait_for_ack(await fake.send_event(posted))  # no mention: ignored
    question = fake.user_message("C0GENERAL", f"{MENTION} what's wrong here?", thread_ts=posted["ts"])
    await fake.send_event(question)

    texts = await bot.answer_to(question)
    assert len(texts) == 1
    [request] = bot.engine.requests
    assert request.question == "what's wrong here?"
    assert len(request.images) == 1
    assert fake.calls("conversations.replies")


async def test_a_pdf_is_read(bot: Bot) -> None:
    fake = bot.fake
    document = fake.add_file("report.pdf", pdf(pages=2), "application/pdf")
    question = fake.user_message("D0ALICE", "summarise this report", files=[document])
    await fake.send_event(question)
    texts = await bot.answer_to(question)
    assert len(texts) == 1 and not texts[0].startswith(":warning:")
    [request] = bot.engine.requests
    assert len(request.images) == 2  # one picture per page


async def test_a_file_given_only_by_id_is_completed_with_files_info(bot: Bot) -> None:
    fake = bot.fake
    slim = fake.add_file("slim.png", png(), "image/png", slim=True)
    question = fake.user_message("D0ALICE", "and this one?", files=[slim])
    await fake.send_event(question)
    await bot.answer_to(question)
    assert [c.args["file"] for c in fake.calls("files.info")] == [slim["id"]]
    assert len(bot.engine.requests[0].images) == 1


# files that cannot be used -----------------------------------------------------------------------
async def test_an_unreadable_file_gets_a_reply_that_says_how_to_fix_it(bot: Bot) -> None:
    fake = bot.fake
    locked = fake.add_file("secret.png", png(), "image/png", denied=True)
    question = fake.user_message("C0PRIVATE", f"{MENTION} what is this?", files=[locked])
    await fake.send_event(question)
    [text] = await bot.answer_to(question)
    assert text.startswith(":warning:")
    assert "invite" in text and "files:read" in text
    assert fake.downloads == [(locked["id"], False)]
    assert bot.engine.requests == []


async def test_an_oversized_file_is_refused_before_downloading(bot: Bot) -> None:
    fake = bot.fake
    huge = fake.add_file("huge.png", png(), "image/png", size=60 * 1024 * 1024)
    question = fake.user_message("D0ALICE", "look at this", files=[huge])
    await fake.send_event(question)
    [text] = await bot.answer_to(question)
    assert text.startswith(":warning:") and "is 60 MB" in text and "the limit is 25 MB" in text
    assert fake.downloads == []  # the size was checked first
    assert bot.engine.requests == []


async def test_an_unsupported_file_gets_a_clear_reply(bot: Bot) -> None:
    fake = bot.fake
    archive = fake.add_file("logs.zip", b"PK\x03\x04" + b"\0" * 200, "application/zip")
    question = fake.user_message("D0ALICE", "what's in here?", files=[archive])
    await fake.send_event(question)
    [text] = await bot.answer_to(question)
    assert text.startswith(":warning:") and "ZIP" in text


# exactly once ------------------------------------------------------------------------------------
async def test_a_redelivered_event_is_acked_and_answered_once(bot: Bot) -> None:
    fake = bot.fake
    question = fake.user_message("D0ALICE", "hello there")
    first = await fake.send_event(question, event_id="Ev0SAME")
    await bot.answer_to(question)
    again = await fake.send_event(question, event_id="Ev0SAME", retry_attempt=1)
    assert (await fake.wait_for_ack(again)).acked_at is not None
    await asyncio.sleep(0.3)
    assert fake.deliveries[first].acked_at is not None
    assert len(bot.replies_in("D0ALICE", question["ts"])) == 1
    assert len(bot.engine.requests) == 1


async def test_app_mention_and_message_for_one_post_give_one_answer(bot: Bot) -> None:
    fake = bot.fake
    shot = fake.add_file("shot.png", png(), "image/png")
    question = fake.user_message("C0GENERAL", f"{MENTION} what is this?", files=[shot])
    await asyncio.gather(fake.send_event(fake.app_mention(question)), fake.send_event(question))
    await bot.answer_to(question)
    await asyncio.sleep(0.3)
    assert len(bot.replies_in("C0GENERAL", question["ts"])) == 1
    assert len(bot.engine.requests) == 1


async def test_bots_edits_deletions_and_chatter_are_ignored(bot: Bot) -> None:
    fake = bot.fake
    base = fake.user_message("C0GENERAL", f"{MENTION} original question")
    ignored = [
        {**base, "bot_id": "B0OTHER", "subtype": "bot_message", "ts": "1.000001"},
        {**base, "user": fake.BOT_USER_ID, "bot_id": fake.BOT_ID, "ts": "1.000002"},
        {**base, "subtype": "message_changed", "message": {"text": f"{MENTION} edited"}, "ts": "1.000003"},
        {**base, "subtype": "message_deleted", "deleted_ts": base["ts"], "ts": "1.000004"},
        fake.user_message("C0GENERAL", "nobody mentioned the bot here"),
        {**fake.user_message("D0ALICE", "my own words"), "user": fake.BOT_USER_ID},
    ]
    envelopes = [await fake.send_event(event) for event in ignored]
    for envelope in envelopes:
        await fake.wait_for_ack(envelope)
    # A real question afterwards proves the pipeline is alive while the rest produced nothing.
    question = fake.user_message("D0ALICE", "are you there?")
    await fake.send_event(question)
    await bot.answer_to(question)
    assert len(bot.engine.requests) == 1
    assert {c.args["channel"] for c in fake.reply_posts()} == {"D0ALICE"}


# replies -----------------------------------------------------------------------------------------
async def test_rate_limited_chat_update_still_delivers_the_final_answer(start_bot: StartBot) -> None:
    bot = await start_bot(SLACK_NATIVE_STREAMING="false")
    fake = bot.fake
    fake.rate_limit("chat.update", times=2, retry_after=1)
    question = fake.user_message("D0ALICE", "describe a cat")
    await fake.send_event(question)
    [text] = await bot.answer_to(question)
    updates = fake.calls("chat.update")
    assert [c.status for c in updates[:2]] == [429, 429]
    assert updates[-1].ok and updates[-1].args["text"] == text
    assert text != "Looking at it…"


# connection health -------------------------------------------------------------------------------
async def test_half_open_connection_is_detected_and_the_next_event_is_answered(start_bot: StartBot) -> None:
    bot = await start_bot(SLACK_PING_INTERVAL_S="0.3", SLACK_WATCHDOG_INTERVAL_S="0.1")
    fake = bot.fake
    before = await bot.adapter.health()
    assert before.connected and before.reconnects == 0
    fake.go_silent()
    lost = fake.user_message("D0ALICE", "sent while the line was dead")
    await fake.send_event(lost)  # swallowed by the half-open connection; Slack redelivers it later
    await bot.reconnected(1)
    question = fake.user_message("D0ALICE", "are you back?")
    await fake.send_event(question)
    await bot.answer_to(question)
    await bot.answer_to(lost)  # the redelivery reached the new connection
    health = await bot.adapter.health()
    assert health.connected and health.reconnects >= 1
    assert len(bot.replies_in("D0ALICE", lost["ts"])) == 1


async def test_watchdog_reconnects_when_only_keepalives_still_echo(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's keepalive is satisfied, but no pong to slack_sdk's pings and no envelope arrives: our
    watchdog's own staleness check (3 × ping interval) replaces the connection."""
    caplog.set_level(logging.WARNING, logger="adapters.slack.connection")
    bot = await start_bot(SLACK_PING_INTERVAL_S="0.3", SLACK_WATCHDOG_INTERVAL_S="0.1")
    fake = bot.fake
    fake.go_silent(echo_keepalive=True)
    await bot.reconnected(1)
    assert any("no traffic or pong" in r.getMessage() for r in caplog.records)
    question = fake.user_message("D0ALICE", "hello?")
    await fake.send_event(question)
    await bot.answer_to(question)
    assert (await bot.adapter.health()).reconnects >= 1


async def test_a_failing_auth_test_health_ping_forces_a_reconnect(start_bot: StartBot) -> None:
    bot = await start_bot(SLACK_AUTH_CHECK_INTERVAL_S="0.2", SLACK_WATCHDOG_INTERVAL_S="0.1")
    bot.fake.fail("auth.test", error="fatal_error")
    health = await bot.reconnected(1)
    assert health.reconnects == 1 and bot.fake.connections_opened == 2
    assert "fatal_error" in [c.error for c in bot.fake.calls("auth.test")]


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
async def test_a_disconnect_message_moves_to_a_fresh_connection(bot: Bot, reason: str) -> None:
    fake = bot.fake
    await fake.disconnect(reason, close_after_s=1.0 if reason == "refresh_requested" else None)
    await bot.reconnected(1)
    await fake.wait_until(lambda: fake.open_connections == 1, what="the old connection to close")
    question = fake.user_message("D0ALICE", "still there?")
    await fake.send_event(question)
    await bot.answer_to(question)
    health = await bot.adapter.health()
    assert health.connected and health.reconnects == 1
    assert health.last_event_age_s is not None


async def test_an_abrupt_close_reconnects(start_bot: StartBot) -> None:
    bot = await start_bot(SLACK_PING_INTERVAL_S="0.5")
    fake = bot.fake
    await fake.drop_connection(abrupt=True)
    await bot.reconnected(1)
    question = fake.user_message("D0ALICE", "hello again")
    await fake.send_event(question)
    await bot.answer_to(question)
    assert (await bot.adapter.health()).reconnects >= 1


async def test_a_reset_socket_is_noticed_before_the_next_ping(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default 10 s ping and 5 s watchdog, slack_sdk would notice a TCP reset only at its next ping:
    the watchdog's local check sees the closed socket and reconnects first."""
    caplog.set_level(logging.WARNING, logger="adapters.slack.connection")
    bot = await start_bot(SLACK_PING_INTERVAL_S="10", SLACK_WATCHDOG_INTERVAL_S="5")
    await bot.fake.drop_connection(abrupt=True)
    await bot.reconnected(1, timeout=4.0)
    assert any("the socket was closed" in r.getMessage() for r in caplog.records)
    question = bot.fake.user_message("D0ALICE", "back already?")
    await bot.fake.send_event(question)
    await bot.answer_to(question)


async def test_health_reports_the_connection(start_bot: StartBot) -> None:
    bot = await start_bot(SLACK_PING_INTERVAL_S="0.2")
    await bot.fake.wait_until(lambda: bot.fake._newest() is not None and bot.fake._newest().pongs >= 2, 5, "pongs")
    health = await bot.adapter.health()
    assert health.connected and health.connected_since is not None
    assert health.last_pong_age_s is not None and health.last_pong_age_s < 5
    assert health.last_event_age_s is None  # nothing arrived yet
    status = await bot.app.adapter_health()
    assert status["slack"].connected


async def test_admin_reconnect_opens_a_fresh_connection(bot: Bot) -> None:
    await bot.adapter.reconnect()
    assert bot.fake.connections_opened == 2
    assert (await bot.adapter.health()).reconnects == 1


# start-up ----------------------------------------------------------------------------------------
async def test_a_bad_bot_token_is_a_clear_fatal_error(start_bot: StartBot, fake: FakeSlack) -> None:
    with pytest.raises(SlackStartupError, match=r"SLACK_BOT_TOKEN \(invalid_auth\)"):
        await start_bot(SLACK_BOT_TOKEN="xoxb-revoked")
    await asyncio.sleep(0.3)
    assert [c.method for c in fake.api_calls] == ["auth.test"]  # no retry loop, no connection attempt


async def test_a_bad_app_token_is_a_clear_fatal_error(start_bot: StartBot, fake: FakeSlack) -> None:
    with pytest.raises(SlackStartupError, match=r"SLACK_APP_TOKEN \(invalid_auth\)"):
        await start_bot(SLACK_APP_TOKEN="xapp-1-wrong", SLACK_STARTUP_ATTEMPTS="5")
    await asyncio.sleep(0.3)
    assert [c.method for c in fake.api_calls] == ["auth.test", "apps.connections.open"]


# /peekbot ----------------------------------------------------------------------------------------
async def test_slash_command_help_and_status_for_everyone_admin_commands_for_admins(bot: Bot) -> None:
    fake = bot.fake

    async def command(text: str, user_id: str) -> str:
        count = len(fake.command_responses)
        envelope = await fake.send_command(text, user_id=user_id)
        await fake.wait_for_ack(envelope)
        await fake.wait_until(lambda: len(fake.command_responses) > count, 10, f"the reply to /peekbot {text}")
        [response] = fake.command_responses[count:]
        assert response["response_type"] == "ephemeral"
        return str(response["text"])

    assert "Commands:" in await command("help", ALICE)
    assert "Commands:" in await command("", ALICE)
    status = await command("status", ALICE)
    assert status.startswith("peekbot is") and "Queue:" in status
    assert "slack: connected" not in status  # the short version for non-admins
    refused = await command("pause", ALICE)
    assert "admins only" in refused
    assert not bot.app.paused
    assert "slack: connected" in await command("status", ADMIN)
    assert "Paused" in await command("pause", ADMIN)
    assert bot.app.paused
    assert fake.calls("chat.postMessage") == []  # nothing public
