"""Through the loopback Feishu and the whole Application: an admin's ``/instructions set …`` reaches the prompt of
questions in that chat only, and a long answer arrives as answer.md with a summary card."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.feishu import FeishuAdapter
from adapters.kit.longanswers import ANSWER_FILE_NAME
from bot.app import Application
from bot.engine import GenerationRequest
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.fake_feishu import FakeFeishu, feishu_environment

pytestmark = pytest.mark.timeout(60)

ADMIN = "ou_admin"
LONG_ANSWER = "\n\n".join(f"Step {i}: " + " ".join(["check the cable and the power supply"] * 8) for i in range(1, 8))


async def start(
    start_app: AppStarter, feishu: FakeFeishu, answer: Callable[[GenerationRequest], str] | None = None
) -> Application:
    env = {
        **peekbot_environment(http_port=0, admins=f"feishu:{ADMIN}"),
        **feishu_environment(feishu, FEISHU_MAX_REPLY_CHARS="400", FEISHU_STREAMING_CARDS="false"),
    }
    return await start_app(env, engine=lambda _: FakeEngine(answer), adapters=lambda s: [FeishuAdapter(s)])


async def say(feishu: FakeFeishu, text: str, *, chat_id: str = "oc_dm_admin", sender: str = ADMIN) -> str:
    """Send ``text`` in a direct chat; the message id, once the bot's reply is complete."""
    event = feishu.message_event(msg_type="text", content={"text": text}, chat_id=chat_id, sender_open_id=sender)
    message_id = str(event["event"]["message"]["message_id"])
    await feishu.push_event(event)
    await feishu.wait_for(
        lambda: any(t and not t.startswith(("Looking at it", "Queued")) for t in feishu.reply_texts(message_id)),
        what=f"the reply to {text!r}",
    )
    return message_id


async def test_chat_command_instructions_reach_the_prompt_of_that_chat_only(
    start_app: AppStarter, feishu: FakeFeishu
) -> None:
    app = await start(start_app, feishu)
    done = await say(feishu, "/instructions set 请用日语回答。")
    assert feishu.reply_texts(done)[0].startswith("好的：")  # written in Chinese: answered in Chinese (bot.i18n)
    refused = await say(feishu, "/instructions clear", chat_id="oc_dm_alice", sender="ou_alice")
    assert "admins only" in feishu.reply_texts(refused)[0]

    await say(feishu, "what does a red light mean?")
    await say(feishu, "what does a red light mean?", chat_id="oc_dm_alice", sender="ou_alice")
    engine = app.engine
    assert isinstance(engine, FakeEngine)
    await feishu.wait_for(lambda: len(engine.requests) == 2, what="both questions")
    assert [r.instructions for r in engine.requests] == ["请用日语回答。", ""]


async def test_a_long_answer_arrives_as_a_file_with_a_summary(start_app: AppStarter, feishu: FakeFeishu) -> None:
    await start(start_app, feishu, answer=lambda _: LONG_ANSWER)
    question = await say(feishu, "how do I fix it?", chat_id="oc_dm_alice", sender="ou_alice")
    [sent] = await feishu.wait_for(lambda: feishu.files_sent(question), what="the answer's file")
    assert sent.file_name == ANSWER_FILE_NAME and sent.data.decode().startswith(LONG_ANSWER)
    cards = [feishu.visible_text(m) for m in feishu.replies_to(question) if m.msg_type != "file"]
    assert len(cards) == 1 and cards[0].startswith("Step 1: check the cable") and ANSWER_FILE_NAME in cards[0]
