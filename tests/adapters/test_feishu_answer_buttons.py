"""Buttons on Feishu answers: Stop while streaming, 👍/👎 on the final answer, the reason after a 👎, each press
answered on its own frame (EVENT or CARD) with a toast within 3 s, against the loopback fake (no model)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.feishu import FeishuAdapter
from adapters.feishu.actions import NOT_RECORDED, UNREADABLE, WORKING
from bot.settings import Settings
from bot.types import AnswerAction, AnswerActionKind, IncomingMessage, ReplyHandle
from tests.support.fake_feishu import FakeFeishu, StoredMessage, feishu_environment

CALLBACK_DEADLINE_S = 3.0
"""Feishu shows the presser an error when a callback is not answered within this time."""


class RecordingCore:
    """Stands in for the core: keeps each question's reply handle, records button presses, says ``sentence``."""

    def __init__(self, sentence: str = "Thanks for the rating!", delay_s: float = 0.0, fail: bool = False) -> None:
        self.replies: dict[str, ReplyHandle] = {}
        self.actions: list[AnswerAction] = []
        self.sentence, self.delay_s, self.fail = sentence, delay_s, fail

    async def handle(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        self.replies[message.message_id] = reply
        return True

    async def on_action(self, action: AnswerAction) -> str:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("the store is down")
        self.actions.append(action)
        return self.sentence


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu() as server:
        yield server


@pytest.fixture
async def start(monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu) -> AsyncIterator[Callable]:  # type: ignore[type-arg]
    adapters: list[FeishuAdapter] = []

    async def _start(core: RecordingCore | None = None, **env: str) -> tuple[FeishuAdapter, RecordingCore]:
        for key, value in feishu_environment(fake, **env).items():
            monkeypatch.setenv(key, value)
        core = core or RecordingCore()
        adapter = FeishuAdapter(Settings())
        adapter.use_answer_action_handler(core.on_action)
        await adapter.start(core.handle)
        adapters.append(adapter)
        return adapter, core

    yield _start
    for adapter in adapters:
        await adapter.stop()


async def ask(
    fake: FakeFeishu, core: RecordingCore, text: str = "what does this error mean?"
) -> tuple[str, ReplyHandle]:
    event = fake.message_event(msg_type="text", content={"text": text})
    question_id = event["event"]["message"]["message_id"]
    await fake.push_event(event)
    await fake.wait_for(lambda: question_id in core.replies, what="the question at the core")
    return question_id, core.replies[question_id]


async def card_message(fake: FakeFeishu, question_id: str) -> StoredMessage:
    return await fake.wait_for(lambda: next(iter(fake.replies_to(question_id)), None), what="the answer card")


def button(fake: FakeFeishu, message: StoredMessage, kind: str, reason: str = "") -> dict:
    values = [v for v in fake.buttons_on(message) if v.get("k") == kind and v.get("r", "") == reason]
    assert len(values) == 1, fake.buttons_on(message)
    return values[0]


async def final_answer(fake: FakeFeishu, core: RecordingCore, text: str = "It means the disk is full.") -> tuple:
    question_id, reply = await ask(fake, core)
    await reply.start_progress()
    await reply.finish(text)
    return question_id, await card_message(fake, question_id)


async def test_stop_on_a_streaming_answer_reaches_the_handler_with_the_question(start, fake: FakeFeishu) -> None:
    _, core = await start(RecordingCore(sentence="Stopping, keeping what I wrote so far."))
    question_id, reply = await ask(fake, core)
    await reply.start_progress()
    await reply.update("The first half of the answer")
    message = await card_message(fake, question_id)
    assert [v["k"] for v in fake.buttons_on(message)] == ["stop"]

    press = await fake.press(fake.card_action_event(message, button(fake, message, "stop")))

    assert press.toast == "Stopping, keeping what I wrote so far." and press.latency_s < CALLBACK_DEADLINE_S
    [action] = core.actions
    assert action.kind is AnswerActionKind.STOP and action.question_id == question_id
    assert action.user.user_id == "ou_alice" and action.platform == "feishu"
    await reply.finish("The first half of the answer")
    card = fake.card_of(message)
    assert card is not None and not card.streaming  # streaming closed first, so presses can change the card
    assert [v["k"] for v in fake.buttons_on(message)] == ["helpful", "not_helpful"]


@pytest.mark.parametrize("frame", ["event", "card"])
async def test_thumbs_up_on_a_final_answer_is_answered_with_a_toast_within_3_s(
    start, fake: FakeFeishu, frame: str
) -> None:
    _, core = await start()
    question_id, message = await final_answer(fake, core)
    assert fake.visible_text(message) == "It means the disk is full."

    press = await fake.press(fake.card_action_event(message, button(fake, message, "helpful")), frame=frame)

    assert press.code == 200 and press.toast == "Thanks for the rating!" and press.toast_type == "info"
    assert press.latency_s < CALLBACK_DEADLINE_S
    [action] = core.actions
    assert (action.kind, action.question_id, action.reason) == (AnswerActionKind.HELPFUL, question_id, "")


async def test_a_card_frame_in_the_older_flat_layout_counts_too(start, fake: FakeFeishu) -> None:
    _, core = await start()
    question_id, message = await final_answer(fake, core)
    flat = {
        "open_id": "ou_bob",
        "tenant_key": fake.tenant_key,
        "open_message_id": message.message_id,
        "token": "c-1",
        "action": {"value": button(fake, message, "helpful"), "tag": "button"},
    }

    press = await fake.press(json.dumps(flat).encode(), frame="card")

    assert press.toast == "Thanks for the rating!" and press.latency_s < CALLBACK_DEADLINE_S
    [action] = core.actions
    assert (action.kind, action.question_id, action.user.user_id) == (AnswerActionKind.HELPFUL, question_id, "ou_bob")


async def test_thumbs_down_offers_a_reason_and_the_reason_is_recorded(start, fake: FakeFeishu) -> None:
    _, core = await start()
    question_id, message = await final_answer(fake, core)

    first = await fake.press(fake.card_action_event(message, button(fake, message, "not_helpful")))
    assert first.toast == "Thanks for the rating!"
    await fake.wait_for(lambda: len(fake.buttons_on(message)) == 4, what="the reason choice")
    second = await fake.press(
        fake.card_action_event(message, button(fake, message, "not_helpful", "missed_file")), frame="card"
    )

    assert second.toast == "Thanks for the rating!" and second.latency_s < CALLBACK_DEADLINE_S
    assert [(a.kind, a.question_id, a.reason) for a in core.actions] == [
        (AnswerActionKind.NOT_HELPFUL, question_id, ""),
        (AnswerActionKind.NOT_HELPFUL, question_id, "missed_file"),
    ]
    await fake.wait_for(lambda: not fake.buttons_on(message), what="the thank-you in place of the buttons")
    assert fake.visible_text(message) == "It means the disk is full."


async def test_malformed_callbacks_get_an_error_toast_and_the_connection_keeps_serving(start, fake: FakeFeishu) -> None:
    _, core = await start()
    _, message = await final_answer(fake, core)

    for callback, frame in (
        (b"\x00not json", "card"),
        (b'{"schema": "2.0", "header": {"event_type": "card.action.trigger"}, "event": {"action": 5}}', "event"),
        (fake.card_action_event(message, {"v": 1, "q": "om_1", "k": "launch_rockets"}), "event"),
        (fake.card_action_event(message, "not a value"), "card"),
    ):
        press = await fake.press(callback, frame=frame)
        assert (press.code, press.toast, press.toast_type) == (200, UNREADABLE, "error")
        assert press.toast.startswith("抱歉") and "Sorry, I couldn't read that button press." in press.toast  # both
    assert core.actions == []

    question_id, _ = await ask(fake, core, "still there?")  # messages still arrive …
    press = await fake.press(fake.card_action_event(message, button(fake, message, "helpful")))
    assert press.toast == "Thanks for the rating!" and len(core.actions) == 1  # … and presses still count
    assert question_id in core.replies


async def test_a_slow_handler_gets_a_working_toast_in_time_and_still_counts(start, fake: FakeFeishu) -> None:
    _, core = await start(RecordingCore(delay_s=0.8), FEISHU_ACTION_ANSWER_WAIT_S="0.2")
    _, message = await final_answer(fake, core)

    press = await fake.press(fake.card_action_event(message, button(fake, message, "helpful")))

    assert press.toast == WORKING and press.latency_s < 0.8
    await fake.wait_for(lambda: core.actions, what="the press at the core")


async def test_a_failing_handler_gets_an_error_toast(start, fake: FakeFeishu) -> None:
    _, core = await start(RecordingCore(fail=True))
    _, message = await final_answer(fake, core)

    press = await fake.press(fake.card_action_event(message, button(fake, message, "not_helpful")))

    assert (press.toast, press.toast_type) == (NOT_RECORDED, "error")
    assert len(fake.buttons_on(message)) == 2  # no reason choice for a rating that was not recorded


async def test_presses_from_a_tenant_the_access_rules_refuse_do_not_count(start, fake: FakeFeishu) -> None:
    _, core = await start(PEEKBOT_ALLOWED_WORKSPACES=f"feishu:{fake.tenant_key}")
    _, message = await final_answer(fake, core)
    value = button(fake, message, "helpful")

    refused = await fake.press(fake.card_action_event(message, value, tenant_key="tenant-elsewhere"), frame="card")
    allowed = await fake.press(fake.card_action_event(message, value))

    assert refused.toast_type == "error" and "isn't set up for peekbot" in refused.toast
    assert allowed.toast_type == "info" and len(core.actions) == 1


async def test_without_cardkit_the_patched_card_shows_stop_then_ratings_and_no_ratings_on_an_apology(
    start, fake: FakeFeishu
) -> None:
    _, core = await start(FEISHU_STREAMING_CARDS="false")
    question_id, reply = await ask(fake, core)
    await reply.start_progress()
    message = await card_message(fake, question_id)
    assert [v["k"] for v in fake.buttons_on(message)] == ["stop"]
    await reply.finish("Done.")
    assert [v["k"] for v in fake.buttons_on(message)] == ["helpful", "not_helpful"]
    press = await fake.press(fake.card_action_event(message, button(fake, message, "helpful")), frame="card")
    assert press.toast == "Thanks for the rating!"

    other_id, other = await ask(fake, core, "and this one?")
    await other.start_progress()
    await other.fail("I couldn't read that file.")
    assert fake.buttons_on(await card_message(fake, other_id)) == []


async def test_the_toasts_speak_the_language_of_the_card(start, fake: FakeFeishu) -> None:
    _, core = await start(RecordingCore(delay_s=0.8, fail=True), FEISHU_ACTION_ANSWER_WAIT_S="0.2")
    question_id, reply = await ask(fake, core, "这个报错是什么意思？")
    reply.speaking("zh")  # what the core does for a Chinese question
    await reply.start_progress()
    await reply.finish("磁盘满了。")
    message = await card_message(fake, question_id)
    assert {value.get("l") for value in fake.buttons_on(message)} == {"zh"}

    slow = await fake.press(fake.card_action_event(message, button(fake, message, "helpful")))
    assert slow.toast == "正在处理…"
    core.delay_s = 0.0
    failed = await fake.press(fake.card_action_event(message, button(fake, message, "not_helpful")))
    assert (failed.toast, failed.toast_type) == ("抱歉，我刚才没能记录下来。请再试一次。", "error")
