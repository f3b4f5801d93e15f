"""Continuous batching: every row's greedy tokens equal its solo run, whenever it joins, however long its prompt,
however its prefill is chunked; a question that arrives mid-answer starts at the next step; prefill waits between
steps; a follow-up about the same picture skips the vision encoder; a late asker is not held back by a flood."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import torch

from bot.engine import GenerationRequest
from inference.decode import DecodeRow, GreedyDecoder
from tests.inference.test_engine_helpers import (
    WAIT_S,
    eos_ids,
    load_tiny,
    paused,
    picture,
    prompt_builder,
    question,
    running_engine,
)

STEPS = 12


def _decoder(loaded) -> GreedyDecoder:
    return GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded))


def _rows(loaded, shapes) -> list[DecodeRow]:
    """One prompt per entry: a list of image sizes (none: text only); different questions, different lengths."""
    builder = prompt_builder(loaded)
    rows = []
    for index, sizes in enumerate(shapes):
        images = [picture(*size, seed=index + n) for n, size in enumerate(sizes)]
        prepared = builder.prepare(GenerationRequest(question=f"What is shown here, {index}?" * (index + 1),
                                                     images=images))
        rows.append(DecodeRow(prepared.input_ids, prepared.pixel_values, prepared.image_grid_thw, STEPS))
    return rows


def _schedule(decoder, rows, joins, limits, *, chunk=None, growth=4, probe=None):
    """Run ``rows`` through one running batch: row i joins before step ``joins[i]`` and leaves after ``limits[i]``
    tokens. Returns every row's tokens; ``probe(batch, step)`` sees the batch after each join."""
    batch = decoder.new_batch(growth=growth)
    tokens: list[list[int]] = [[] for _ in rows]
    step = 0
    with torch.inference_mode():
        while step <= max(joins) or batch:
            for index, row in enumerate(rows):
                if joins[index] == step:
                    batch.join(decoder.prefill(row, chunk), index, min_new_tokens=row.min_new_tokens)
            if probe is not None:
                probe(batch, step)
            if batch:
                for owner, token in zip(batch.owners, batch.choose(), strict=True):
                    tokens[owner].append(token)
                batch.advance([len(tokens[owner]) >= limits[owner] for owner in batch.owners])
                if batch:
                    batch.feed()
            step += 1
    return tokens


def _solo(decoder, row, limit):
    return _schedule(decoder, [row], [0], [limit])[0]


def test_rows_joining_mid_batch_match_their_solo_runs(tiny_model_dir):
    loaded = load_tiny(str(tiny_model_dir))
    decoder = _decoder(loaded)
    # A: one image; B: text only (shorter); C: two larger images (longer than A at its join: the cache grows on the
    # left); D: short, joins at the step where B finishes; E joins after A and C left, while D decodes.
    rows = _rows(loaded, [[(160, 120)], [], [(256, 200), (200, 256)], [], [(64, 64)]])
    joins = [0, 3, 5, 8, 18]
    limits = [STEPS, 5, STEPS, STEPS, 6]  # B's 5 tokens end at step 8, when D joins
    lengths: dict[int, int] = {}
    tokens = _schedule(decoder, rows, joins, limits, probe=lambda batch, step: lengths.setdefault(step, batch.length))

    solo = [_solo(decoder, row, limit) for row, limit in zip(rows, limits, strict=True)]
    assert tokens == solo
    assert len({tuple(t) for t in solo}) == len(rows), "answers must differ for the test to mean much"
    prompt = [len(row.input_ids) for row in rows]
    assert prompt[2] > prompt[0] + 5 and prompt[1] < prompt[0] and prompt[3] < prompt[2]
    assert lengths[5] == prompt[2], "C was longer than the batch: the cache grew on the left to its length"
    assert lengths[17] < lengths[16] - 10, "once C left, the columns only it used were trimmed"


