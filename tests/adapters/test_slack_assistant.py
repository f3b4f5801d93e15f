"""Slack's AI-app surfaces through the loopback fake with the real slack-bolt/slack_sdk: native streaming (and the
chat.update fallback), the status line, Stop and rating buttons, the message shortcut and suggested prompts."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import SlackAdapter
from adapters.slack.buttons import RATING_ACTION, STOP_ACTION, decode
from bot.ratings import THANKS_HELPFUL
from bot.settings import Settings
from bot.types import AnswerAction, AnswerActionKind, ChatType, IncomingMessage
from sandbox.slack_server import FakeSlack, slack_environment
from tests.adapters.contract import application
from tests.support.apps import set_environment
from tests.support.engines import FakeEngine
from tests.support.resume_support import Core, StartSlack, journaled
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"


@dataclass
class Presses:
    """Stands in for the core's answer action handler: keeps every press, answers with a sentence."""

    seen: list[AnswerAction] = field(default_factory=list)

    async def __call__(self, action: AnswerAction) -> str:
        self.seen.append(action)
        return f"Noted: {action.kind.value}."


@dataclass
class Started:
    adapter: SlackAdapter
    core: Core
    presses: Presses


async def start(start_slack: StartSlack) -> Started:
    core, presses = Core(), Presses()
    adapter = await start_slack(core, configure=lambda a: a.use_answer_action_handler(presses))  # type: ignore[call-arg]
    return Started(adapter, core, presses)


async def ask(slack: FakeSlack, core: Core, event: dict[str, Any]) -> tuple[IncomingMessage, Any]:
    await slack.send_event(event)
    message, reply = await core.wait_taken(len(core.taken) + 1)
    await reply.start_progress(None)
    return message, reply


async def ask_in_dm(slack: FakeSlack, core: Core, text: str) -> tuple[dict[str, Any], IncomingMessage, Any]:
    """A question in Alice's DM, taken by ``core``, its progress shown: (event, the core's message, its reply)."""
    question = slack.user_message("D0ALICE", text)
    message, reply = await ask(slack, core, question)
    return question, message, reply


async def answered_in_dm(slack: FakeSlack, bot: Started) -> tuple[IncomingMessage, dict[str, Any]]:
    """A DM question answered "A whole answer.": the core's message and the answer as the fake holds it."""
    question, message, reply = await ask_in_dm(slack, bot.core, "what is this?")
    await reply.finish("A whole answer.")
    [answer] = slack.bot_messages("D0ALICE", question["ts"])
    return message, answer


def methods(slack: FakeSlack) -> list[str]:
    return [c.method for c in slack.api_calls if c.method.startswith("chat.")]


def button_values(message: dict[str, Any], action_id: str) -> list[str]:
    """The values of the buttons with ``action_id`` in a message's blocks (feedback buttons: 👍 then 👎)."""
    values = []
    for block in message.get("blocks", []):
        for element in block.get("elements", []):
            if element.get("action_id") != action_id:
                continue
            if element.get("type") == "feedback_buttons":
                values += [element["positive_button"]["value"], element["negative_button"]["value"]]
            else:
                values.append(element["value"])
    return values


