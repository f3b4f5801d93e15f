"""Slack adapter pieces on their own: message splitting, what gets answered, text cleaning, the reply handle
against the fake Slack's Web API (placeholder, queue position, throttled edits, 429)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit.text import FENCE, split_text
from adapters.slack.events import AnsweredThreads, Identity, Reason, classify, clean_text, earlier_files
from adapters.slack.replies import EphemeralReply, ReplyOptions, SlackThread, ThreadReply
from adapters.slack.settings import SlackSettings
from sandbox.slack_server import FakeSlack

ME = Identity(team_id="T0FAKE", user_id="U0PEEKBOT", bot_id="B0PEEKBOT")


# splitting ---------------------------------------------------------------------------------------
def test_short_text_is_one_message() -> None:
    assert split_text("hello", 100) == ["hello"]


def test_long_text_splits_on_paragraphs_and_keeps_every_word() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 30 for i in range(20)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    pieces = split_text(text, 500)
    assert len(pieces) > 1
    assert all(len(p) <= 500 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)  # cut at paragraph starts, not mid-sentence
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_text_without_breaks_is_cut_hard_but_within_the_limit() -> None:
    pieces = split_text("x" * 1000, 300)
    assert all(len(p) <= 300 for p in pieces)
    assert "".join(pieces) == "x" * 1000


def test_a_code_block_cut_in_two_is_closed_and_reopened() -> None:
    code = "\n".join(f"line {i} = compute({i})" for i in range(80))
    pieces = split_text(f"Here is the code:\n{FENCE}\n{code}\n{FENCE}\nDone.", 400)
    assert len(pieces) > 2
    assert all(len(p) <= 400 for p in pieces)
    assert all(p.count(FENCE) % 2 == 0 for p in pieces)  # every piece renders as balanced markdown


# what gets answered ------------------------------------------------------------------------------
def _event(**fields: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "10.0", "channel_type": "channel"}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "answer", "reason"),
    [
        ({"channel": "D1", "channel_type": "im"}, True, Reason.DIRECT),
        ({"text": "<@U0PEEKBOT> what is this?"}, True, Reason.MENTION),
        ({"type": "app_mention", "text": "<@U0PEEKBOT> hi"}, True, Reason.MENTION),
        ({"subtype": "file_share", "text": "<@U0PEEKBOT> look", "files": [{"id": "F1"}]}, True, Reason.MENTION),
        ({"text": "just chatting"}, False, Reason.NOT_ADDRESSED),
        ({"subtype": "message_changed", "channel": "D1", "channel_type": "im"}, False, Reason.SUBTYPE),
        ({"subtype": "message_deleted", "channel": "D1", "channel_type": "im"}, False, Reason.SUBTYPE),
        ({"subtype": "bot_message", "bot_id": "B9", "channel": "D1", "channel_type": "im"}, False, Reason.SUBTYPE),
        ({"bot_id": "B9", "text": "<@U0PEEKBOT> hi"}, False, Reason.FROM_BOT),
        ({"user": "U0PEEKBOT", "channel": "D1", "channel_type": "im"}, False, Reason.FROM_BOT),
        ({"type": "reaction_added"}, False, Reason.NOT_A_MESSAGE),
    ],
)
def test_classify(fields: dict[str, Any], answer: bool, reason: Reason) -> None:
    verdict = classify(_event(**fields), ME, AnsweredThreads())
    assert (verdict.answer, verdict.reason) == (answer, reason)


def test_follow_up_only_in_answered_threads_and_not_when_talking_to_someone_else() -> None:
    threads = AnsweredThreads()
    follow_up = _event(ts="12.0", thread_ts="10.0", text="and the second line?")
    assert not classify(follow_up, ME, threads).answer
    threads.add("C1", "10.0")
    assert classify(follow_up, ME, threads).reason is Reason.THREAD_FOLLOW_UP
    aside = _event(ts="13.0", thread_ts="10.0", text="<@U2> can you check this?")
    assert not classify(aside, ME, threads).answer


def test_answered_threads_are_bounded() -> None:
    threads = AnsweredThreads(max_threads=3)
    for i in range(5):
        threads.add("C1", f"{i}.0")
    assert len(threads) == 3
    assert not threads.contains("C1", "0.0") and threads.contains("C1", "4.0")


def test_clean_text_removes_the_bot_mention_and_decodes_slack_markup() -> None:
    text = "<@U0PEEKBOT> why does <https://x.io/a|this page> fail &amp; what about <#C1|ops> or <@U2>? &lt;3"
    assert clean_text(text, "U0PEEKBOT") == "why does this page (https://x.io/a) fail & what about #ops or @U2? <3"


def test_earlier_files_are_the_thread_images_and_pdfs_before_the_question_newest_first() -> None:
    replies = [
        {"ts": "1.0", "files": [{"id": "F1", "mimetype": "image/png"}]},
        {"ts": "2.0", "files": [{"id": "F3", "mimetype": "application/pdf"}]},
        {"ts": "3.0", "files": [{"id": "F4", "mode": "tombstone"}]},
        {"ts": "4.0", "files": [{"id": "F5", "mimetype": "image/jpeg"}]},  # the question itself
    ]
    assert [f["id"] for f in earlier_files(replies, "4.0")] == ["F3", "F1"]


# the reply handle against the fake Web API -------------------------------------------------------
@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


async def _reply(fake: FakeSlack, web: AsyncWebClient, tasks: set[asyncio.Task[None]], **options: Any) -> ThreadReply:
    question = fake.user_message("C1", "<@U0PEEKBOT> what is this?")

    def spawn(coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        return task

    thread = SlackThread(
        web,
        channel="C1",
        thread_ts=question["ts"],
        question_ts=question["ts"],
        direct=False,
        options=ReplyOptions(**options),
    )
    return ThreadReply(thread, spawn=spawn)


async def test_placeholder_then_queue_position_then_answer_in_the_thread(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    tasks: set[asyncio.Task[None]] = set()
    reply = await _reply(fake, web, tasks, update_interval_s=0.05)
    await reply.start_progress(None)
    [placeholder] = fake.bot_messages("C1", reply.thread_ts)
    assert placeholder["text"] == "Looking at it…"
    assert ("C1", reply.thread_ts, "eyes") in fake.reactions
    await reply.start_progress(3)
    assert placeholder["text"] == "Queued — 3 questions ahead of yours."
    await reply.start_progress(1)
    assert placeholder["text"] == "Queued — 1 question ahead of yours."
    await reply.finish("It is a login form.")
    assert [m["text"] for m in fake.bot_messages("C1", reply.thread_ts)] == ["It is a login form."]
    assert ("C1", reply.thread_ts, "eyes") not in fake.reactions


async def test_updates_are_throttled_and_coalesced_and_never_block(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    tasks: set[asyncio.Task[None]] = set()
    interval = 0.25
    reply = await _reply(fake, web, tasks, update_interval_s=interval)
    await reply.start_progress(None)
    text = ""
    for i in range(40):
        text += f"word{i} "
        await asyncio.wait_for(reply.update(text), timeout=0.05)  # returns at once
        await asyncio.sleep(0.02)
    await reply.finish(text + "end.")
    edits = fake.calls("chat.update")
    assert 1 <= len(edits) < 10  # 40 updates over ~1 s became a handful of edits
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= interval * 0.9 for gap in gaps)
    assert edits[-1].args["text"] == text.strip() + " end."
    assert fake.bot_messages("C1", reply.thread_ts)[0]["text"] == text.strip() + " end."


async def test_rate_limited_edits_wait_for_retry_after_and_the_final_text_lands(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    tasks: set[asyncio.Task[None]] = set()
    reply = await _reply(fake, web, tasks, update_interval_s=0.05)
    await reply.start_progress(None)
    fake.rate_limit("chat.update", times=2, retry_after=1)
    await reply.update("partial answer")
    await reply.finish("the complete answer")
    edits = fake.calls("chat.update")
    limited = [c for c in edits if c.status == 429]
    assert len(limited) == 2
    for before, after in itertools.pairwise(edits):
        if before.status == 429:
            assert after.at - before.at >= 0.95  # Retry-After: 1 was honoured
    assert edits[-1].ok and edits[-1].args["text"] == "the complete answer"
    assert fake.bot_messages("C1", reply.thread_ts)[0]["text"] == "the complete answer"


async def test_a_long_final_answer_becomes_several_messages_in_the_thread(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    tasks: set[asyncio.Task[None]] = set()
    reply = await _reply(fake, web, tasks, update_interval_s=0.05)
    await reply.start_progress(None)
    answer = "\n\n".join(f"Step {i}: " + "do the thing carefully " * 20 for i in range(22))  # 3 messages, no file
    await reply.update(answer)  # a streamed view longer than the limit is cut, not rejected
    await reply.finish(answer)
    texts = [m["text"] for m in fake.bot_messages("C1", reply.thread_ts)]
    assert len(texts) >= 3
    assert all(len(t) <= 3900 for t in texts)
    assert " ".join(" ".join(texts).split()) == " ".join(answer.split())
    assert not [c for c in fake.api_calls if c.error == "msg_too_long"]


async def test_fail_replaces_the_placeholder_with_the_reason(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    tasks: set[asyncio.Task[None]] = set()
    reply = await _reply(fake, web, tasks)
    await reply.start_progress(None)
    await reply.fail("The file is too large.")
    [message] = fake.bot_messages("C1", reply.thread_ts)
    assert message["text"] == ":warning: The file is too large."


async def test_a_command_reply_falls_back_to_chat_post_ephemeral_without_response_url(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    async with aiohttp.ClientSession() as session:
        reply = EphemeralReply(
            web, session, channel="C1", user_id="U0ALICE", response_url=None, options=ReplyOptions()
        )
        await reply.update("ignored while streaming")
        await reply.finish("Only you can see this.")
    [call] = fake.calls("chat.postEphemeral")
    assert call.args == {"channel": "C1", "user": "U0ALICE", "text": "Only you can see this."}
    assert fake.command_responses == []


# the app manifest ---------------------------------------------------------------------------------
def test_the_manifest_declares_socket_mode_the_command_the_events_and_only_the_scopes_used() -> None:
    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy" / "slack"
    manifest = yaml.safe_load((deploy / "manifest.yml").read_text())
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [SlackSettings.model_fields["command"].default]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention", "message.channels", "message.groups", "message.im", "message.mpim", "file_deleted",
        "app_home_opened", "assistant_thread_started",
    }
    assert settings["interactivity"]["is_enabled"] is True  # buttons and the shortcut, over Socket Mode
    [shortcut] = manifest["features"]["shortcuts"]
    callback_id = SlackSettings.model_fields["shortcut_callback_id"].default
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", callback_id)
    assert "agent_view" in manifest["features"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {
        "app_mentions:read", "channels:history", "groups:history", "im:history", "mpim:history",
        "chat:write", "files:read", "files:write", "reactions:write", "commands", "metadata.message:read",
        "assistant:write", "users:read",
    }
    assert "user" not in manifest["oauth_config"]["scopes"]
    readme = (deploy / "README.md").read_text()
    for scope in scopes | {"connections:write"}:
        assert f"`{scope}`" in readme, f"deploy/slack/README.md does not explain {scope}"
    for scope in scopes:
        assert f"| `{scope}` |" in readme, f"the scope table lacks {scope}"


# downloads ---------------------------------------------------------------------------------------
async def test_fetch_checks_size_follows_file_ids_and_recognises_the_sign_in_page(fake: FakeSlack) -> None:
    from adapters.slack.events import file_ref
    from adapters.slack.files import FileFetcher
    from bot.errors import FileAccessDenied, FileTooLarge

    web = AsyncWebClient(token=fake.BOT_TOKEN, base_url=fake.api_url)
    async with aiohttp.ClientSession() as session:
        fetcher = FileFetcher(web, session, bot_token=fake.BOT_TOKEN, max_bytes=1000, timeout_s=10)
        small = fake.add_file("a.png", b"\x89PNG" + b"1" * 100, "image/png")
        assert await fetcher.fetch(file_ref(small)) == b"\x89PNG" + b"1" * 100

        slim = fake.add_file("b.png", b"\x89PNG" + b"2" * 50, "image/png", slim=True)
        completed = await fetcher.complete(slim)
        assert completed.name == "b.png" and completed.mime_type == "image/png" and completed.source["url"]
        assert await fetcher.fetch(file_ref(slim)) == b"\x89PNG" + b"2" * 50  # files.info, then download

        liar = fake.add_file("c.png", b"3" * 5000, "image/png", size=10)  # reports 10 bytes, sends 5000
        with pytest.raises(FileTooLarge) as too_big:
            await fetcher.fetch(file_ref(liar))
        assert "c.png" in too_big.value.user_message and "the limit is 1000 bytes" in too_big.value.user_message

        locked = fake.add_file("d.png", b"4" * 10, "image/png", denied=True)
        with pytest.raises(FileAccessDenied) as denied:
            await fetcher.fetch(file_ref(locked))
        assert "/invite @peekbot" in denied.value.user_message and "files:read" in denied.value.user_message

        with pytest.raises(FileAccessDenied) as gone:
            await fetcher.fetch(file_ref({"id": "F404", "file_access": "check_file_info"}))
        assert "no longer exists" in gone.value.user_message
    assert [c.args["file"] for c in fake.calls("files.info")] == [slim["id"], slim["id"], "F404"]