def test_chunked_prefill_equals_single_pass(tiny_model_dir):
    loaded = load_tiny(str(tiny_model_dir))
    decoder = _decoder(loaded)
    (row,) = _rows(loaded, [[(160, 120), (96, 128)]])  # chunks of 7 cut through both images' tokens
    with torch.inference_mode():
        whole, chunked = decoder.prefill(row), decoder.prefill(row, chunk_tokens=7)
    torch.testing.assert_close(chunked.hidden, whole.hidden, rtol=1e-4, atol=1e-4)
    for a, b in zip(whole.cache.layers, chunked.cache.layers, strict=True):
        torch.testing.assert_close(b.keys, a.keys, rtol=1e-4, atol=1e-4)
    single = _schedule(decoder, [row], [0], [STEPS])
    in_chunks = _schedule(decoder, [row], [0], [STEPS], chunk=7)
    assert in_chunks == single
    assert len(set(single[0])) > 2


async def test_a_question_joins_a_running_answer_at_the_next_step(tiny_model_dir):
    long = question("Describe everything in detail.", size=(160, 120), max_new_tokens=60, min_new_tokens=60)
    short = question("What colour is it?", size=(90, 180), seed=3, max_new_tokens=6, min_new_tokens=6)
    async with running_engine(tiny_model_dir, max_batch_size=4, prefill_chunk_tokens=16) as engine:
        solo = []
        for request in (long, short):
            stream = engine.submit(request)
            await asyncio.wait_for(stream.text(), WAIT_S)
            solo.append(stream.token_ids)
        before = engine.stats()

        first = engine.submit(long)
        iterator = aiter(first)
        assert await asyncio.wait_for(anext(iterator), WAIT_S)
        second = engine.submit(short)
        await asyncio.wait_for(second.text(), WAIT_S)
        assert not first.done, "the short answer ended while the long one was still generating"
        async for _ in iterator:
            pass
        after = engine.stats()
    assert [first.token_ids, second.token_ids] == solo
    assert after.batches == before.batches + 1, "the second question joined the running batch"
    assert second.usage.time_to_first_token_s < first.usage.total_s / 2


async def test_static_policy_waits_for_the_batch_to_end(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, scheduling="static") as engine:
        first = engine.submit(question("Describe everything.", max_new_tokens=40, min_new_tokens=40))
        iterator = aiter(first)
        assert await asyncio.wait_for(anext(iterator), WAIT_S)
        second = engine.submit(question("And now?", seed=2, max_new_tokens=3, min_new_tokens=3))
        await asyncio.wait_for(second.text(), WAIT_S)
        assert first.done, "under the static policy the second question ran only after the first"
        assert engine.describe()["scheduling"] == "static"


async def test_prefill_runs_between_decoding_steps(tiny_qwen3_dir):
    """While a row decodes, a joining prompt is prefilled one unit (image or chunk) per step: the running row's
    inter-token gap holds at most one unit."""
    loaded = load_tiny(str(tiny_qwen3_dir))
    backbone = loaded.model.base_model
    events: list[str] = []

    def on_language(module, args, kwargs):
        events.append("step" if kwargs.get("input_ids") is not None else "chunk")

    handles = [
        backbone.visual.register_forward_pre_hook(lambda *_: events.append("image")),
        backbone.language_model.register_forward_pre_hook(on_language, with_kwargs=True),
    ]
    try:
        async with running_engine(tiny_qwen3_dir, max_batch_size=2, prefill_chunk_tokens=16) as engine:
            running = engine.submit(_talkative())
            iterator = aiter(running)
            assert await asyncio.wait_for(anext(iterator), WAIT_S)
            events.clear()
            joining = engine.submit(question("Read both.", images=2, size=(128, 96), max_new_tokens=2,
                                             min_new_tokens=2))
            await asyncio.wait_for(joining.text(), WAIT_S)
            running.cancel()
    finally:
        for handle in handles:
            handle.remove()
    units = [event for event in events if event != "step"]
    assert units.count("image") == 2 and units.count("chunk") >= 4, "the prompt was prefilled in several units"
    for before, after in itertools.pairwise(events):
        assert before == "step" or after == "step", "two prefill units ran without a decoding step between them"


def _talkative() -> GenerationRequest:
    return question("Tell me everything.", max_new_tokens=20_000, min_new_tokens=20_000)


