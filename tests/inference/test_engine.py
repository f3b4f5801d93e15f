"""The in-process engine on tiny real models: streaming, cancellation, deadlines, OOM ladder, lifecycle."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from bot.engine import GenerationRequest
from bot.errors import Busy, Cancelled, DeadlineExceeded, EngineUnavailable, OutOfMemory
from inference.transformers_engine import MAX_PIXEL_REDUCTIONS
from tests.inference.test_engine_helpers import WAIT_S, collect, load_tiny, paused, question, running_engine
from tests.support.gpu_faults import OutOfMemoryFaults

LONG = 20_000  # more tokens than any test waits for: such a request only ends by cancel, deadline or stop


def _endless(text: str = "Tell me everything.", **kwargs) -> GenerationRequest:
    return question(text, max_new_tokens=LONG, min_new_tokens=LONG, **kwargs)


async def _started(stream):
    """Wait for the first chunk; returns the live iterator (dropping it would cancel the request)."""
    iterator = aiter(stream)
    assert await asyncio.wait_for(anext(iterator), WAIT_S)
    return iterator


async def still_answers(engine, text: str) -> None:
    """The engine answers a short question (three tokens), whatever happened before."""
    stream = engine.submit(question(text, max_new_tokens=3, min_new_tokens=3))
    assert await asyncio.wait_for(stream.text(), WAIT_S)


async def _drain(iterator) -> None:
    async for _ in iterator:
        pass


# --------------------------------------------------------------------------- streaming


async def test_streaming_yields_chunks_that_add_up_to_the_answer(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir) as engine:
        stream = engine.submit(question("Describe it at length, please.", max_new_tokens=40, min_new_tokens=40))
        chunks = [chunk async for chunk in stream]
        text = await stream.text()
    tokenizer = load_tiny(str(tiny_qwen3_dir)).tokenizer
    assert len(chunks) > 1
    assert "".join(chunks) == text
    assert text == tokenizer.decode(stream.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert stream.usage.generated_tokens == 40 == len(stream.token_ids)
    assert stream.usage.prompt_tokens > 40  # system prompt + image tokens + question
    assert stream.usage.time_to_first_token_s is not None
    assert 0 < stream.usage.time_to_first_token_s <= stream.usage.total_s


async def test_text_only_question_and_several_images(tiny_qwen25_dir):
    async with running_engine(tiny_qwen25_dir) as engine:
        plain = engine.submit(GenerationRequest(question="Hello, who are you?", max_new_tokens=5, min_new_tokens=5))
        several = engine.submit(question("Compare these.", images=3, size=(80, 60), max_new_tokens=5, min_new_tokens=5))
        assert await asyncio.wait_for(plain.text(), WAIT_S)
        assert await asyncio.wait_for(several.text(), WAIT_S)
    assert several.usage.prompt_tokens > plain.usage.prompt_tokens
    assert several.usage.generated_tokens == plain.usage.generated_tokens == 5


def test_incremental_decoder_never_splits_characters(tiny_qwen3_dir):
    from inference.transformers_engine import IncrementalDecoder

    tokenizer = load_tiny(str(tiny_qwen3_dir)).tokenizer
    text = "Fehler: Datei nicht gefunden 🙂 — 文件未找到 ✅ ok"
    ids = tokenizer.encode(text, add_special_tokens=False)

    def decode(chunk):
        return tokenizer.decode(chunk, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    assert any("\ufffd" in decode([token]) for token in ids), "the sample must contain split characters"
    decoder = IncrementalDecoder(decode)
    deltas = [decoder.push(token) for token in ids]
    deltas.append(decoder.flush())
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas[:-1], "some tokens must have been held back"


# ----------------------------------------------------------------- cancel and deadline


async def test_cancelled_queued_request_frees_its_slot(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, queue_limit=1, max_batch_size=1) as engine:
        async with paused(engine):
            waiting = engine.submit(question("first"))
            with pytest.raises(Busy):
                engine.submit(question("second"))
            waiting.cancel()
            assert engine.stats().queue_depth == 0
            second = engine.submit(question("second", max_new_tokens=3, min_new_tokens=3))
            assert second.queue_position == 0
        with pytest.raises(Cancelled):
            await asyncio.wait_for(waiting.text(), WAIT_S)
        assert await asyncio.wait_for(second.text(), WAIT_S)
        stats = engine.stats()
    assert stats.requests_by_outcome["cancelled"] == 1
    assert stats.requests_by_outcome["answered"] == 1
    assert stats.requests_by_outcome["busy"] == 1


async def test_cancelled_running_request_frees_its_slot(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, queue_limit=1, max_batch_size=1) as engine:
        running = engine.submit(_endless())
        iterator = await _started(running)
        queued = engine.submit(question("next", max_new_tokens=3, min_new_tokens=3))
        with pytest.raises(Busy):
            engine.submit(question("one too many"))
        assert engine.stats().in_flight == 1

        running.cancel()
        with pytest.raises(Cancelled):
            await asyncio.wait_for(_drain(iterator), WAIT_S)
        # Only a freed batch slot lets the queued request run: the cancelled one would take minutes.
        assert await asyncio.wait_for(queued.text(), WAIT_S)
        await still_answers(engine, "after")
        assert engine.stats().requests_by_outcome["cancelled"] == 1


async def test_abandoning_the_stream_cancels_the_request(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, max_batch_size=1) as engine:
        stream = engine.submit(_endless())
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in stream:
                started.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), WAIT_S)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await still_answers(engine, "next")
        assert engine.stats().requests_by_outcome["cancelled"] == 1


async def test_deadline_exceeded_while_generating_then_serves_on(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir) as engine:
        slow = engine.submit(_endless(timeout_s=1.0))
        with pytest.raises(DeadlineExceeded) as caught:
            await asyncio.wait_for(slow.text(), WAIT_S)
        assert "1 s" in caught.value.user_message
        await still_answers(engine, "quick one")
        stats = engine.stats()
    assert stats.requests_by_outcome["timeout"] == 1
    assert stats.requests_by_outcome["answered"] == 1


async def test_deadline_exceeded_while_still_queued(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir) as engine:
        async with paused(engine):
            stream = engine.submit(question("waiting", timeout_s=0.2))
            with pytest.raises(DeadlineExceeded):
                await asyncio.wait_for(stream.text(), WAIT_S)
            assert engine.stats().queue_depth == 0
        assert engine.stats().requests_by_outcome["timeout"] == 1


# ----------------------------------------------------------------------- OOM ladder


async def _ask_three(engine, big_size=(320, 256), small_images=1):
    async with paused(engine):
        small = [engine.submit(question(f"small {i}", images=small_images, size=(64, 64), seed=i, max_new_tokens=4,
                                        min_new_tokens=4))
                 for i in range(2)]
        big = engine.submit(question("big", size=big_size, seed=7, max_new_tokens=4, min_new_tokens=4))
    return small, big


@pytest.mark.parametrize("scheduling", ["continuous", "static"])
async def test_oom_ladder_splits_then_lowers_pixel_budget(tiny_qwen3_dir, scheduling):
    loaded = load_tiny(str(tiny_qwen3_dir))
    async with running_engine(tiny_qwen3_dir, max_batch_size=4, scheduling=scheduling) as engine:
        # Batches of several rows never fit; a single image fits below 40 image tokens.
        with OutOfMemoryFaults(loaded.model, step_fails=lambda rows, _: rows > 1,
                               image_fails=lambda tokens: tokens > 40) as faults:
            small, big = await _ask_three(engine)
            answers = [await asyncio.wait_for(s.text(), WAIT_S) for s in [*small, big]]
        stats = engine.stats()
    assert all(answers)
    assert faults.steps[0] > 1, "the requests first decoded as one batch"
    batched = max(i for i, rows in enumerate(faults.steps) if rows > 1)
    assert set(faults.steps[batched + 1 :]) == {1}, "after the batch was split, rows decoded one at a time"
    big_attempts = [tokens for tokens in faults.images if tokens > 16]
    assert big_attempts[0] > 40 >= big_attempts[-1], "the big image's pixel budget was lowered until it fit"
    assert big_attempts == sorted(big_attempts, reverse=True) and len(set(big_attempts)) > 1
    assert stats.requests_by_outcome["answered"] == 3
    assert stats.requests_by_outcome["oom"] == 0
    assert stats.oom_events >= 3


async def test_oom_that_never_fits_fails_only_that_request(tiny_qwen3_dir):
    loaded = load_tiny(str(tiny_qwen3_dir))
    async with running_engine(tiny_qwen3_dir, max_batch_size=4) as engine:
        # Several rows never fit, and neither does the big question's image at any pixel budget (the small
        # questions have no image).
        with OutOfMemoryFaults(loaded.model, step_fails=lambda rows, _: rows > 1,
                               image_fails=lambda tokens: True) as faults:
            small, big = await _ask_three(engine, big_size=(448, 448), small_images=0)
            for stream in small:
                assert await asyncio.wait_for(stream.text(), WAIT_S)
            with pytest.raises(OutOfMemory) as caught:
                await asyncio.wait_for(big.text(), WAIT_S)
        assert "smaller images" in caught.value.user_message
        again = engine.submit(question("after the storm", max_new_tokens=3, min_new_tokens=3))
        assert await asyncio.wait_for(again.text(), WAIT_S)
        stats = engine.stats()
    big_attempts = faults.images
    sizes = sorted(set(big_attempts), reverse=True)
    assert 3 <= len(sizes) <= 1 + MAX_PIXEL_REDUCTIONS
    assert big_attempts == sorted(big_attempts, reverse=True), "each retry of the big image was smaller"
    assert stats.requests_by_outcome["oom"] == 1
    assert stats.requests_by_outcome["answered"] == 3


@pytest.mark.parametrize("scheduling", ["continuous", "static"])
async def test_retry_after_oom_does_not_repeat_streamed_text(tiny_qwen3_dir, scheduling):
    requests = [GenerationRequest(question=q, max_new_tokens=10, min_new_tokens=10) for q in ("Hi there", "Hallo du")]
    loaded = load_tiny(str(tiny_qwen3_dir))

    async with running_engine(tiny_qwen3_dir, max_batch_size=2, scheduling=scheduling) as engine:
        reference = [await asyncio.wait_for(engine.submit(r).text(), WAIT_S) for r in requests]
        # The batched rows stream three tokens each; feeding the third runs out of memory.
        with OutOfMemoryFaults(loaded.model, step_fails=lambda rows, count: rows == 2 and count == 3) as faults:
            async with paused(engine):
                streams = [engine.submit(GenerationRequest(question=r.question, max_new_tokens=10, min_new_tokens=10))
                           for r in requests]
            results = [await asyncio.wait_for(collect(s), WAIT_S) for s in streams]
        stats = engine.stats()

    assert faults.steps[:3] == [2, 2, 2] and set(faults.steps[3:]) == {1}, "the batch was split after the failure"
    assert stats.oom_events == 1
    for (chunks, text), expected in zip(results, reference, strict=True):
        assert "".join(chunks) == text == expected


# -------------------------------------------------------------------- worker access


async def test_run_on_worker_runs_on_the_worker_thread(tiny_qwen3_dir):
    from inference.memory import cleanup

    async with running_engine(tiny_qwen3_dir) as engine:
        name = await engine.run_on_worker(lambda: threading.current_thread().name, timeout_s=WAIT_S)
        assert name == "peekbot-engine"
        assert name != threading.current_thread().name
        report = await engine.run_on_worker(lambda: cleanup("cpu"), timeout_s=WAIT_S)
        assert report["emptied_cache"] is False
        assert report["before"]["host_rss_bytes"] > 0

        with pytest.raises(ZeroDivisionError):
            await engine.run_on_worker(lambda: 1 / 0, timeout_s=WAIT_S)
        assert await engine.run_on_worker(lambda: "still alive", timeout_s=WAIT_S) == "still alive"


async def test_ping_and_cleanup_are_answered_by_the_worker_between_batches(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir) as engine:
        assert engine.in_process  # a hung worker is healed by restarting the process
        assert 0 <= await engine.ping(WAIT_S) < WAIT_S
        report = await engine.cleanup(force=True, fragmentation_threshold=0.3, unused_reserved_bytes=1 << 30,
                                      timeout_s=WAIT_S)
        assert report.skipped is None and report.figures["emptied_cache"] is False  # no GPU memory on CPU
        assert report.figures["after"]["host_rss_bytes"] > 0
        async with paused(engine):
            with pytest.raises(TimeoutError):
                await engine.ping(0.2)
    with pytest.raises(EngineUnavailable):
        await engine.ping(WAIT_S)  # stopped: nothing answers


async def test_blocked_worker_is_detected_by_timeout(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir) as engine:
        ran_late = threading.Event()
        async with paused(engine):
            with pytest.raises(TimeoutError):
                await engine.run_on_worker(ran_late.set, timeout_s=0.2)
        assert await engine.run_on_worker(lambda: "pong", timeout_s=WAIT_S) == "pong"
        assert not ran_late.is_set(), "a ping that timed out before it ran is dropped"
        await still_answers(engine, "are you ok?")


# ------------------------------------------------------------------------ lifecycle


async def test_stop_fails_waiting_requests_and_refuses_new_ones(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, max_batch_size=1) as engine:
        running = engine.submit(_endless())
        iterator = await _started(running)
        waiting = engine.submit(question("behind it"))
        await asyncio.wait_for(engine.stop(timeout_s=0.5), WAIT_S)
        with pytest.raises(EngineUnavailable):
            await asyncio.wait_for(waiting.text(), WAIT_S)
        with pytest.raises(EngineUnavailable):
            await asyncio.wait_for(_drain(iterator), WAIT_S)
        with pytest.raises(EngineUnavailable):
            engine.submit(question("too late"))
        with pytest.raises(EngineUnavailable):
            await engine.run_on_worker(lambda: None, timeout_s=1)
        assert not engine.stats().ready


async def test_describe_and_stats(tiny_qwen25_dir):
    async with running_engine(tiny_qwen25_dir, max_pixels=256 * 256) as engine:
        info = engine.describe()
        stream = engine.submit(question("hi", size=(400, 300), max_new_tokens=4, min_new_tokens=4))
        await asyncio.wait_for(stream.text(), WAIT_S)
        stats = engine.stats()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["image_factor"] == 28 and info["attn_implementation"] == "sdpa"
    assert info["max_pixels"] == 256 * 256 and info["max_batch_size"] == 4 and info["ready"] is True
    # 400×300 shrinks into the 256² budget: at most (256/28)² ≈ 83 image tokens.
    assert stream.usage.prompt_tokens < 83 + 80
    assert stats.ready and stats.generated_tokens == 4 and stats.tokens_per_s > 0
    assert stats.latency_p50_s is not None and stats.time_to_first_token_p50_s is not None
    assert stats.memory["host_rss_bytes"] > 0


# ------------------------------------------------------------------ loader, factory


def test_loader_reports_what_cannot_work_here(tiny_qwen3_dir, monkeypatch):
    import torch

    from bot.settings import EngineSettings
    from inference.loader import configure_cuda_allocator, load_model, resolve_device

    with pytest.raises(EngineUnavailable, match="needs a CUDA GPU"):
        load_model(EngineSettings(model=str(tiny_qwen3_dir), device="cpu", quantization="4bit"))
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(EngineUnavailable, match=r"not a device|not supported"):
        resolve_device("tpu")
    with pytest.raises(EngineUnavailable, match="could not be loaded"):
        load_model(EngineSettings(model=str(tiny_qwen3_dir / "missing"), device="cpu"))

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    configure_cuda_allocator()
    import os

    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    configure_cuda_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_loaded_tiny_model_is_ready_for_batching(tiny_qwen3_dir):
    import torch

    loaded = load_tiny(str(tiny_qwen3_dir))
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert (loaded.patch_size, loaded.merge_size, loaded.image_factor) == (16, 2, 32)
    assert loaded.attn_implementation == "sdpa"


def test_factory_builds_the_configured_backend(monkeypatch, tmp_path):
    from bot.settings import Settings
    from inference.factory import create_engine
    from inference.transformers_engine import TransformersEngine

    monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)
    monkeypatch.setenv("PEEKBOT_BACKEND", "transformers")
    monkeypatch.setenv("PEEKBOT_MODEL", str(tmp_path))
    engine = create_engine(Settings())
    assert isinstance(engine, TransformersEngine)
    assert engine.describe()["model"] == str(tmp_path)

    monkeypatch.setenv("PEEKBOT_BACKEND", "openai")
    with pytest.raises(EngineUnavailable, match="needs PEEKBOT_OPENAI_BASE_URL and PEEKBOT_OPENAI_MODEL"):
        create_engine(Settings())


def test_inference_package_imports_without_torch():
    code = (
        "import sys, inference, inference.transformers_engine, inference.prompts, inference.factory, inference.stats, "
        "inference.memory\nassert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------- counters


def test_counters_keep_recent_windows():
    from inference.stats import EngineCounters, percentile

    now = [1000.0]
    counters = EngineCounters(latency_window_s=3600, throughput_window_s=60, clock=lambda: now[0])
    for latency in (0.4, 1.5, 3.0, 8.0):
        counters.answered(latency, ttft_s=latency / 4)
        counters.outcome("answered")
    counters.outcome("busy")
    now[0] += 30
    counters.tokens(600)
    snap = counters.snapshot()
    assert snap.requests_by_outcome["answered"] == 4 and snap.requests_by_outcome["busy"] == 1
    assert snap.latency_p50_s == 1.5 and snap.latency_p95_s == 8.0
    histogram = snap.latency_histogram
    assert histogram["0.5"] == 1 and histogram["5"] == 3 and histogram["+Inf"] == 4
    assert snap.tokens_per_s == pytest.approx(600 / 30)
    assert snap.ttft_p50_s == pytest.approx(1.5 / 4)

    now[0] += 3601  # an hour later the samples are gone, the counts stay
    snap = counters.snapshot()
    assert snap.latency_p50_s is None and snap.latency_histogram["+Inf"] == 0
    assert snap.tokens_per_s == 0.0 and snap.generated_tokens == 600
    assert snap.requests_by_outcome["answered"] == 4
    assert percentile([], 0.5) is None and percentile([3, 1, 2], 0.5) == 2


def test_cleanup_gives_freed_host_heap_back_to_the_os() -> None:
    import ctypes.util
    import gc

    from inference import memory

    if ctypes.util.find_library("c") is None or memory._libc_malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim")
    memory.trim_host_heap()
    chunks = [bytearray(4096) for _ in range(50_000)]  # ~200 MiB in heap-sized pieces
    for chunk in chunks[::50]:
        chunk[0] = 1
    held = memory.host_rss_bytes()
    del chunks
    gc.collect()
    result = memory.cleanup()
    released = held - memory.host_rss_bytes()
    assert result["host_heap_trimmed"] is True
    assert released > 100 * 2**20, f"only {released / 2**20:.0f} MiB went back to the OS"
