"""End to end: our long connection + lark-oapi REST → fake Feishu → adapter → Application → tiny model → reply.

One application (and one tiny model) serves the whole module; every test uses its own chats and messages.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from adapters.feishu import FeishuAdapter
from adapters.kit.ratings import REASONS
from bot.app import Application
from bot.store.base import JobState
from bot.withdrawals import job_id_of
from tests.support.apps import AppStarter, tiny_bot_environment, tiny_engine
from tests.support.engines import RecordingEngine
from tests.support.fake_feishu import FakeFeishu, feishu_environment

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "ou_admin"
PROGRESS_PREFIXES = ("Looking at it", "Queued —")




@dataclass
class World:
    fake: FakeFeishu
    app: Application
    engine: RecordingEngine
    adapter: FeishuAdapter


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with FakeFeishu() as fake:
        with pytest.MonkeyPatch.context() as mp:
            async with AppStarter(mp) as start_app:
                app = await start_app(
                    {
                        **feishu_environment(fake, FEISHU_RECONNECT_INITIAL_S="0.05", FEISHU_RECONNECT_JITTER_S="0.05"),
                        **tiny_bot_environment(tiny_qwen3_dir, data_dir=tmp_path_factory.mktemp("feishu-data"),
                                               admins=f"feishu:{ADMIN}", max_new_tokens=8, max_pixels=128 * 128,
                                               rate_limit_per_minute=0),
                    },
                    engine=tiny_engine(),
                    adapters=lambda settings: [FeishuAdapter(settings)],
                )
                adapter, engine = app.adapters["feishu"], app.engine
                assert isinstance(adapter, FeishuAdapter) and isinstance(engine, RecordingEngine)
                yield World(fake, app, engine, adapter)


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def image_message(fake: FakeFeishu, image_key: str, color: tuple[int, int, int]) -> tuple[dict[str, Any], str]:
    """A person sends a picture in a direct chat: the event (not pushed yet) and the message id."""
    event = fake.message_event(msg_type="image", content={"image_key": image_key})
    question_id = event["event"]["message"]["message_id"]
    fake.add_resource(question_id, image_key, png(color))
    return event, question_id


def pdf() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 160), (250, 250, 250)).save(buffer, "PDF")
    return buffer.getvalue()


def bot_mention(fake: FakeFeishu, index: int = 1) -> dict[str, Any]:
    return fake.mention(index, fake.bot_open_id, "peekbot")


async def answer(fake: FakeFeishu, question_id: str, *, timeout: float = 60.0) -> list[str]:
    """The reply texts once the answer is complete (streaming closed, no "Typing" left)."""

    def complete() -> list[str] | None:
        replies = fake.replies_to(question_id)
        if not replies or fake.reactions.get(question_id):
            return None
        for reply in replies:
            card = fake.card_of(reply)
            if card is not None and card.streaming:
                return None
        texts = [fake.visible_text(r) for r in replies]
        if any(t.startswith(PROGRESS_PREFIXES) for t in texts):
            return None
        return texts

    return await fake.wait_for(complete, timeout=timeout, what=f"the answer to {question_id}")


async def ask(fake: FakeFeishu, event: dict[str, Any], **push: Any) -> tuple[str, list[str]]:
    question_id = event["event"]["message"]["message_id"]
    await fake.push_event(event, **push)
    return question_id, await answer(fake, question_id)


async def test_p2p_image_is_answered_in_a_streamed_card(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    event, question_id = image_message(fake, "img_p2p", (200, 30, 30))
    _, texts = await ask(fake, event)

    assert len(texts) == 1 and texts[0].strip()
    assert fake.downloads()[-1] == (question_id, "img_p2p")
    [request] = engine.requests[before:]
    assert len(request.images) == 1
    [card_reply] = fake.replies_to(question_id)
    assert fake.card_of(card_reply) is not None  # a CardKit streaming card, closed at the end
    created = [c for c in fake.calls_to("POST", f"/messages/{question_id}/reactions$")]
    assert created and created[0].body == {"reaction_type": {"emoji_type": "Typing"}}
    assert fake.calls_to("DELETE", f"/messages/{question_id}/reactions/")
    feedback = fake.calls_to("POST", f"/messages/{question_id}/reply$")[0]
    assert feedback.at - fake.calls_to("POST", f"/messages/{question_id}/reactions$")[0].at < 1.0


async def test_group_post_with_two_images_and_a_mention_uses_both(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    content = {"title": "", "content": [
        [{"tag": "at", "user_id": "@_user_1", "user_name": "peekbot"}, {"tag": "text", "text": " compare these"}],
        [{"tag": "img", "image_key": "img_left"}],
        [{"tag": "img", "image_key": "img_right"}],
    ]}
    event = fake.message_event(msg_type="post", content=content, chat_id="oc_g1", chat_type="group",
                               mentions=[bot_mention(fake)])
    question_id = event["event"]["message"]["message_id"]
    fake.add_resource(question_id, "img_left", png((10, 200, 10)))
    fake.add_resource(question_id, "img_right", png((10, 10, 200)))
    _, texts = await ask(fake, event)

    assert texts and texts[0].strip()
    assert {(question_id, "img_left"), (question_id, "img_right")} <= set(fake.downloads())
    [request] = engine.requests[before:]
    assert len(request.images) == 2
    assert request.question == "compare these"


async def test_group_message_for_someone_else_is_ignored(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    event = fake.message_event(msg_type="text", content={"text": "@_user_1 can you check?"}, chat_id="oc_g2",
                               chat_type="group", mentions=[fake.mention(1, "ou_bob", "Bob")])
    transport_id = await fake.push_event(event)
    await fake.wait_for(lambda: fake.acks_for(transport_id), what="the ack")
    await asyncio.sleep(0.5)
    assert fake.replies_to(event["event"]["message"]["message_id"]) == []
    assert len(engine.requests) == before


async def test_pdf_is_answered(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    event = fake.message_event(msg_type="file", content={"file_key": "file_pdf", "file_name": "report.pdf"})
    question_id = event["event"]["message"]["message_id"]
    fake.add_resource(question_id, "file_pdf", pdf(), content_type="application/pdf", file_name="report.pdf")
    _, texts = await ask(fake, event)
    assert texts and not texts[0].startswith("⚠️")
    assert fake.calls_to("GET", f"/messages/{question_id}/resources/file_pdf")[0].query == {"type": "file"}
    [request] = engine.requests[before:]
    assert len(request.images) == 1


async def test_unsupported_file_gets_a_clear_reply(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    event = fake.message_event(msg_type="file", content={"file_key": "file_doc", "file_name": "notes.docx"})
    question_id = event["event"]["message"]["message_id"]
    fake.add_resource(question_id, "file_doc", b"PK\x03\x04" + bytes(200), content_type="application/octet-stream")
    _, texts = await ask(fake, event)
    assert texts[0].startswith("⚠️") and "notes.docx" in texts[0] and "PDF" in texts[0]
    sticker = fake.message_event(msg_type="sticker", content={"file_key": "sticker_1"})
    _, sticker_texts = await ask(fake, sticker)
    assert sticker_texts[0].startswith("⚠️ I can't read a sticker")
    assert len(engine.requests) == before
    assert not fake.calls_to("GET", "/resources/sticker_1")


async def test_duplicate_deliveries_get_exactly_one_answer(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    event, question_id = image_message(fake, "img_dup", (90, 90, 90))
    first = await fake.push_event(event)
    again = await fake.push_event(event)
    backfill = dict(event, header=dict(event["header"], event_id="backfilled-event-id"))
    third = await fake.push_event(backfill)
    await answer(fake, question_id)
    await fake.wait_for(lambda: all(fake.acks_for(t) for t in (first, again, third)), what="three acks")
    await asyncio.sleep(0.3)
    assert len(fake.replies_to(question_id)) == 1
    assert len(engine.requests) == before + 1


async def test_reply_to_an_image_that_mentions_the_bot_reads_the_parent_image(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    # The bot cannot see plain group messages; it only learns of the image through the reply's parent_id.
    image = fake.add_message(chat_id="oc_g3", msg_type="image", content={"image_key": "img_parent"})
    fake.add_resource(image.message_id, "img_parent", png((240, 200, 0)))
    event = fake.message_event(msg_type="text", content={"text": "@_user_1 what's wrong here?"}, chat_id="oc_g3",
                               chat_type="group", mentions=[bot_mention(fake)], parent_id=image.message_id,
                               root_id=image.message_id)
    _, texts = await ask(fake, event)
    assert texts and not texts[0].startswith("⚠️")
    assert fake.calls_to("GET", f"/im/v1/messages/{image.message_id}$")
    assert (image.message_id, "img_parent") in fake.downloads()
    [request] = engine.requests[before:]
    assert len(request.images) == 1 and request.question == "what's wrong here?"


async def test_follow_up_in_a_thread_uses_the_image_posted_earlier(world: World) -> None:
    fake, engine = world.fake, world.engine
    before = len(engine.requests)
    screenshot = fake.message_event(msg_type="image", content={"image_key": "img_thread"}, chat_id="oc_g4",
                                    chat_type="group")
    root_id = screenshot["event"]["message"]["message_id"]
    fake.add_resource(root_id, "img_thread", png((0, 120, 240)))
    seen = await fake.push_event(screenshot)  # no mention: not answered, but remembered
    await fake.wait_for(lambda: fake.acks_for(seen), what="the screenshot's ack")
    question = fake.message_event(msg_type="text", content={"text": "@_user_1 any errors?"}, chat_id="oc_g4",
                                  chat_type="group", mentions=[bot_mention(fake)], root_id=root_id,
                                  parent_id=root_id)
    _, texts = await ask(fake, question)
    assert texts
    assert fake.replies_to(root_id) == []
    assert not fake.calls_to("GET", f"/im/v1/messages/{root_id}$")  # known already: no lookup
    [request] = engine.requests[before:]
    assert len(request.images) == 1


async def test_rate_limited_card_updates_still_deliver_the_answer(world: World) -> None:
    fake = world.fake
    event, _ = image_message(fake, "img_429", (1, 2, 3))
    fake.fail("PUT", r"/cardkit/v1/cards/.+/elements/.+/content$", times=3)
    _, texts = await ask(fake, event)
    assert len(texts) == 1 and texts[0].strip() and not texts[0].startswith("⚠️")
    assert len([c for c in fake.calls_to("PUT", "/content$") if c.status == 429]) == 3


async def test_help_and_status_commands(world: World) -> None:
    fake = world.fake
    _, help_texts = await ask(fake, fake.message_event(msg_type="text", content={"text": "/help"}))
    assert "/status" in help_texts[0] and "/pause" not in help_texts[0]
    status_event = fake.message_event(msg_type="text", content={"text": "@_user_1 /status"}, chat_id="oc_g5",
                                      chat_type="group", mentions=[bot_mention(fake)])
    _, status_texts = await ask(fake, status_event)
    assert "Queue:" in status_texts[0] and "Model:" not in status_texts[0]


async def test_admin_commands_are_refused_for_others_and_work_for_admins(world: World) -> None:
    fake, app = world.fake, world.app
    _, refused = await ask(fake, fake.message_event(msg_type="text", content={"text": "/pause"}))
    assert "admins only" in refused[0] and not app.paused
    admin_status = fake.message_event(msg_type="text", content={"text": "/status"}, sender_open_id=ADMIN,
                                      chat_id="oc_admin_dm")
    _, status = await ask(fake, admin_status)
    assert "feishu: connected" in status[0]


async def test_after_an_abrupt_cut_and_a_failing_discovery_the_next_question_is_answered(world: World) -> None:
    fake, adapter = world.fake, world.adapter
    reconnects = (await adapter.health()).reconnects
    fake.discovery_failures = 1
    await fake.drop_connections(abrupt=True)
    event, _ = image_message(fake, "img_after_cut", (5, 50, 5))
    _, texts = await ask(fake, event)
    assert texts and not texts[0].startswith("⚠️")
    assert (await adapter.health()).reconnects == reconnects + 1
    assert fake.discovery_failures == 0


async def answered(world: World, question_id: str) -> None:
    """Wait until the core has journaled the question as answered (just after its card was closed)."""

    async def state() -> JobState | None:
        job = await world.app.store.jobs.get(job_id_of("feishu", question_id))
        return None if job is None else job.state

    for _ in range(100):
        if await state() is JobState.ANSWERED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{question_id} was not journaled as answered")


async def test_ratings_over_card_and_event_frames_are_recorded_and_shown_in_stats(world: World) -> None:
    fake = world.fake
    rated = []
    for frame, kind, color in (("card", "helpful", (20, 160, 20)), ("event", "not_helpful", (160, 20, 20))):
        event, question_id = image_message(fake, f"img_rated_{kind}", color)
        await ask(fake, event)
        await answered(world, question_id)
        card_message = fake.replies_to(question_id)[0]
        value = next(v for v in fake.buttons_on(card_message) if v["k"] == kind)
        press = await fake.press(fake.card_action_event(card_message, value, open_id="ou_rater"), frame=frame)
        assert press.code == 200 and press.toast.startswith("Thanks") and press.latency_s < 3.0
        rated.append(card_message)
    await fake.wait_for(lambda: len(fake.buttons_on(rated[1])) == len(REASONS), what="the reason choice")
    reason = next(v for v in fake.buttons_on(rated[1]) if v.get("r") == "incomplete")
    press = await fake.press(fake.card_action_event(rated[1], reason, open_id="ou_rater"), frame="card")
    assert press.toast.startswith("Thanks")

    stats = fake.message_event(msg_type="text", content={"text": "/stats"}, sender_open_id=ADMIN, chat_id="oc_stats")
    _, texts = await ask(fake, stats)
    assert "Helpful: 50 % of 2 rated" in texts[0]
