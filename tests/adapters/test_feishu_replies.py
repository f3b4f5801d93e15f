"""How answers appear in Feishu: typing reaction, streaming card, fallback card, splitting, rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.feishu.replies import FeishuReply
from adapters.feishu.rest import FeishuRest
from adapters.feishu.settings import FeishuSettings
from adapters.kit.text import progress_text, split_text
from bot.settings import Settings
from tests.support.fake_feishu import FakeFeishu, feishu_environment


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu() as server:
        yield server


def feishu_settings(monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, **overrides: str) -> FeishuSettings:
    for key, value in feishu_environment(fake, **overrides).items():
        monkeypatch.setenv(key, value)
    return Settings().section(FeishuSettings)


class Tasks:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro):  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task


@pytest.fixture
async def clients() -> AsyncIterator[list[FeishuRest]]:
    """Every ``FeishuRest`` a test starts; closed at its end."""
    started: list[FeishuRest] = []
    yield started
    for rest in started:
        await rest.close()


async def make_reply(
    fake: FakeFeishu, settings: FeishuSettings, clients: list[FeishuRest]
) -> tuple[FeishuReply, str]:
    question = fake.add_message(chat_id="oc_dm", msg_type="text", content={"text": "what is this?"})
    rest = FeishuRest(settings)
    await rest.start()
    clients.append(rest)
    reply = FeishuReply(rest, question.message_id, settings=settings, in_thread=False, spawn=Tasks().spawn)
    return reply, question.message_id


async def test_progress_then_streamed_answer_in_one_card(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    await reply.start_progress(None)
    assert list(fake.reactions[question].values()) == ["Typing"]
    assert fake.reply_texts(question) == ["Looking at it…"]

    await reply.start_progress(3)
    assert fake.reply_texts(question) == ["Queued — 3 questions ahead of yours."]

    words = [f"word{i}" for i in range(40)]
    for i in range(len(words)):
        await reply.update(" ".join(words[: i + 1]))
        await asyncio.sleep(0.005)
    await fake.wait_for(lambda: "word" in fake.reply_texts(question)[0], what="a streamed edit")
    await reply.finish(" ".join(words))

    [message] = fake.replies_to(question)
    card = fake.card_of(message)
    assert card is not None and not card.streaming  # the streaming card was closed
    assert fake.visible_text(message) == " ".join(words)
    assert 1 <= card.updates < len(words) + 2  # edits were coalesced
    assert fake.reactions[question] == {}  # "Typing" removed


async def test_rate_limited_card_edits_still_deliver_the_final_answer(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    await reply.start_progress()
    fake.fail("PUT", r"/cardkit/v1/cards/.+/content$", times=4)
    fake.fail("POST", r"/cardkit/v1/cards/.+/batch_update$", times=1)
    await reply.update("partial")
    await asyncio.sleep(0.1)
    await reply.finish("The complete answer.")
    assert fake.reply_texts(question) == ["The complete answer."]
    rate_limited = [c for c in fake.calls_to("PUT", "/content$") if c.status == 429]
    assert len(rate_limited) == 4
    card = fake.card_of(fake.replies_to(question)[0])
    assert card is not None and not card.streaming
    assert [v["k"] for v in fake.buttons_on(fake.replies_to(question)[0])] == ["helpful", "not_helpful"]
    assert [c.status for c in fake.calls_to("POST", "/batch_update$")] == [429, 200]


async def test_without_cardkit_the_reply_is_an_edited_card_message(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    fake.fail("POST", r"/cardkit/v1/cards$", status=400, code=99991672, message="Access denied: cardkit:card:write")
    await reply.start_progress()
    fake.fail("PATCH", rf"/im/v1/messages/{fake.replies_to(question)[0].message_id}$", times=2)
    await reply.update("half an answer")
    await reply.update("half an answer, and more")
    await asyncio.sleep(0.2)
    await reply.finish("the whole answer")
    [message] = fake.replies_to(question)
    assert fake.card_of(message) is None and message.msg_type == "interactive"
    assert fake.visible_text(message) == "the whole answer"
    assert message.edits >= 1


async def test_long_answers_are_split_into_several_messages(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    settings = feishu_settings(monkeypatch, fake, FEISHU_MAX_REPLY_CHARS="500")
    reply, question = await make_reply(fake, settings, clients)
    await reply.start_progress()
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 15 for i in range(6)]  # 3 messages (more: a file)
    answer = "\n\n".join(p.strip() for p in paragraphs)
    await reply.finish(answer)
    texts = fake.reply_texts(question)
    assert len(texts) >= 3
    assert all(len(t) <= 500 for t in texts)
    assert " ".join(" ".join(texts).split()) == " ".join(answer.split())


async def test_failure_is_shown_in_the_card_and_typing_removed(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    await reply.start_progress()
    await reply.fail("Sorry, the GPU ran out of memory.")
    assert fake.reply_texts(question) == ["⚠️ Sorry, the GPU ran out of memory."]
    assert fake.reactions[question] == {}


async def test_rate_limited_reply_is_retried_not_dropped(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    fake.fail("POST", r"/reply$", times=2)
    await reply.finish("/help text")
    assert fake.reply_texts(question) == ["/help text"]
    assert [c.status for c in fake.calls_to("POST", "/reply$")] == [429, 429, 200]


def test_split_text_and_progress_text() -> None:
    assert split_text("short", 100) == ["short"]
    pieces = split_text("a" * 250, 100)
    assert pieces == ["a" * 100, "a" * 100, "a" * 50]
    assert progress_text(None) == "Looking at it…"
    assert progress_text(1) == "Queued — 1 question ahead of yours."


async def test_revoked_tenant_token_is_renewed(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, clients: list[FeishuRest]
) -> None:
    reply, question = await make_reply(fake, feishu_settings(monkeypatch, fake), clients)
    await reply.start_progress()
    fake.revoke_tokens()
    await reply.finish("answer after a new token")
    assert fake.reply_texts(question) == ["answer after a new token"]
    assert fake.calls_to("PUT", "/content$")[-1].status == 200
    assert any(c.status == 400 for c in fake.calls_to("PUT", "/content$"))  # the stale token was refused once