# native streaming -------------------------------------------------------------------------------
async def test_a_dm_answer_is_streamed_natively_and_finished_with_ratings(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    bot = await start(start_slack)
    question, message, reply = await ask_in_dm(slack, bot.core, "what does this dialog say?")
    await reply.update("The dialog")
    await eventually(lambda: [m["text"] for m in slack.bot_messages("D0ALICE", question["ts"])] == ["The dialog"])
    await reply.update("The dialog says")
    await reply.finish("The dialog says the disk is full.")

    [answer] = slack.bot_messages("D0ALICE", question["ts"])
    assert answer["text"] == "The dialog says the disk is full." and not answer["streaming"]
    assert methods(slack) == ["chat.startStream", "chat.appendStream", "chat.appendStream", "chat.stopStream"]
    start_call = slack.calls("chat.startStream")[0]
    assert start_call.args["thread_ts"] == question["ts"] and "recipient_user_id" not in start_call.args
    helpful, not_helpful = button_values(answer, RATING_ACTION)
    assert decode(helpful) == (AnswerActionKind.HELPFUL, message.message_id, "")
    assert decode(not_helpful) == (AnswerActionKind.NOT_HELPFUL, message.message_id, "")
    assert not slack.reactions  # the progress reaction went with the answer


async def test_a_channel_thread_answer_is_streamed_to_the_asker(slack: FakeSlack, start_slack: StartSlack) -> None:
    slack.assistant_status_error = None
    bot = await start(start_slack)
    root = slack.user_message("C0GENERAL", f"{MENTION} look at this")
    question = slack.user_message("C0GENERAL", f"{MENTION} and this?", thread_ts=root["ts"])
    _, reply = await ask(slack, bot.core, question)
    await reply.update("It is a login form")
    await reply.finish("It is a login form with an expired certificate.")

    [start_call] = slack.calls("chat.startStream")
    assert start_call.ok and start_call.args["thread_ts"] == root["ts"]
    assert (start_call.args["recipient_user_id"], start_call.args["recipient_team_id"]) == ("U0ALICE", slack.TEAM_ID)
    [answer] = slack.bot_messages("C0GENERAL", root["ts"])
    assert answer["text"] == "It is a login form with an expired certificate." and not answer["streaming"]
    assert not slack.calls("chat.update") and not slack.calls("chat.postMessage")
    status = {"channel_id": "C0GENERAL", "thread_ts": root["ts"], "status": "is looking at it…"}
    assert status in slack.statuses  # Slack's loading state, in a channel thread too


async def test_a_workspace_that_refuses_streaming_gets_chat_update_and_is_not_asked_again(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    slack.streaming_error = "not_allowed"
    bot = await start(start_slack)
    for text in ("first question", "second question"):
        question = slack.user_message("D0ALICE", text)
        _, reply = await ask(slack, bot.core, question)
        await reply.update("Half an answer")
        assert reply.resume_state()["stream"] == "update"  # a restarted process keeps editing it
        await reply.finish("A whole answer.")
        [answer] = slack.bot_messages("D0ALICE", question["ts"])
        assert answer["text"] == "A whole answer."
        assert [b["type"] for b in answer["blocks"]] == ["section", "context_actions"]  # Stop gone, ratings there
    assert len(slack.calls("chat.startStream")) == 1, "the refusal was not remembered"
    assert len(slack.calls("chat.postMessage")) == 2 and slack.calls("chat.update")


async def test_native_streaming_can_be_turned_off(
    slack: FakeSlack, start_slack: StartSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_NATIVE_STREAMING", "false")
    bot = await start(start_slack)
    question, _message, reply = await ask_in_dm(slack, bot.core, "what is this?")
    [placeholder] = slack.bot_messages("D0ALICE", question["ts"])
    assert placeholder["text"] == "Looking at it…" and button_values(placeholder, STOP_ACTION)
    await reply.finish("An answer.")
    assert not slack.calls("chat.startStream") and slack.calls("chat.update")


async def test_a_long_streamed_answer_continues_in_further_messages_with_ratings_on_the_last(
    slack: FakeSlack, start_slack: StartSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_MAX_MESSAGE_CHARS", "120")
    monkeypatch.setenv("PEEKBOT_ANSWER_FILE_AFTER_MESSAGES", "0")  # in messages, never as a file
    bot = await start(start_slack)
    long_answer = "\n\n".join(f"Step {i}: " + " ".join(["check the cable"] * 5) + "." for i in range(1, 5))
    question, _message, reply = await ask_in_dm(slack, bot.core, "how do I fix it?")
    await reply.update(long_answer[:200])  # longer than one message: the stream shows its first part
    await eventually(lambda: slack.calls("chat.appendStream"), "the streamed start")
    await reply.finish(long_answer)

    shown = slack.bot_messages("D0ALICE", question["ts"])
    assert len(shown) > 1 and all(len(m["text"]) <= 120 for m in shown)
    assert " ".join(m["text"] for m in shown).split() == long_answer.split()
    assert not any(m.get("streaming") for m in shown)
    assert [bool(button_values(m, RATING_ACTION)) for m in shown] == [False] * (len(shown) - 1) + [True]


async def test_a_streamed_reply_is_finished_on_the_same_message_by_the_next_process(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    first = await start(start_slack)
    question, message, reply = await ask_in_dm(slack, first.core, "what is this?")
    await reply.update("The answer")
    await eventually(lambda: slack.calls("chat.appendStream"), "the streamed text")
    state = reply.resume_state()
    assert state["stream"] == "native" and state["placeholder_ts"]
    await first.adapter.stop()  # the process dies while streaming

    second = await start(start_slack)
    resumed = second.adapter.reply_for(journaled(message), dict(state))
    await resumed.start_progress(None)
    await resumed.update("The answer is")
    await resumed.finish("The answer is: restart the service.")

    [answer] = slack.bot_messages("D0ALICE", question["ts"])
    assert answer["ts"] == state["placeholder_ts"] and answer["text"] == "The answer is: restart the service."
    assert not answer["streaming"] and button_values(answer, RATING_ACTION)
    assert len(slack.reply_posts()) == 1


async def test_the_fake_checks_the_streaming_methods_as_slack_does(slack: FakeSlack) -> None:
    web = AsyncWebClient(token=slack.BOT_TOKEN, base_url=slack.api_url)
    question = slack.user_message("C0GENERAL", f"{MENTION} hi")

    async def code(call: Any) -> str:
        with pytest.raises(SlackApiError) as raised:
            await call
        return str(raised.value.response["error"])

    assert await code(web.chat_startStream(channel="C0GENERAL", thread_ts=question["ts"])) == "invalid_arguments"
    started = await web.chat_startStream(
        channel="C0GENERAL", thread_ts=question["ts"], recipient_user_id="U0ALICE", recipient_team_id=slack.TEAM_ID
    )
    ts = str(started["ts"])
    assert await code(web.chat_appendStream(channel="C0GENERAL", ts=ts, markdown_text="x" * 12_001)) == "msg_too_long"
    await web.chat_stopStream(channel="C0GENERAL", ts=ts, markdown_text="done")
    assert await code(web.chat_appendStream(channel="C0GENERAL", ts=ts, markdown_text="more")) == (
        "message_not_in_streaming_state"
    )


# status line and buttons ------------------------------------------------------------------------
async def test_the_status_line_shows_what_the_bot_is_doing_in_a_dm(slack: FakeSlack, start_slack: StartSlack) -> None:
    slack.assistant_status_error = None
    bot = await start(start_slack)
    question, _message, reply = await ask_in_dm(slack, bot.core, "read this")
    await reply.status("looking at the screenshot…")
    assert {"channel_id": "D0ALICE", "thread_ts": question["ts"], "status": "looking at the screenshot…"} in (
        slack.statuses
    )
    await reply.finish("Done.")


async def test_stop_pressed_while_streaming_reaches_the_handler(slack: FakeSlack, start_slack: StartSlack) -> None:
    bot = await start(start_slack)
    question, message, reply = await ask_in_dm(slack, bot.core, "a long question")
    await reply.update("Partial")
    [streaming] = slack.bot_messages("D0ALICE", question["ts"])
    [stop] = button_values(streaming, STOP_ACTION)

    envelope = await slack.click("D0ALICE", streaming["ts"], STOP_ACTION, stop)
    await slack.wait_for_ack(envelope)
    [action] = await eventually(lambda: bot.presses.seen, "the Stop press")
    assert (action.kind, action.question_id, action.user.user_id) == (
        AnswerActionKind.STOP,
        message.message_id,
        "U0ALICE",
    )
    await eventually(lambda: slack.ephemerals, "the sentence for the presser")
    assert slack.ephemerals[0]["user"] == "U0ALICE" and slack.ephemerals[0]["text"] == "Noted: stop."
    await reply.finish("Partial\n\n(stopped)")


async def test_a_rating_click_reaches_the_handler_and_a_thumbs_down_asks_why(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    bot = await start(start_slack)
    message, answer = await answered_in_dm(slack, bot)
    helpful, not_helpful = button_values(answer, RATING_ACTION)

    await slack.click("D0ALICE", answer["ts"], RATING_ACTION, helpful, kind="feedback_buttons")
    [rated] = await eventually(lambda: bot.presses.seen, "the rating")
    assert (rated.kind, rated.question_id, rated.platform) == (AnswerActionKind.HELPFUL, message.message_id, "slack")
    await eventually(lambda: slack.ephemerals, "the thanks")

    await slack.click("D0ALICE", answer["ts"], RATING_ACTION, not_helpful, kind="feedback_buttons", user="U0BOB")
    await eventually(lambda: len(slack.ephemerals) == 2, "the reason choice")
    choice = slack.ephemerals[1]
    assert choice["user"] == "U0BOB" and choice["thread_ts"] == answer["thread_ts"]
    reasons = [
        v
        for block in choice["blocks"]
        for v in button_values({"blocks": [block]}, block.get("elements", [{}])[0].get("action_id", ""))
    ]
    assert reasons and all(decode(v)[:2] == (AnswerActionKind.NOT_HELPFUL, message.message_id) for v in reasons)

    await slack.click(
        "D0ALICE", "1700009999.000001", "peekbot_reason_0", reasons[0], user="U0BOB", ephemeral_in=answer["thread_ts"]
    )
    await eventually(lambda: len(bot.presses.seen) == 3, "the reason")
    assert [(a.kind, a.user.user_id, a.reason) for a in bot.presses.seen[1:]] == [
        (AnswerActionKind.NOT_HELPFUL, "U0BOB", ""),
        (AnswerActionKind.NOT_HELPFUL, "U0BOB", "wrong"),
    ]


async def test_a_press_with_a_value_that_is_not_ours_is_acked_and_ignored(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    bot = await start(start_slack)
    _, answer = await answered_in_dm(slack, bot)
    for value in ("not json", '{"k": "explode", "q": "D0ALICE:1"}', '{"k": "helpful"}'):
        await slack.wait_for_ack(await slack.click("D0ALICE", answer["ts"], RATING_ACTION, value))
    helpful, _ = button_values(answer, RATING_ACTION)
    await slack.click("D0ALICE", answer["ts"], RATING_ACTION, helpful, kind="feedback_buttons")
    [action] = await eventually(lambda: bot.presses.seen, "the one good press")
    await eventually(lambda: slack.ephemerals, "its thanks")
    assert action.kind is AnswerActionKind.HELPFUL and len(slack.ephemerals) == 1


async def test_an_error_reply_carries_no_rating_buttons(slack: FakeSlack, start_slack: StartSlack) -> None:
    bot = await start(start_slack)
    question, _message, reply = await ask_in_dm(slack, bot.core, "what is this?")
    await reply.fail("That file could not be read.")
    [answer] = slack.bot_messages("D0ALICE", question["ts"])
    assert answer["text"] == ":warning: That file could not be read." and not button_values(answer, RATING_ACTION)


# message shortcut and suggested prompts ----------------------------------------------------------
async def test_the_shortcut_on_a_screenshot_is_answered_in_its_thread(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    bot = await start(start_slack)
    shot = slack.add_file("error.png", b"\x89PNG fake", "image/png", user="U0CAROL")
    posted = slack.user_message("C0GENERAL", "anyone seen this?", user="U0CAROL", files=[shot])

    envelope = await slack.message_shortcut("C0GENERAL", posted["ts"], "ask_peekbot")
    await slack.wait_for_ack(envelope)
    message, reply = await bot.core.wait_taken()
    assert message.text == "What is this about?" and [f.file_id for f in message.files] == [shot["id"]]
    assert message.user.user_id == "U0ALICE" and message.user.org == slack.TEAM_ID  # the presser's access rules
    assert message.conversation.thread == posted["ts"] and message.chat_type is ChatType.GROUP
    await reply.start_progress(None)
    await reply.finish("It is a 502 error from the proxy.")
    [answer] = slack.bot_messages("C0GENERAL", posted["ts"])
    assert answer["text"] == "It is a 502 error from the proxy."
    assert slack.calls("chat.startStream")[0].args["recipient_user_id"] == "U0ALICE"


async def test_suggested_prompts_when_the_dm_is_opened_in_the_agent_view(
    slack: FakeSlack, start_slack: StartSlack
) -> None:
    await start(start_slack)
    await slack.wait_for_ack(await slack.send_event(slack.app_home_opened("D0ALICE", tab="home")))
    await slack.wait_for_ack(await slack.send_event(slack.app_home_opened("D0ALICE")))
    [offered] = await eventually(lambda: slack.suggested_prompts, "the prompts")
    assert offered["channel_id"] == "D0ALICE" and "thread_ts" not in offered
    assert [p["message"] for p in offered["prompts"]] == [
        "What does this error mean?",
        "Transcribe this screenshot",
        "Summarise this PDF",
    ]


async def test_suggested_prompts_for_a_new_assistant_thread(
    slack: FakeSlack, start_slack: StartSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_SUGGESTED_PROMPTS", "Why is the build red?, Read this invoice")
    await start(start_slack)
    opened = slack.assistant_thread_started("D0ALICE")
    await slack.send_event(opened)
    [offered] = await eventually(lambda: slack.suggested_prompts, "the prompts")
    assert offered["thread_ts"] == opened["assistant_thread"]["thread_ts"]
    assert [p["title"] for p in offered["prompts"]] == ["Why is the build red?", "Read this invoice"]


# through the real core ---------------------------------------------------------------------------
class ToCore:
    """What ``tests.adapters.contract.application`` needs to run the real core with the Slack adapter."""

    @staticmethod
    def new_adapter(settings: Settings) -> SlackAdapter:
        return SlackAdapter(settings)


def real_core(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, **env: str) -> AbstractAsyncContextManager[FakeEngine]:
    """The real core (SQLite journal, ratings, Stop) with the Slack adapter on the fake and a scripted engine."""
    set_environment(monkeypatch, slack_environment(slack, PEEKBOT_ADMINS="slack:U0ADMIN", **env))
    return application(ToCore(), monkeypatch)  # type: ignore[arg-type]


async def test_a_rating_is_recorded_by_the_core_and_shown_in_stats(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with real_core(slack, monkeypatch):
        question = slack.user_message("D0ALICE", "what does this dialog say?")
        await slack.send_event(question)
        await slack.wait_answered(question)
        [answer] = slack.bot_messages("D0ALICE", question["ts"])
        helpful, _ = button_values(answer, RATING_ACTION)
        await slack.click("D0ALICE", answer["ts"], RATING_ACTION, helpful, kind="feedback_buttons")
        await eventually(lambda: slack.ephemerals, "the thanks")
        assert slack.ephemerals[0]["text"] == THANKS_HELPFUL

        await slack.send_command("stats", user_id="U0ADMIN", channel_id="D0ADMIN")
        [stats] = await eventually(lambda: slack.command_responses, "the stats")
        assert "Helpful: 100 % of 1 rated (7 days)." in stats["text"]


async def test_stop_ends_a_streaming_answer_and_keeps_what_was_written(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with real_core(slack, monkeypatch) as engine:
        engine.hold(after_chunks=1)
        question = slack.user_message("D0ALICE", "what does this dialog say?")
        await slack.send_event(question)
        await asyncio.wait_for(engine.waiting.wait(), 10)
        streaming = await eventually(
            lambda: [m for m in slack.bot_messages("D0ALICE", question["ts"]) if m["text"]], "the streamed start"
        )
        [stop] = button_values(streaming[0], STOP_ACTION)
        await slack.click("D0ALICE", streaming[0]["ts"], STOP_ACTION, stop)
        await slack.wait_answered(question)
        [answer] = slack.bot_messages("D0ALICE", question["ts"])
        assert not answer["streaming"] and "(stopped by" in answer["text"]
        assert answer["text"].startswith(streaming[0]["text"].split()[0])


async def test_the_shortcut_follows_the_pressers_access_rules(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with real_core(slack, monkeypatch, PEEKBOT_ALLOWED_WORKSPACES=f"slack:{slack.TEAM_ID}") as engine:
        shot = slack.add_file("error.png", b"\x89PNG fake", "image/png", user="U0CAROL")
        posted = slack.user_message("C0GENERAL", "anyone seen this?", user="U0CAROL", files=[shot])
        await slack.message_shortcut("C0GENERAL", posted["ts"], "ask_peekbot", user="U0GUEST", user_team="T0OTHER")
        [refusal] = await eventually(lambda: slack.bot_messages("C0GENERAL", posted["ts"]), "the refusal")
        assert "only answer people from the workspaces" in refusal["text"] and engine.requests == []