async def test_rows_join_and_leave_at_random_times_and_match_solo(tiny_model_dir):
    """Questions submitted at staggered moments, some while others finish: each answer equals its solo run."""
    requests = [
        question(f"Question {n}: what is here?", images=n % 3, size=(64 + 32 * n, 96), seed=n,
                 max_new_tokens=3 + 4 * (n % 4), min_new_tokens=3 + 4 * (n % 4))
        for n in range(6)
    ]  # fmt: skip
    async with running_engine(tiny_model_dir, max_batch_size=3, prefill_chunk_tokens=24) as engine:
        solo = []
        for request in requests:
            stream = engine.submit(request)
            await asyncio.wait_for(stream.text(), WAIT_S)
            solo.append(stream.token_ids)

        async def ask(n: int) -> list[int]:
            await asyncio.sleep(0.015 * n)
            stream = engine.submit(requests[n])
            await asyncio.wait_for(stream.text(), WAIT_S)
            return stream.token_ids

        started = time.monotonic()
        together = await asyncio.gather(*(ask(n) for n in range(len(requests))))
        assert time.monotonic() - started < WAIT_S
        stats = engine.stats()
    assert together == solo
    assert stats.mean_step_rows > 1, "rows decoded together"
    # the engine times its steps and the prefill units between them (pictures and 24-token chunks)
    assert stats.step_p50_s is not None and 0 < stats.step_p50_s <= (stats.step_p95_s or 0) < WAIT_S
    assert set(stats.prefill_unit_p95_s) == {"vision", "text"}
    assert all(0 < seconds < WAIT_S for seconds in stats.prefill_unit_p95_s.values())


@pytest.mark.parametrize("given_hashes", [True, False])
async def test_follow_up_on_the_same_picture_skips_the_vision_encoder(tiny_model_dir, given_hashes):
    loaded = load_tiny(str(tiny_model_dir))
    calls: list[int] = []
    handle = loaded.model.base_model.visual.register_forward_pre_hook(lambda *_: calls.append(1))
    shot = picture(200, 150, seed=5)
    hashes = ["sha-of-the-screenshot"] if given_hashes else []

    def ask(text: str) -> GenerationRequest:
        return GenerationRequest(question=text, images=[shot], image_hashes=hashes, max_new_tokens=8,
                                 min_new_tokens=8, user="slack:U1")

    try:
        async with running_engine(tiny_model_dir, image_cache_bytes=0) as uncached:
            expected = await asyncio.wait_for(uncached.submit(ask("And the second line?")).text(), WAIT_S)
        async with running_engine(tiny_model_dir) as engine:
            calls.clear()
            first = await asyncio.wait_for(engine.submit(ask("What does the error say?")).text(), WAIT_S)
            assert len(calls) == 1
            follow_up = await asyncio.wait_for(engine.submit(ask("And the second line?")).text(), WAIT_S)
            assert len(calls) == 1, "the follow-up about the same picture did not run the vision encoder"
            figures = engine.stats().image_cache
            report = await engine.cleanup(force=True, fragmentation_threshold=0.3, unused_reserved_bytes=1 << 30,
                                          timeout_s=WAIT_S)
            again = await asyncio.wait_for(engine.submit(ask("And the second line?")).text(), WAIT_S)
            assert len(calls) == 2, "after a forced cleanup the picture is encoded again"
    finally:
        handle.remove()
    assert follow_up == expected == again and first != follow_up
    assert figures["entries"] == 1 and figures["hits"] == 1 and figures["hit_rate"] == 0.5
    assert 0 < figures["bytes"] <= figures["budget_bytes"]
    assert report.figures["image_cache_released_bytes"] == figures["bytes"]


async def test_a_late_asker_gets_the_next_free_row_before_a_flood(tiny_qwen3_dir):
    async with running_engine(tiny_qwen3_dir, max_batch_size=2, queue_limit=16) as engine:
        async with paused(engine):
            flood = [engine.submit(GenerationRequest(question=f"flood {n}", user="A", max_new_tokens=4,
                                                     min_new_tokens=4)) for n in range(8)]
            late = engine.submit(GenerationRequest(question="mine", user="B", max_new_tokens=4, min_new_tokens=4))
        finished: list[str] = []

        async def wait(name: str, stream) -> None:
            await asyncio.wait_for(stream.text(), WAIT_S)
            finished.append(name)

        await asyncio.gather(wait("late", late), *(wait(f"flood {n}", s) for n, s in enumerate(flood)))
    # Two rows: B's question takes one of the next two free rows (first-come order would make it the ninth).
    assert finished.index("late") <= 3, f"B's question waited behind the flood: {finished}"
