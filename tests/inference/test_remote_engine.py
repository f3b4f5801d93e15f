"""The remote backend (``PEEKBOT_BACKEND=openai``) against a loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from bot.engine import ChatTurn, GenerationRequest, answering_job
from bot.errors import Busy, Cancelled, DeadlineExceeded, EngineError, EngineUnavailable
from bot.settings import SchedulerSettings, Settings
from inference.factory import create_engine
from inference.remote import OpenAIEngine, PromptTooLong, ServerBusy
from scheduler.jobs import EngineLiveness, EngineStuck, MemoryCleanup
from scheduler.runner import JobSkipped
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.helpers import LocalFilesAdapter, RecordingReply, local_image, message
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "I see 1 image. The dialog says: disk quota exceeded."


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeOpenAI) -> Callable[..., Settings]:
    """Sets the environment for the remote backend; call it with overrides (``openai_retries=1`` …)."""
    monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)
    base = {
        "PEEKBOT_BACKEND": "openai",
        "PEEKBOT_OPENAI_BASE_URL": server.base_url,
        "PEEKBOT_OPENAI_MODEL": server.model,
        "PEEKBOT_OPENAI_API_KEY": server.api_key or "",
        "PEEKBOT_OPENAI_RETRY_BACKOFF_S": "0.01",
        "PEEKBOT_OPENAI_CONNECT_TIMEOUT_S": "2",
        "PEEKBOT_DATA_DIR": str(tmp_path / "data"),
        "PEEKBOT_HTTP_PORT": "0",
        "PEEKBOT_MAX_PIXELS": str(256 * 256),
    }

    def configure(**overrides: object) -> Settings:
        for name, value in {**base, **{f"PEEKBOT_{k.upper()}": str(v) for k, v in overrides.items()}}.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return configure


@pytest.fixture
async def engine_for(remote_env: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[OpenAIEngine]]]:
    """Builds (through the factory) and starts remote engines; stops them after the test."""
    started: list[OpenAIEngine] = []

    async def build(**overrides: object) -> OpenAIEngine:
        engine = create_engine(remote_env(**overrides))
        assert isinstance(engine, OpenAIEngine)
        await engine.start()
        started.append(engine)
        return engine

    yield build
    for engine in started:
        await engine.stop()


def screenshot(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 30))


async def collect(stream) -> list[str]:  # type: ignore[no-untyped-def]
    return [chunk async for chunk in stream]


wait_until = functools.partial(eventually, timeout=5.0, interval=0.01)


async def answer_held(server: FakeOpenAI, engine: OpenAIEngine, question: str) -> Any:
    """From now on the server holds its answers back (until ``server.hold.set()``); ``question``'s stream, once the
    server is answering it."""
    server.hold = asyncio.Event()
    stream = engine.submit(GenerationRequest(question=question))
    await wait_until(lambda: server.active == 1)
    return stream


# ---------------------------------------------------------------- streaming answers


async def test_answer_streams_with_images_history_and_system_prompt(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(max_new_tokens=64)
    request = GenerationRequest(
        question="What does the dialog say?",
        images=[screenshot()],
        history=[ChatTurn("user", "hello"), ChatTurn("assistant", "Hi! Send me a screenshot.")],
        system_prompt="You are a terse helpdesk bot.",
    )
    stream = engine.submit(request)
    assert stream.request_id == request.request_id and stream.queue_position == 0
    chunks = await collect(stream)

    assert len(chunks) > 3 and "".join(chunks) == ANSWER
    assert stream.usage.generated_tokens == len(ANSWER.split(" "))
    assert stream.usage.prompt_tokens > 256  # the image's tokens, as the server counted them
    assert stream.usage.time_to_first_token_s is not None
    sent = server.requests[0]
    assert sent.headers["Authorization"] == f"Bearer {server.api_key}"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0 and sent.body["max_tokens"] == 64
    system, *history, question = sent.messages
    assert system["role"] == "system" and system["content"].startswith("You are a terse helpdesk bot.")
    assert history == [{"role": "user", "content": "hello"},
                       {"role": "assistant", "content": "Hi! Send me a screenshot."}]
    assert question["role"] == "user" and question["content"][-1] == {"type": "text", "text": request.question}
    assert sent.image_urls[0].startswith("data:image/png;base64,")
    assert [(image.mime_type, image.size) for image in sent.images] == [("image/png", (64, 48))]
    stats = engine.stats()
    assert stats.ready and stats.requests_by_outcome["answered"] == 1
    assert stats.generated_tokens == len(ANSWER.split(" ")) and stats.device.startswith("remote 127.0.0.1:")
    assert engine.describe()["backend"] == "openai" and engine.describe()["api_key"] == "set"
    assert server.api_key not in repr(engine.describe())


async def test_earlier_pictures_are_sent_with_the_turn_that_showed_them(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(max_new_tokens=64)
    request = GenerationRequest(
        question="And this one?",
        images=[screenshot(), screenshot()],
        history=[ChatTurn("user", "What is this?", images=1), ChatTurn("assistant", "A dialog.")],
    )
    await collect(engine.submit(request))

    _, first, answer, question = server.requests[0].messages
    assert [part["type"] for part in first["content"]] == ["image_url", "text"]
    assert first["content"][-1]["text"] == "What is this?"
    assert answer == {"role": "assistant", "content": "A dialog."}
    assert [part["type"] for part in question["content"]] == ["image_url", "text"]


async def test_jpeg_images_and_the_length_limit(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(openai_image_format="jpeg")
    stream = engine.submit(GenerationRequest(question="what?", images=[screenshot(), screenshot((32, 32))],
                                             max_new_tokens=3))
    assert await stream.text() == "I see 2 "  # three tokens: cut at max_tokens
    assert [(i.mime_type, i.size) for i in server.requests[0].images] == [("image/jpeg", (64, 48)),
                                                                          ("image/jpeg", (32, 32))]


async def test_a_server_that_ignores_stream_true_still_answers(remote_env) -> None:
    async with FakeOpenAI(ignores_stream=True) as plain:
        engine = create_engine(remote_env(openai_base_url=plain.base_url))
        async with engine:
            stream = engine.submit(GenerationRequest(question="q", images=[screenshot()]))
            assert await stream.text() == ANSWER
            assert stream.usage.generated_tokens == len(ANSWER.split(" "))


# ------------------------------------------------------------------------ retries


async def test_500_and_429_before_the_first_token_are_retried(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    server.faults.extend([Fault.http(500), Fault.http(429, "Too Many Requests", retry_after="0.05"),
                          Fault.disconnect(after_chunks=0)])
    started = time.monotonic()
    assert await engine.submit(GenerationRequest(question="q", images=[screenshot()])).text() == ANSWER
    assert [r.status for r in server.requests] == [500, 429, 200, 200]
    assert time.monotonic() - started >= 0.05  # Retry-After was honoured
    assert engine.stats().requests_by_outcome["answered"] == 1


async def test_retries_run_out_with_a_clear_sentence(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(openai_retries=2)
    server.faults.extend([Fault.http(503, "Service Unavailable")] * 3 + [Fault.http(429, "slow down")] * 3)
    with pytest.raises(EngineUnavailable) as failed:
        await engine.submit(GenerationRequest(question="q")).text()
    assert "model server is having trouble" in failed.value.user_message
    with pytest.raises(ServerBusy) as busy:
        await engine.submit(GenerationRequest(question="q")).text()
    assert "overloaded" in busy.value.user_message
    assert len(server.requests) == 6  # 1 + 2 retries each
    outcomes = engine.stats().requests_by_outcome
    assert outcomes["unavailable"] == 1 and outcomes["busy"] == 1


async def test_nothing_is_retried_once_text_was_streamed(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    server.faults.append(Fault.disconnect(after_chunks=2))
    seen: list[str] = []
    with pytest.raises(EngineError) as failed:
        async for chunk in engine.submit(GenerationRequest(question="q", images=[screenshot()])):
            seen.append(chunk)
    assert "broke in the middle of the answer" in failed.value.user_message
    text = "".join(seen)
    assert text and ANSWER.startswith(text) and len(text) < len(ANSWER)  # what came before the break, once
    assert len(server.requests) == 1


async def test_an_error_event_mid_stream_fails_the_answer(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    server.faults.append(Fault.error_event(after_chunks=1, message="The engine died"))
    with pytest.raises(EngineError) as failed:
        await engine.submit(GenerationRequest(question="q")).text()
    assert "failed while answering" in failed.value.user_message and "engine died" in str(failed.value)


async def test_an_unreachable_server_is_reported_not_fatal_at_start(remote_env, caplog) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    engine = create_engine(remote_env(openai_base_url=f"http://127.0.0.1:{closed_port}/v1", openai_retries=1))
    await engine.start()
    try:
        assert "does not answer yet" in caplog.text
        with pytest.raises(EngineUnavailable) as failed:
            await engine.submit(GenerationRequest(question="q")).text()
        assert "cannot be reached" in failed.value.user_message
    finally:
        await engine.stop()


# ---------------------------------------------------------- configuration errors


async def test_a_wrong_api_key_or_model_stops_the_start(server: FakeOpenAI, remote_env) -> None:
    for override, expected in (({"openai_api_key": "sk-wrong"}, "PEEKBOT_OPENAI_API_KEY"),
                               ({"openai_model": "Qwen/Other"}, "PEEKBOT_OPENAI_MODEL")):
        engine = create_engine(remote_env(**override))
        with pytest.raises(EngineUnavailable, match=expected):
            await engine.start()
        assert not engine.stats().ready


async def test_401_404_and_context_length_give_user_facing_sentences(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    server.api_key = "sk-rotated"
    with pytest.raises(EngineUnavailable) as refused:
        await engine.submit(GenerationRequest(question="q")).text()
    assert refused.value.user_message == ("Sorry, I can't answer right now: the model server refused the bot's "
                                          "API key, so an admin needs to check the bot's configuration.")
    server.api_key, server.model = "sk-test-key", "Qwen/Renamed"
    with pytest.raises(EngineUnavailable) as unknown:
        await engine.submit(GenerationRequest(question="q")).text()
    assert "does not know the configured model" in unknown.value.user_message
    server.model, server.max_model_len = engine.model, 600
    with pytest.raises(PromptTooLong) as too_long:
        await engine.submit(GenerationRequest(question="q", images=[screenshot(), screenshot()])).text()
    assert "too long for the model" in too_long.value.user_message
    assert "maximum context length is 600" in str(too_long.value)
    assert [r.status for r in server.requests] == [401, 404, 400]  # none of these is retried


def test_the_factory_names_what_is_missing(remote_env) -> None:
    with pytest.raises(EngineUnavailable, match="needs PEEKBOT_OPENAI_MODEL"):
        create_engine(remote_env(openai_model=""))
    with pytest.raises(EngineUnavailable, match="not an http"):
        create_engine(remote_env(openai_base_url="vllm:8000"))


# ------------------------------------------------------- queue, deadline, cancel


async def test_concurrency_is_bounded_and_a_full_queue_is_busy(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(openai_max_concurrency=1, queue_limit=1)
    first = await answer_held(server, engine, "one")
    second = engine.submit(GenerationRequest(question="two"))
    assert (first.queue_position, second.queue_position) == (0, 1)
    with pytest.raises(Busy) as busy:
        engine.submit(GenerationRequest(question="three"))
    assert busy.value.queue_limit == 1 and "busy" in busy.value.user_message
    stats = engine.stats()
    assert (stats.queue_depth, stats.in_flight) == (1, 1)
    server.hold.set()
    assert await first.text() == await second.text() == "I see 0 images. The dialog says: disk quota exceeded."
    assert server.max_active == 1
    assert engine.stats().requests_by_outcome["busy"] == 1
    assert engine.stats().queue_wait_p95_s is not None


async def test_deadline_covers_a_slow_first_token_and_closes_the_connection(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    server.faults.append(Fault.slow_first_token(30.0))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as late:
        await engine.submit(GenerationRequest(question="q", timeout_s=0.3)).text()
    assert time.monotonic() - started < 10
    assert "answering took longer than" in late.value.user_message
    await wait_until(lambda: server.requests[0].aborted)  # the server sees the client leave and stops
    assert engine.stats().requests_by_outcome["timeout"] == 1

    server.faults.append(Fault.slow_first_token(0.2))  # slow but within the deadline: answered
    stream = engine.submit(GenerationRequest(question="q", images=[screenshot()], timeout_s=20))
    assert await stream.text() == ANSWER
    assert stream.usage.time_to_first_token_s is not None and stream.usage.time_to_first_token_s >= 0.2


async def test_a_stall_mid_answer_fails_it_with_the_partial_text_kept(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(openai_stall_timeout_s=0.3)
    server.faults.append(Fault.stall(after_chunks=2))
    seen: list[str] = []
    with pytest.raises(EngineError) as stalled:
        async for chunk in engine.submit(GenerationRequest(question="q", images=[screenshot()], timeout_s=30)):
            seen.append(chunk)
    assert "stopped sending the answer" in stalled.value.user_message
    assert "".join(seen) == "I see "
    assert len(server.requests) == 1


async def test_cancel_stops_the_answer_and_the_server_request(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    stream = await answer_held(server, engine, "q")
    stream.cancel()
    with pytest.raises(Cancelled):
        await stream.text()
    await wait_until(lambda: server.requests[0].aborted)
    await wait_until(lambda: engine.stats().in_flight == 0)
    assert engine.stats().requests_by_outcome["cancelled"] == 1


async def test_stop_fails_waiting_requests_and_refuses_new_ones(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for(openai_max_concurrency=1, stop_timeout_s=0.2)
    running = await answer_held(server, engine, "one")
    waiting = engine.submit(GenerationRequest(question="two"))
    await engine.stop()
    for stream in (running, waiting):
        with pytest.raises(EngineUnavailable, match="shutting down"):
            await stream.text()
    with pytest.raises(EngineUnavailable):
        engine.submit(GenerationRequest(question="three"))


# ------------------------------------------------------------ scheduler and core


async def test_liveness_pings_the_server_and_cleanup_is_skipped(server: FakeOpenAI, engine_for) -> None:
    engine = await engine_for()
    app = SimpleNamespace(engine=engine)
    liveness = EngineLiveness(app, SchedulerSettings(liveness_timeout_s=2))  # type: ignore[arg-type]
    listings = server.model_listings
    result = await liveness.run()
    assert liveness.alive is True and "model server answered" in result.detail
    assert server.model_listings == listings + 1
    with pytest.raises(JobSkipped, match="no local model"):
        await MemoryCleanup(app, SchedulerSettings()).run()  # type: ignore[arg-type]
    report = await engine.cleanup(force=True, fragmentation_threshold=0.3, unused_reserved_bytes=0, timeout_s=1)
    assert not engine.in_process and report.skipped is not None and "remote server" in report.skipped
    await server.stop()
    with pytest.raises(EngineStuck, match="cannot be reached"):
        await liveness.run()
    assert liveness.alive is False and liveness.stuck_count == 1


async def test_streaming_requests_are_listed_and_a_silent_server_never_ends_the_bot(
    server: FakeOpenAI, engine_for
) -> None:
    engine = await engine_for()
    server.faults.append(Fault.stall(after_chunks=1))
    token = answering_job.set("slack:M1")  # what the application sets while it answers that question
    try:
        stream = engine.submit(GenerationRequest("What does the dialog say?"))
    finally:
        answering_job.reset(token)
    await eventually(lambda: bool(engine.running_requests()), what="the answer to start streaming")
    assert [request.job_id for request in engine.running_requests()] == ["slack:M1"]
    stream.cancel()

    given_up: list[str] = []
    app = SimpleNamespace(engine=engine, engine_stuck=given_up.append)
    liveness = EngineLiveness(app, SchedulerSettings(liveness_timeout_s=1, engine_stuck_exit_s=0.05))  # type: ignore[arg-type]
    await server.stop()
    for _ in range(2):
        with pytest.raises(EngineStuck):
            await liveness.run()
        await asyncio.sleep(0.1)
    # Restarting the bot would not bring a remote server back: only /readyz fails.
    assert liveness.stuck_for_s() > 0.05 and given_up == [] and not liveness.gave_up


async def test_application_answers_an_image_question_through_the_remote_server(
    server: FakeOpenAI, remote_env, tmp_path: Path
) -> None:
    from bot.wiring import build_application

    settings = remote_env()
    shot = tmp_path / "error.png"
    screenshot((120, 80)).save(shot)
    adapter = LocalFilesAdapter()
    async with build_application(settings, adapters=[adapter]) as app:
        assert isinstance(app.engine, OpenAIEngine)  # built by the factory from PEEKBOT_BACKEND
        reply = RecordingReply()
        assert await app.handle(message("what went wrong?", local_image(shot), thread="T7"), reply)
        await reply.wait(20)
        assert reply.error is None and reply.final is not None
        assert reply.final.startswith(ANSWER) and reply.updates
        sent = server.requests[-1]
        assert sent.image_urls[0].startswith("data:image/png;base64,") and sent.images[0].size == (120, 80)
        assert sent.messages[-1]["content"][-1]["text"] == "what went wrong?"

        follow = RecordingReply()
        assert await app.handle(message("and how do I fix it?", thread="T7"), follow)
        await follow.wait(20)
        assert follow.error is None
        earlier = [m for m in server.requests[-1].messages if m["role"] == "assistant"]
        assert earlier and earlier[-1]["content"].startswith(ANSWER)  # the thread's history went along

        server.api_key = "sk-rotated"
        failed = RecordingReply()
        assert await app.handle(message("again?", local_image(shot), thread="T8"), failed)
        await failed.wait(20)
        assert failed.error is not None and "refused the bot's API key" in failed.error


def test_doctor_reports_the_remote_backend_without_loading_torch(server: FakeOpenAI, remote_env) -> None:
    remote_env()
    code = (
        "import sys\nfrom bot.cli import main\nrc = main(['doctor'])\n"
        "from bot.settings import Settings\nfrom inference.factory import create_engine\n"
        "create_engine(Settings())\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was loaded'\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FEISHU_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"model: remote OpenAI-compatible server {server.base_url}, model {server.model}, API key set" in done.stdout
    assert "gpu: not needed here" in done.stdout

    env["PEEKBOT_OPENAI_BASE_URL"] = server.base_url.removesuffix("/v1")
    env["PEEKBOT_OPENAI_MODEL"] = ""
    done = subprocess.run([sys.executable, "-m", "bot.cli", "doctor"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "[FAIL] model: PEEKBOT_BACKEND=openai needs PEEKBOT_OPENAI_MODEL" in done.stdout
