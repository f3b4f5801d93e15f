"""Replies that survive a restart, and acks that wait for the journal.

A reply handle's ``resume_state()`` is handed to ``reply_for`` of a NEW adapter instance (the next process):
the person sees one placeholder turn into one answer. Events whose handler raises (the journal failed) are
not acked, so the platform delivers them again, and the connection stays up.
Real slack-bolt/slack_sdk and our Feishu connection run against the loopback fakes; no model is involved.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from adapters.console import ConsoleAdapter
from adapters.feishu.replies import RESUME_SEQUENCE_MARGIN, FeishuReply, resume_sequence
from adapters.feishu.rest import FeishuRest
from adapters.feishu.settings import FeishuSettings
from bot.settings import Settings
from bot.types import (
    ChatType,
    ConversationKey,
    IncomingMessage,
    ResumableReply,
    TextSegment,
    User,
)
from sandbox.slack_server import FakeSlack
from tests.support.fake_feishu import FakeFeishu, feishu_environment
from tests.support.resume_support import Core, StartFeishu, StartSlack, journaled, next_process_reply, showing_progress
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


def next_process(message: IncomingMessage, state: dict[str, str]) -> tuple[IncomingMessage, dict[str, str]]:
    """What the journal hands the next process: the message and the reply state, through their stored forms."""
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in state.items())
    return journaled(message), dict(state)


# Slack -------------------------------------------------------------------------------------------
async def slack_question(
    slack: FakeSlack, core: Core, text: str = "what is this?"
) -> tuple[dict[str, Any], IncomingMessage, Any]:
    question = slack.user_message("D0ALICE", text)
    envelope = await slack.send_event(question)
    message, reply = await core.wait_taken()
    await slack.wait_for_ack(envelope)
    return question, message, reply


@pytest.mark.usefixtures("slack_edits")  # the chat.update path
async def test_slack_placeholder_is_finished_by_the_next_process(slack: FakeSlack, start_slack: StartSlack) -> None:
    first = await showing_progress(start_slack, lambda core: slack_question(slack, core))
    question, message, reply = first.question, first.message, first.reply
    assert isinstance(reply, ResumableReply)
    state = reply.resume_state()
    [placeholder] = slack.bot_messages("D0ALICE", question["ts"])
    assert state["placeholder_ts"] == placeholder["ts"] and placeholder["text"] == "Looking at it…"
    await first.adapter.stop()  # the process ends before answering

    resumed = await next_process_reply(start_slack, message, state)
    await resumed.update("The dialog says")
    await resumed.finish("The dialog says the disk is full.")

    [answer] = slack.bot_messages("D0ALICE", question["ts"])  # one message: the placeholder became the answer
    assert answer["ts"] == placeholder["ts"] and answer["text"] == "The dialog says the disk is full."
    assert len(slack.calls("chat.postMessage")) == 1
    assert {c.args["ts"] for c in slack.calls("chat.update")} == {placeholder["ts"]}
    assert not slack.reactions  # the first process's :eyes: was removed by the second


@pytest.mark.usefixtures("slack_edits")  # the chat.update path
async def test_slack_vanished_placeholder_falls_back_to_a_new_message(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    first = await showing_progress(start_slack, lambda core: slack_question(slack, core))
    question, message, reply = first.question, first.message, first.reply
    state = reply.resume_state()
    await first.adapter.stop()
    slack.messages["D0ALICE"] = [m for m in slack.messages["D0ALICE"] if m["ts"] != state["placeholder_ts"]]

    resumed = await next_process_reply(start_slack, message, state)
    await resumed.update("Half an answer")
    await resumed.finish("A whole answer.")

    [answer] = slack.bot_messages("D0ALICE", question["ts"])
    assert answer["text"] == "A whole answer." and answer["ts"] != state["placeholder_ts"]
    assert answer.get("thread_ts") == question["ts"]
    assert any(c.error == "message_not_found" for c in slack.calls("chat.update"))


async def test_slack_reply_for_without_state_replies_in_the_questions_thread(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    core = Core()
    adapter = await start_slack(core)
    root = slack.user_message("C0GENERAL", f"<@{slack.BOT_USER_ID}> look at this")
    question = slack.user_message("C0GENERAL", f"<@{slack.BOT_USER_ID}> and now?", thread_ts=root["ts"])
    await slack.send_event(question)
    message, _ = await core.wait_taken()

    resumed = adapter.reply_for(*next_process(message, {}))  # the process died before its placeholder
    await resumed.start_progress(None)
    await resumed.finish("Here you go.")
    [answer] = slack.bot_messages("C0GENERAL", root["ts"])
    assert answer["text"] == "Here you go."
    assert [c.args["timestamp"] for c in slack.calls("reactions.add")] == [question["ts"]]
    assert not slack.reactions


async def test_slack_acks_only_after_the_core_took_the_event(slack: FakeSlack, start_slack: StartSlack) -> None:
    core = Core(delay_s=0.3, duplicates={"seen it"})
    await start_slack(core)
    question = slack.user_message("D0ALICE", "slow journal")
    envelope = await slack.send_event(question)
    delivery = await slack.wait_for_ack(envelope)
    assert delivery.acked_at is not None and delivery.acked_at >= core.returned_at[0]

    duplicate = await slack.send_event(slack.user_message("D0ALICE", "seen it"))  # the core says: duplicate
    assert (await slack.wait_for_ack(duplicate)).acked_at is not None


async def test_slack_event_the_core_failed_to_take_stays_unacked_and_comes_again(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    core = Core(failures=1)
    adapter = await start_slack(core)
    question = slack.user_message("D0ALICE", "is the journal back?")
    first = await slack.send_event(question, event_id="Ev0RETRY")
    message, _ = await core.wait_taken(timeout=10.0)  # taken from Slack's redelivery
    assert core.calls == 2 and message.text == "is the journal back?"

    assert slack.deliveries[first].acked_at is None  # the failed copy was never acked
    redelivered = [d for d in slack.deliveries.values() if d.envelope["payload"]["event_id"] == "Ev0RETRY"]
    assert len(redelivered) == 2 and redelivered[1].envelope["retry_attempt"] == 1
    await slack.wait_for_ack(redelivered[1].envelope_id)
    health = await adapter.health()
    assert health.connected and health.reconnects == 0 and slack.connections_opened == 1


async def test_slack_copy_arriving_while_the_first_is_journaled_is_acked_after_it(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    core = Core(delay_s=0.4)
    await start_slack(core)
    question = slack.user_message("C0GENERAL", f"<@{slack.BOT_USER_ID}> two events for one post")
    message_envelope, mention_envelope = await asyncio.gather(
        slack.send_event(question), slack.send_event(slack.app_mention(question))
    )
    acks = [await slack.wait_for_ack(e) for e in (message_envelope, mention_envelope)]
    assert len(core.taken) == 1 and core.calls == 1
    assert all(a.acked_at is not None and a.acked_at >= core.returned_at[0] for a in acks)


# Feishu ------------------------------------------------------------------------------------------
async def feishu_question(feishu: FakeFeishu, core: Core, text: str = "what is this?") -> tuple[str, Any, Any]:
    event = feishu.message_event(msg_type="text", content={"text": text})
    transport_id = await feishu.push_event(event)
    message, reply = await core.wait_taken()
    await eventually(lambda: feishu.acks_for(transport_id), "the ack")
    return event["event"]["message"]["message_id"], message, reply


async def test_feishu_card_is_finished_by_the_next_process(feishu: FakeFeishu, start_feishu: StartFeishu) -> None:
    first = await showing_progress(start_feishu, lambda core: feishu_question(feishu, core))
    question_id, message, reply = first.question, first.message, first.reply
    assert isinstance(reply, ResumableReply)
    state = reply.resume_state()  # journaled now; the first process streams on before it dies
    [card_message] = feishu.replies_to(question_id)
    card = feishu.card_of(card_message)
    assert card is not None and state["card_id"] == card.card_id
    assert state["card_message_id"] == card_message.message_id and state["typing"] == "1"
    for words in ("The", "The answer", "The answer is"):
        await reply.update(words)
        await asyncio.sleep(0.08)
    await eventually(lambda: feishu.visible_text(card_message) == "The answer is", "the streamed text")
    assert card.sequence > int(state["sequence"])  # the journaled sequence is already out of date
    await first.adapter.stop()

    resumed = await next_process_reply(start_feishu, message, state)
    await resumed.update("The answer is: restart")
    await resumed.finish("The answer is: restart the service.")

    assert feishu.replies_to(question_id) == [card_message]  # no second card
    assert feishu.visible_text(card_message) == "The answer is: restart the service."
    assert not card.streaming  # closed by the second process
    refused = [c for c in feishu.calls_to("PUT", rf"/cards/{card.card_id}/") if c.status >= 400]
    assert not refused  # every sequence number the second process used was accepted
    assert not feishu.reactions.get(question_id)  # the Typing reaction of the first process is gone


async def test_feishu_vanished_card_falls_back_to_a_fresh_reply(feishu: FakeFeishu, start_feishu: StartFeishu) -> None:
    first = await showing_progress(start_feishu, lambda core: feishu_question(feishu, core))
    question_id, message, reply = first.question, first.message, first.reply
    state = reply.resume_state()
    await first.adapter.stop()
    del feishu.messages[state["card_message_id"]]  # someone deleted the card message meanwhile

    resumed = await next_process_reply(start_feishu, message, state)
    await resumed.finish("Still answered.")
    [fresh] = feishu.replies_to(question_id)
    assert fresh.message_id != state["card_message_id"]
    assert feishu.visible_text(fresh) == "Still answered."


async def test_feishu_resumed_card_whose_streaming_ended_is_still_finished(
    feishu: FakeFeishu, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in feishu_environment(feishu).items():
        monkeypatch.setenv(key, value)
    settings = Settings().section(FeishuSettings)
    question = feishu.add_message(chat_id="oc_dm", msg_type="text", content={"text": "what is this?"})
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        return task

    async with FeishuRest(settings) as rest:
        reply = FeishuReply(rest, question.message_id, settings=settings, in_thread=False, spawn=spawn)
        await reply.start_progress(None)
        state = reply.resume_state()
        [card_message] = feishu.replies_to(question.message_id)
        card = feishu.card_of(card_message)
        assert card is not None
        card.streaming = False  # CardKit ended streaming while no process was running

        resumed = FeishuReply.resumed(rest, question.message_id, state, settings=settings, in_thread=False, spawn=spawn)
        await resumed.finish("Done after all.")
    assert feishu.replies_to(question.message_id) == [card_message]
    assert feishu.visible_text(card_message) == "Done after all." and not card.streaming
    for task in tasks:
        task.cancel()


def test_resume_sequence_is_above_anything_the_first_process_can_have_sent() -> None:
    created = 1_000.0
    assert resume_sequence(7, created, now=created + 1) == 10 + RESUME_SEQUENCE_MARGIN
    # Ten minutes of pushes at the fastest allowed rate stay below where the next process starts.
    assert resume_sequence(2, created, now=created + 600) > 600 * 10
    assert resume_sequence(50_000, None) == 50_000 + RESUME_SEQUENCE_MARGIN


async def test_feishu_event_the_core_failed_to_take_is_sent_again(
    feishu: FakeFeishu, start_feishu: StartFeishu
) -> None:
    core = Core(failures=1)
    adapter = await start_feishu(core)
    event = feishu.message_event(msg_type="text", content={"text": "is the journal back?"})
    transport_id = await feishu.push_event(event)
    message, _ = await core.wait_taken()
    await eventually(lambda: any(a.code == 200 for a in feishu.acks_for(transport_id)), "the ack of the second copy")

    assert [a.code for a in feishu.acks_for(transport_id)] == [500, 200]  # never 200 for the failed copy
    assert len(feishu.sends_for(transport_id)) == 2 and core.calls == 2
    assert message.message_id == event["event"]["message"]["message_id"]
    health = await adapter.health()
    assert health.connected and health.reconnects == 0 and feishu.connections_opened == 1


# console -----------------------------------------------------------------------------------------
async def test_console_reply_for_writes_the_answer_to_the_terminal() -> None:
    out, status = io.StringIO(), io.StringIO()
    adapter = ConsoleAdapter(Settings(), out=out, status=status)
    message = IncomingMessage(
        event_id="console-1",
        message_id="t1-1",
        conversation=ConversationKey("console", "local", "terminal", thread="t1"),
        user=User("console", "local"),
        chat_type=ChatType.DIRECT,
        segments=(TextSegment("what is this?"),),
    )
    first = adapter.reply_for(message, {})
    assert first.resume_state() == {}
    resumed = adapter.reply_for(*next_process(message, first.resume_state()))
    await resumed.start_progress(None)
    await resumed.update("It is")
    await resumed.finish("It is a cat.")
    assert out.getvalue() == "It is a cat.\n" and resumed.final_text == "It is a cat."
