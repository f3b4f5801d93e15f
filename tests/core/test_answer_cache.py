"""The answer cache answers only the same question in the same context (what the model is actually sent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import Application
from bot.engine import ChatTurn, GenerationRequest
from bot.questions import AnsweredQuestion, answer_cache_key, answer_question
from bot.settings import Settings
from bot.store.sqlite import SQLiteStore
from bot.types import FileRef
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message, save_png


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    return save_png(tmp_path / "error.png", (200, 40, 40), (120, 80))


@pytest.fixture
async def app(start_app: AppStarter) -> Application:
    return await start_app(peekbot_environment(http_port=0, max_pixels=128 * 128), engine=lambda _: FakeEngine())


async def ask(application: Application, text: str, *files, thread: str = "T1") -> RecordingReply:
    reply = RecordingReply()
    assert await application.handle(message(text, *files, thread=thread), reply)
    await reply.wait(30)
    assert await application.wait_idle(30)
    return reply


async def test_the_same_words_after_another_question_are_answered_afresh(app: Application, screenshot: Path) -> None:
    engine = app.engine
    assert isinstance(engine, FakeEngine)
    first = await ask(app, "why?", local_image(screenshot))
    await ask(app, "and what should I do about it?")
    again = await ask(app, "why?")  # same words, same screenshot (from the thread), but a longer history

    assert engine.generations == 3
    assert again.final == "answer 3" != first.final
    assert [turn.text for turn in engine.requests[2].history][-2:] == ["and what should I do about it?", "answer 2"]
    assert app.counters["cached"] == 0


async def test_the_same_question_with_the_same_history_is_served_from_cache(
    screenshot: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    settings = Settings()
    engine, adapter = FakeEngine(), LocalFilesAdapter()

    async def why(history: list[ChatTurn]) -> tuple[RecordingReply, AnsweredQuestion]:
        reply = RecordingReply()
        answered = await answer_question(message("why?", local_image(screenshot)), reply, adapter=adapter,
                                         engine=engine, settings=settings, history=history, store=store)
        return reply, answered

    history = [ChatTurn("user", "what is this?"), ChatTurn("assistant", "a stack trace")]
    results = []
    for _ in range(2):  # e.g. the question asked again after a crash lost its first answer's delivery
        reply, answered = await why(list(history))
        results.append(answered)
        assert reply.final == results[0].answer
    assert engine.generations == 1
    assert [r.cached for r in results] == [False, True]

    await why([ChatTurn("user", "what is this?"), ChatTurn("assistant", "a login page")])
    assert engine.generations == 2, "another history is another question"


def test_the_key_covers_model_system_prompt_length_and_channel_instructions() -> None:
    request = GenerationRequest(
        question="why?", history=[ChatTurn("user", "hi")], system_prompt="Be brief.", max_new_tokens=256
    )
    files = [(FileRef("local", "a.png", "a.png", "image/png"), "hash-a")]
    model = {"backend": "transformers", "model": "Qwen/Qwen3-VL-4B-Instruct"}

    def key(req: GenerationRequest = request, **changes: object) -> str:
        arguments: dict = {"picture_hashes": [], "model": model, **changes}
        return answer_cache_key(req, arguments.pop("files", files), **arguments)

    base = key()
    assert key() == base, "the same inputs give the same key"
    assert (
        key(
            GenerationRequest(
                question="why?",
                history=[ChatTurn("user", "hi")],
                system_prompt="Be brief.",
                max_new_tokens=256,
                timeout_s=5,
            )
        )
        == base
    ), "a deadline does not change the answer"
    different = [
        key(GenerationRequest(question="why?", history=[], system_prompt="Be brief.", max_new_tokens=256)),
        key(
            GenerationRequest(
                question="why?", history=[ChatTurn("user", "hi")], system_prompt="Be long.", max_new_tokens=256
            )
        ),
        key(
            GenerationRequest(
                question="why?", history=[ChatTurn("user", "hi")], system_prompt="Be brief.", max_new_tokens=64
            )
        ),
        key(model={"backend": "transformers", "model": "Qwen/Qwen2.5-VL-7B-Instruct"}),
        key(files=[(files[0][0], "hash-b")]),
        key(instructions="Answer in French."),
    ]
    assert len({base, *different}) == len(different) + 1


def test_the_key_covers_the_engines_sampling_settings() -> None:
    request = GenerationRequest(question="why?", max_new_tokens=256)

    def key(sampling: str | None) -> str:
        model = {"backend": "transformers", "model": "Qwen/Qwen3-VL-4B-Instruct", "sampling": sampling}
        return answer_cache_key(request, [], picture_hashes=[], model=model)

    greedy = key("greedy")
    assert key("greedy") == greedy
    sampled = {key("sampled: temperature 0.7, top_k 20, top_p 0.8"), key("sampled: temperature 1, top_k 20, top_p 0.8")}
    assert len({greedy, *sampled}) == 3, "another way of picking tokens gives another answer"
