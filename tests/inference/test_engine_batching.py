"""Dynamic micro-batching: batched answers equal one-at-a-time answers; queue limits hold under load."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import Busy
from tests.inference.test_engine_helpers import WAIT_S, paused, question, running_engine

SIZES = [(64, 64), (120, 90), (200, 150), (90, 180)]
QUESTIONS = ["What is this?", "What does the error say?", "Describe the chart.", "Was steht hier?"]


def _requests(max_new_tokens: int = 12):
    return [
        question(text, size=size, seed=index, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
        for index, (text, size) in enumerate(zip(QUESTIONS, SIZES, strict=True))
    ]


async def test_batched_output_equals_one_at_a_time(tiny_model_dir):
    async with running_engine(tiny_model_dir, max_batch_size=4) as engine:
        sequential = []
        for request in _requests():
            stream = engine.submit(request)
            text = await asyncio.wait_for(stream.text(), WAIT_S)
            sequential.append((text, stream.token_ids))
        before = engine.stats()

        async with paused(engine):
            streams = [engine.submit(request) for request in _requests()]
            assert [s.queue_position for s in streams] == [0, 1, 2, 3]
        batched = [(await asyncio.wait_for(s.text(), WAIT_S), s.token_ids) for s in streams]

        after = engine.stats()
        assert after.batches == before.batches + 1, "the four requests should have run as one batch"
        rows = after.mean_batch_size * after.batches - before.mean_batch_size * before.batches
        assert rows == pytest.approx(4)

    assert [tokens for _, tokens in batched] == [tokens for _, tokens in sequential]
    assert [text for text, _ in batched] == [text for text, _ in sequential]
    assert all(len(tokens) == 12 for _, tokens in sequential)
    assert len({text for text, _ in sequential}) > 1, "outputs must differ between requests for the test to mean much"
    assert all(len(set(tokens)) > 2 for _, tokens in sequential), "the tiny model should not repeat one token"


async def test_rows_stop_at_their_own_token_limits(tiny_qwen3_dir):
    limits = [3, 7, 12, 5]
    async with running_engine(tiny_qwen3_dir, max_batch_size=4) as engine:
        reference = []
        for request in _requests(max_new_tokens=12):
            stream = engine.submit(request)
            await asyncio.wait_for(stream.text(), WAIT_S)
            reference.append(stream.token_ids)

        async with paused(engine):
            streams = []
            for request, limit in zip(_requests(), limits, strict=True):
                request.max_new_tokens = request.min_new_tokens = limit
                streams.append(engine.submit(request))
        for stream in streams:
            await asyncio.wait_for(stream.text(), WAIT_S)

    for stream, limit, full in zip(streams, limits, reference, strict=True):
        assert stream.usage.generated_tokens == limit
        assert stream.token_ids == full[:limit]


async def test_max_batch_tokens_splits_batches(tiny_qwen3_dir):
    # Each request has ~100 prompt tokens; 250 padded tokens fit two rows, not four.
    async with running_engine(tiny_qwen3_dir, max_batch_size=4, max_batch_tokens=250) as engine:
        async with paused(engine):
            streams = [engine.submit(r) for r in _requests(max_new_tokens=2)]
        texts = [await asyncio.wait_for(s.text(), WAIT_S) for s in streams]
        prompt_tokens = [s.usage.prompt_tokens for s in streams]
        stats = engine.stats()
    assert all(isinstance(t, str) for t in texts)
    assert max(prompt_tokens) * 2 <= 250 < max(prompt_tokens) * 3
    assert stats.batches >= 2
    assert stats.requests_by_outcome["answered"] == 4


async def test_fifty_concurrent_requests_against_queue_limit_eight(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, queue_limit=8, max_batch_size=4, max_new_tokens=4) as engine:

        async def ask(index: int) -> str:
            await asyncio.sleep((index % 10) * 0.01)
            try:
                stream = engine.submit(
                    question(f"Question {index}?", size=(64, 48), seed=index, max_new_tokens=4, min_new_tokens=4)
                )
            except Busy as busy:
                assert busy.queue_limit == 8
                assert busy.queue_depth >= 8
                assert "8" in busy.user_message
                return "busy"
            assert 0 <= stream.queue_position < 8
            await stream.text()
            assert stream.usage.generated_tokens == 4
            return "answered"

        outcomes = await asyncio.wait_for(asyncio.gather(*(ask(i) for i in range(50))), WAIT_S * 2)
        stats = engine.stats()
        assert len(outcomes) == 50
        assert set(outcomes) == {"answered", "busy"}
        assert outcomes.count("answered") >= 8
        assert stats.requests_by_outcome["answered"] == outcomes.count("answered")
        assert stats.requests_by_outcome["busy"] == outcomes.count("busy")
        assert stats.queue_depth == 0
        assert stats.in_flight == 0

        again = engine.submit(question("Still there?"))
        assert again.queue_position == 0
        assert await asyncio.wait_for(again.text(), WAIT_S)
