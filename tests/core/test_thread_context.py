"""Thread context: a follow-up sees the thread's earlier images and turns, within a token budget."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from PIL import Image

from bot.conversations import StoredConversations
from bot.engine import ChatTurn
from bot.questions import answer_question, fit_context, image_tokens, place_pictures, text_tokens
from bot.settings import Settings
from bot.store.sqlite import SQLiteStore
from bot.types import FileRef
from tests.support.engines import FakeEngine, RecordingEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message

RED, GREEN, BLUE, YELLOW, WHITE = (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (255, 255, 255)
SIDE = 100  # pictures of SIDE×SIDE stay as they are under the test pixel budget


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen25_dir: Path) -> Settings:
    monkeypatch.setenv("PEEKBOT_MODEL", str(tiny_qwen25_dir))
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEEKBOT_MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    monkeypatch.setenv("PEEKBOT_WARMUP", "false")
    return Settings()


def picture(tmp_path: Path, name: str, colour: tuple[int, int, int]) -> FileRef:
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (SIDE, SIDE), colour).save(path)
    return local_image(path)


def colour_of(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((SIDE // 2, SIDE // 2))  # type: ignore[return-value]


def exchange(number: int) -> list[ChatTurn]:
    return [
        ChatTurn("user", f"Question {number}: what does the dashboard say about the nightly build?"),
        ChatTurn("assistant", f"Answer {number}: the nightly build failed at the packaging step, twice."),
    ]


async def test_follow_up_receives_earlier_images_and_turns(tmp_path: Path, settings: Settings) -> None:
    from inference.transformers_engine import TransformersEngine

    earlier = picture(tmp_path, "earlier", RED)
    new = picture(tmp_path, "new", BLUE)
    adapter = LocalFilesAdapter()
    engine = RecordingEngine(TransformersEngine(settings.engine))
    await engine.start()
    try:
        first = RecordingReply()
        answered = await answer_question(message("what is this?", earlier, thread="T7"), first, adapter=adapter,
                                         engine=engine, settings=settings, history=[])
        history = [ChatTurn("user", answered.question), ChatTurn("assistant", answered.answer)]
        follow = RecordingReply()
        # The store remembers the earlier picture and the adapter supplies it again: it is read once.
        result = await answer_question(
            message("and compared with this one?", new, thread="T7", context=(earlier,)),
            follow,
            adapter=adapter,
            engine=engine,
            settings=settings,
            history=history,
            conversation_files=[earlier],
        )
    finally:
        await engine.stop()

    assert follow.error is None and follow.final
    request = engine.requests[-1]
    assert [colour_of(image) for image in request.images] == [RED, BLUE]  # earlier picture first, then the new one
    assert request.history == history
    assert adapter.fetched == ["earlier.png", "new.png", "earlier.png"]
    digest = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("earlier.png", "new.png")}
    assert result.image_hashes == [digest["earlier.png"], digest["new.png"]]
    assert [(file.name, content_hash) for file, content_hash in result.files_seen] == [
        ("new.png", digest["new.png"]),
        ("earlier.png", digest["earlier.png"]),
    ]
    assert "left out" not in follow.final


async def test_a_follow_up_shows_the_picture_where_it_was_sent_and_reuses_the_first_prompt(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    from transformers import AutoTokenizer

    from inference.prompts import build_messages
    from inference.transformers_engine import TransformersEngine

    shot = picture(tmp_path, "shot", RED)
    conversations = StoredConversations(store)
    engine = RecordingEngine(TransformersEngine(settings.engine))
    await engine.start()
    try:
        for text, files in (("what is this?", (shot,)), ("and which colour is it?", ())):
            asked = message(text, *files, thread="T9")
            conversation = str(asked.conversation)
            result = await answer_question(
                asked, RecordingReply(), adapter=LocalFilesAdapter(), engine=engine, settings=settings,
                history=await conversations.history(conversation),
                conversation_files=await conversations.files(conversation), store=store,
            )
            await conversations.remember(conversation, result, asked.message_id)
        saved = engine.stats().prefix_cache["saved_tokens"]
    finally:
        await engine.stop()

    first, follow = engine.requests
    assert [colour_of(image) for image in follow.images] == [RED]
    assert [(turn.role, turn.images) for turn in follow.history] == [("user", 1), ("assistant", 0)]
    assert follow.question_images == 0  # the screenshot stays with the question it came with
    tokenizer = AutoTokenizer.from_pretrained(settings.engine.model)

    def rendered(request: object, question_images: int) -> str:
        messages = build_messages(request.question, question_images, request.history)  # type: ignore[attr-defined]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert rendered(follow, 0).startswith(rendered(first, 1))
    assert saved > 0  # the follow-up prefilled only what came after the first prompt


async def test_budget_drops_the_oldest_images_and_turns_first_and_says_so(tmp_path: Path, settings: Settings,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    context = [picture(tmp_path, name, colour)
               for name, colour in (("a", RED), ("b", GREEN), ("c", BLUE), ("d", YELLOW))]  # oldest first
    own = picture(tmp_path, "own", WHITE)
    history = [*exchange(1), *exchange(2), *exchange(3)]
    question = "what changed since yesterday?"
    fixed = text_tokens(settings.engine.system_prompt) + text_tokens(question) + image_tokens(SIDE, SIDE)
    one_exchange = sum(text_tokens(turn.text) for turn in exchange(3))
    slack = min(image_tokens(SIDE, SIDE), one_exchange) - 1
    monkeypatch.setattr(settings.engine, "context_token_budget", fixed + 2 * image_tokens(SIDE, SIDE) + one_exchange
                        + slack)
    engine = FakeEngine()
    reply = RecordingReply()
    await answer_question(message(question, own, context=tuple(context)), reply, adapter=LocalFilesAdapter(),
                          engine=engine, settings=settings, history=history)

    [request] = engine.requests
    assert [colour_of(image) for image in request.images] == [BLUE, YELLOW, WHITE]  # the newest two, then the own
    assert request.history == exchange(3)
    assert reply.final and reply.final.endswith(
        "_I left out 2 older images and 4 earlier messages from this thread to stay within my limits._"
    )


async def test_own_files_are_kept_even_beyond_the_budget(tmp_path: Path, settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.engine, "context_token_budget", 10)
    engine = FakeEngine()
    reply = RecordingReply()
    await answer_question(
        message("compare", picture(tmp_path, "x", RED), picture(tmp_path, "y", GREEN),
                context=(picture(tmp_path, "old", BLUE),)),
        reply, adapter=LocalFilesAdapter(), engine=engine, settings=settings, history=exchange(1),
    )
    [request] = engine.requests
    assert [colour_of(image) for image in request.images] == [RED, GREEN]
    assert request.history == []
    assert reply.final and "I left out 1 older image and 2 earlier messages" in reply.final


def test_each_earlier_picture_goes_with_the_first_question_that_used_it() -> None:
    history = [
        ChatTurn("user", "q1", stored_at=10.0), ChatTurn("assistant", "a1", stored_at=10.0),
        ChatTurn("user", "q2", stored_at=20.0), ChatTurn("assistant", "a2", stored_at=20.0),
        ChatTurn("user", "q3", stored_at=30.0), ChatTurn("assistant", "a3", stored_at=30.0),
    ]
    red, green, blue, white = (object() for _ in range(4))
    # red and green came with q1, blue with q3; white is a thread file the store never kept
    turns, placed, with_question = place_pictures(history, [red, green, blue, white], [9.0, 9.5, 25.0, math.inf])

    assert [turn.images for turn in turns] == [2, 0, 0, 0, 1, 0]
    assert placed == [red, green, blue] and with_question == [white]
    assert [turn.text for turn in turns] == [turn.text for turn in history]
    # turns without a time (an older store) take no pictures: they go with the question as before
    untimed = [ChatTurn("user", "q1"), ChatTurn("assistant", "a1")]
    assert place_pictures(untimed, [red], [9.0]) == (untimed, [], [red])


def test_fit_context_keeps_newest_within_image_slots() -> None:
    pictures = [Image.new("RGB", (SIDE, SIDE), colour) for colour in (RED, GREEN, BLUE)]

    class Prepared:
        def __init__(self, image: Image.Image) -> None:
            self.image = image

    fit = fit_context(
        fixed_tokens=0,
        context=[Prepared(p) for p in pictures],  # type: ignore[misc]
        history=[ChatTurn("assistant", "an answer whose question is gone"), *exchange(1)],
        budget_tokens=100_000,
        image_slots=2,
    )
    assert [colour_of(p.image) for p in fit.context] == [GREEN, BLUE]
    assert fit.history[0].text.startswith("an answer")  # plenty of room: everything else stays
    assert (fit.dropped_images, fit.dropped_turns) == (1, 0)
    assert fit.note() == "I left out 1 older image from this thread to stay within my limits."


async def test_identical_question_on_identical_files_is_answered_from_cache(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    shot = picture(tmp_path, "shot", RED)
    engine = FakeEngine()

    async def ask(text: str, thread: str) -> tuple[RecordingReply, bool]:
        reply = RecordingReply()
        result = await answer_question(message(text, shot, thread=thread), reply, adapter=LocalFilesAdapter(),
                                       engine=engine, settings=settings, history=[], store=store)
        return reply, result.cached

    first, cached = await ask("what is this?", "T1")
    assert not cached
    again, cached = await ask("what is this?", "T1")
    assert cached and again.final == first.final
    assert len(engine.requests) == 1
    _, cached = await ask("what is this?", "T2")  # another conversation
    assert not cached
    _, cached = await ask("what colour is it?", "T1")  # another question
    assert not cached
    assert len(engine.requests) == 3


async def test_answer_cache_off_asks_the_model_every_time(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    settings.core.answer_cache_ttl_s = 0
    shot = picture(tmp_path, "shot", RED)
    engine = FakeEngine()
    for _ in range(2):
        result = await answer_question(message("what is this?", shot, thread="T1"), RecordingReply(),
                                       adapter=LocalFilesAdapter(), engine=engine, settings=settings, history=[],
                                       store=store)
        assert not result.cached
    assert len(engine.requests) == 2
