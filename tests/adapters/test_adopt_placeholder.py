"""A process killed after posting a placeholder but before journaling it: the next process adopts that placeholder.

The first adapter posts its placeholder (``start_progress``) and "dies" before anything is journaled, so the next
adapter gets ``reply_for(message, {})``. The person must still see one placeholder turn into one answer, never a
second placeholder beside an orphan stuck at "Looking at it…". The bot's answers to other questions in the same
thread or chat are never taken over. Real slack-bolt/slack_sdk and our Feishu client run against the loopback fakes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.kit.text import LOOKING
from adapters.slack.replies import REPLY_EVENT_TYPE, find_own_placeholder
from bot.types import IncomingMessage, ReplyHandle
from sandbox.slack_server import FakeSlack
from tests.support.fake_feishu import FakeFeishu, StoredMessage
from tests.support.resume_support import Core, StartFeishu, StartSlack, journaled, next_process_reply, showing_progress

pytestmark = pytest.mark.timeout(60)


async def ask_slack(
    slack: FakeSlack, core: Core, text: str, *, channel: str = "C0GENERAL", thread_ts: str | None = None
) -> tuple[dict[str, Any], IncomingMessage, ReplyHandle]:
    question = slack.user_message(channel, f"<@{slack.BOT_USER_ID}> {text}", thread_ts=thread_ts)
    await slack.send_event(question)
    message, reply = await core.wait_taken(len(core.taken) + 1)
    return question, message, reply


@pytest.mark.usefixtures("slack_edits")  # the chat.update path
async def test_slack_survivor_finishes_the_placeholder_a_dead_process_had_not_journaled(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    first = await showing_progress(start_slack, lambda core: ask_slack(slack, core, "why does the build fail?"))
    question = first.question  # the placeholder is posted; the process dies before journaling where
    [placeholder] = slack.bot_messages("C0GENERAL", question["ts"])
    assert placeholder["metadata"] == {
        "event_type": REPLY_EVENT_TYPE,
        "event_payload": {"channel": "C0GENERAL", "question_ts": question["ts"]},
    }
    await first.adapter.stop()

    resumed = await next_process_reply(start_slack, first.message)
    await resumed.update("The build fails")
    await resumed.finish("The build fails because the disk is full.")

    [answer] = slack.bot_messages("C0GENERAL", question["ts"])  # no second placeholder
    assert answer["ts"] == placeholder["ts"] and answer["text"] == "The build fails because the disk is full."
    assert len(slack.calls("chat.postMessage")) == 1
    assert {c.args["ts"] for c in slack.calls("chat.update")} == {placeholder["ts"]}
    assert not slack.reactions  # the dead process's :eyes: came off too
    assert answer["metadata"]["event_payload"]["question_ts"] == question["ts"]  # edits keep the metadata


@pytest.mark.usefixtures("slack_edits")  # the chat.update path
async def test_slack_other_questions_answers_and_placeholders_in_the_thread_are_never_adopted(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    first = await showing_progress(start_slack, lambda core: ask_slack(slack, core, "what is on this screen?"))
    adapter, core, root = first.adapter, first.core, first.question
    await first.reply.finish("A login form.")
    _, _, busy_reply = await ask_slack(slack, core, "and this one?", thread_ts=root["ts"])
    await busy_reply.start_progress(None)  # still being answered (by a live process)
    question, message, _ = await ask_slack(slack, core, "and why is it red?", thread_ts=root["ts"])
    # The process that took the last question died before posting anything.

    resumed = adapter.reply_for(journaled(message), {})
    await resumed.start_progress(None)
    await resumed.finish("Red marks the field with the wrong password.")

    texts = [m["text"] for m in slack.bot_messages("C0GENERAL", root["ts"])]
    assert texts == ["A login form.", LOOKING, "Red marks the field with the wrong password."]
    newest = slack.bot_messages("C0GENERAL", root["ts"])[-1]
    assert newest["metadata"]["event_payload"]["question_ts"] == question["ts"]
    assert [c.args.get("include_all_metadata") for c in slack.calls("conversations.replies")][-1] in ("1", "true")


@pytest.mark.usefixtures("slack_edits")  # the chat.update path
async def test_slack_untagged_placeholder_right_after_the_question_is_adopted(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    """Slack may withhold metadata, and a placeholder from an older version has none: match it by place and text."""
    first = await showing_progress(start_slack, lambda core: ask_slack(slack, core, "is this error serious?"))
    [placeholder] = slack.bot_messages("C0GENERAL", first.question["ts"])
    del placeholder["metadata"]
    await first.adapter.stop()

    resumed = await next_process_reply(start_slack, first.message)
    await resumed.finish("Not serious: it is a warning.")
    [answer] = slack.bot_messages("C0GENERAL", first.question["ts"])
    assert answer["ts"] == placeholder["ts"] and answer["text"] == "Not serious: it is a warning."


def test_slack_placeholder_matching_rules() -> None:
    mine = {"bot_id": "B1", "user": "U0BOT"}

    def tagged(ts: str, question_ts: str, text: str = LOOKING) -> dict[str, Any]:
        payload = {"channel": "C1", "question_ts": question_ts}
        return {**mine, "ts": ts, "text": text, "metadata": {"event_type": REPLY_EVENT_TYPE, "event_payload": payload}}

    def find(*messages: dict[str, Any], question_ts: str = "100.000002") -> Any:
        return find_own_placeholder(messages, channel="C1", question_ts=question_ts, bot_user_id="U0BOT", bot_id="B1")

    question = {"user": "U0ALICE", "ts": "100.000002", "text": "why?"}
    other = tagged("100.000003", "100.000001")
    ours = tagged("100.000005", "100.000002", text="Queued — 2 questions ahead of yours.")
    assert find(question, other, {"user": "U0BOB", "ts": "100.000004", "text": "hm"}, ours) is ours
    assert find(question, other) is None  # another question's placeholder is not ours, even right after
    untagged = {**mine, "ts": "100.000003", "text": LOOKING}
    assert find(question, untagged) is untagged
    assert find(question, {"user": "U0BOB", "ts": "100.000003", "text": "me too"}, untagged | {"ts": "100.000004"}) \
        is None  # someone spoke in between: not known to be ours
    assert find(question, {**untagged, "text": "A finished answer."}) is None
    assert find({**untagged, "ts": "100.000001"}, question) is None  # older than the question
    assert find(question, {**untagged, "bot_id": "B2", "user": "U0OTHERBOT"}) is None  # another app's message
    assert find(question, tagged("100.000003", "100.000002") | {"metadata": {
        "event_type": REPLY_EVENT_TYPE, "event_payload": {"channel": "C2", "question_ts": "100.000002"}}}) is None


# Feishu ------------------------------------------------------------------------------------------
async def ask_feishu(feishu: FakeFeishu, core: Core, text: str) -> tuple[str, IncomingMessage, ReplyHandle]:
    event = feishu.message_event(msg_type="text", content={"text": text})
    await feishu.push_event(event)
    message, reply = await core.wait_taken(len(core.taken) + 1)
    return event["event"]["message"]["message_id"], message, reply


def live_replies(feishu: FakeFeishu, question_id: str) -> list[StoredMessage]:
    return [m for m in feishu.replies_to(question_id) if not m.deleted]


async def test_feishu_survivor_streams_into_the_card_a_dead_process_had_not_journaled(
    feishu: FakeFeishu, start_feishu: StartFeishu
) -> None:
    answered = await showing_progress(start_feishu, lambda core: ask_feishu(feishu, core, "what is this?"))
    await answered.reply.finish("A chart.")
    question_id, message, reply = await ask_feishu(feishu, answered.core, "and what does it show?")
    await reply.start_progress(None)  # the card is out; the process dies before journaling it
    [card_message] = feishu.replies_to(question_id)
    card = feishu.card_of(card_message)
    assert card is not None
    await answered.adapter.stop()

    resumed = await next_process_reply(start_feishu, message)
    await resumed.update("It shows")
    await resumed.finish("It shows sales by month.")

    assert feishu.replies_to(question_id) == [card_message]  # one card, no second one
    assert feishu.visible_text(card_message) == "It shows sales by month." and not card.streaming
    refused = [c for c in feishu.calls_to("PUT", rf"/cards/{card.card_id}/") if c.status >= 400]
    assert not refused  # the adopted card took every sequence number
    assert feishu.reply_texts(answered.question) == ["A chart."]  # the other question's answer is untouched


async def test_feishu_recalled_earlier_card_gets_a_fresh_reply(feishu: FakeFeishu, start_feishu: StartFeishu) -> None:
    first = await showing_progress(start_feishu, lambda core: ask_feishu(feishu, core, "what is this?"))
    [earlier] = feishu.replies_to(first.question)
    await first.adapter.stop()
    feishu.recall(earlier.message_id)

    resumed = await next_process_reply(start_feishu, first.message)
    await resumed.finish("Still answered.")

    [fresh] = live_replies(feishu, first.question)
    assert fresh.message_id != earlier.message_id
    assert feishu.visible_text(fresh) == "Still answered."


async def test_feishu_question_with_no_earlier_card_gets_exactly_one(
    feishu: FakeFeishu, start_feishu: StartFeishu
) -> None:
    first_core = Core()
    first = await start_feishu(first_core)
    question_id, message, _ = await ask_feishu(feishu, first_core, "what is this?")
    await first.stop()  # died before sending anything

    resumed = await next_process_reply(start_feishu, message)
    await resumed.update("A cat")
    await resumed.finish("A cat on a keyboard.")

    [only] = feishu.replies_to(question_id)
    assert feishu.visible_text(only) == "A cat on a keyboard."
    card = feishu.card_of(only)
    assert card is not None and not card.streaming


async def test_feishu_survivor_adopts_an_editable_card(
    feishu: FakeFeishu, start_feishu: StartFeishu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEISHU_STREAMING_CARDS", "false")  # read when the adapter starts
    first = await showing_progress(start_feishu, lambda core: ask_feishu(feishu, core, "what is this?"))
    [card_message] = feishu.replies_to(first.question)
    assert json.loads(card_message.content).get("type") != "card"  # a plain card, edited in place
    await first.adapter.stop()

    resumed = await next_process_reply(start_feishu, first.message)
    await resumed.finish("A router's status page.")
    assert feishu.replies_to(first.question) == [card_message]
    assert feishu.visible_text(card_message) == "A router's status page."
