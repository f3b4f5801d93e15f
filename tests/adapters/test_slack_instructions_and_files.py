"""Through the loopback Slack and the whole Application: an admin's ``/peekbot instructions set …`` reaches the
prompt of questions in that channel, and a long answer arrives as answer.md with a summary."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image

from adapters.kit.longanswers import ANSWER_FILE_NAME
from adapters.slack import SlackAdapter
from bot.app import Application
from bot.engine import GenerationRequest
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine

pytestmark = pytest.mark.timeout(60)

ADMIN = "U0ADMIN"
MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
LONG_ANSWER = "\n\n".join(f"Step {i}: " + " ".join(["check the cable and the power supply"] * 8) for i in range(1, 8))


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def start(
    start_app: AppStarter, slack: FakeSlack, answer: Callable[[GenerationRequest], str] | None = None
) -> Application:
    env = {
        **peekbot_environment(http_port=0, admins=f"slack:{ADMIN}", max_pixels=128 * 128),
        **slack_environment(slack, SLACK_MAX_MESSAGE_CHARS="400", SLACK_NATIVE_STREAMING="false"),
    }
    return await start_app(env, engine=lambda _: FakeEngine(answer), adapters=lambda s: [SlackAdapter(s)])


async def command(slack: FakeSlack, text: str, *, user_id: str = ADMIN, channel_id: str = "C0GENERAL") -> str:
    count = len(slack.command_responses)
    await slack.wait_for_ack(await slack.send_command(text, user_id=user_id, channel_id=channel_id))
    await slack.wait_until(lambda: len(slack.command_responses) > count, 10, f"the reply to /peekbot {text}")
    return str(slack.command_responses[-1]["text"])


async def ask(slack: FakeSlack, channel: str, text: str) -> dict:  # type: ignore[type-arg]
    shot = slack.add_file("error.png", png(), "image/png")
    question = slack.user_message(channel, f"{MENTION} {text}", files=[shot])
    await slack.send_event(question)
    await slack.wait_answered(question)
    return question


async def test_slash_command_instructions_reach_the_prompt_of_that_channel(
    start_app: AppStarter, slack: FakeSlack
) -> None:
    app = await start(start_app, slack)
    # Slack sends the command's text with &, < and > escaped.
    set_reply = await command(slack, "instructions set Answer in &lt;Japanese&gt; &amp; keep it short.")
    assert set_reply.startswith("Done:")
    refused = await command(slack, "instructions clear", user_id="U0ALICE")
    assert refused == "Sorry, /instructions is for peekbot admins only."

    await ask(slack, "C0GENERAL", "why is the build red?")
    await ask(slack, "C0OTHER", "why is the build red?")
    engine = app.engine
    assert isinstance(engine, FakeEngine)
    assert [r.instructions for r in engine.requests] == ["Answer in <Japanese> & keep it short.", ""]
    status = await command(slack, "status", user_id="U0ALICE")
    assert "Instructions for this channel: “Answer in <Japanese> & keep it short.”" in status


async def test_a_long_answer_arrives_as_a_file_with_a_summary(start_app: AppStarter, slack: FakeSlack) -> None:
    await start(start_app, slack, answer=lambda _: LONG_ANSWER)
    question = await ask(slack, "C0GENERAL", "how do I fix it?")
    texts = [m["text"] for m in slack.bot_messages("C0GENERAL", question["ts"]) if not m.get("files")]
    [shared] = slack.shared_files("C0GENERAL", question["ts"])
    assert len(texts) == 1 and texts[0].startswith("Step 1: check the cable") and ANSWER_FILE_NAME in texts[0]
    assert shared["name"] == ANSWER_FILE_NAME and shared["content"].decode().startswith(LONG_ANSWER)
