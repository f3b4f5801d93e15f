"""The prompt-prefix cache: a follow-up whose prompt starts with an earlier prompt gets the same greedy tokens while
prefilling only the rest (and no vision encoder when its pictures lie in the prefix); another picture with the same
text does not hit; the budget evicts the least recently used prompt; a forced cleanup drops every prompt."""

from __future__ import annotations

import asyncio

import torch

from bot.engine import ChatTurn, GenerationRequest
from inference.decode import DecodeRow, GreedyDecoder
from inference.image_cache import image_key
from inference.prefill import RowPrefill
from inference.prefix_cache import PromptPrefixCache
from tests.inference.test_engine_helpers import WAIT_S, eos_ids, load_tiny, picture, prompt_builder, running_engine

STEPS = 8


def _greedy(decoder: GreedyDecoder, prefill: RowPrefill) -> list[int]:
    batch = decoder.new_batch()
    tokens: list[int] = []
    batch.join(prefill, 0, min_new_tokens=STEPS)
    while batch:
        tokens.append(batch.choose()[0])
        batch.advance([len(tokens) >= STEPS])
        if batch:
            batch.feed()
    return tokens


def _row(loaded, shot, input_ids, prepared, model: str) -> DecodeRow:
    grid = prepared.image_grid_thw
    keys = [image_key(model, shot, (200, 150), grid[0].tolist())]
    return DecodeRow(input_ids, prepared.pixel_values, grid, STEPS, keys)


def test_a_follow_up_prefills_only_after_the_cached_prompt_and_matches(tiny_model_dir):
    loaded = load_tiny(str(tiny_model_dir))
    decoder = GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded))
    parts = decoder.parts
    prepared = prompt_builder(loaded).prepare(
        GenerationRequest(question="What does the error say?", images=[picture(200, 150, seed=5)])
    )
    cache = PromptPrefixCache(64 << 20, "tiny")
    first = _row(loaded, "sha-a", prepared.input_ids, prepared, "tiny")
    fed: list[int] = []
    hook = parts.language_model.register_forward_pre_hook(
        lambda _module, _args, kwargs: fed.append(kwargs["inputs_embeds"].shape[1] if "inputs_embeds" in kwargs else 0),
        with_kwargs=True,
    )
    try:
        with torch.inference_mode():
            prefill = decoder.prefill(first, chunk_tokens=7)
            cache.keep(first.input_ids, first.image_keys, prefill.cache.layers)
            answer = _greedy(decoder, prefill)
            rest = loaded.tokenizer.encode(
                "<|im_end|>\n<|im_start|>user\nAnd the second line?<|im_end|>\n<|im_start|>assistant\n"
            )
            follow_ids = [*first.input_ids, *answer, *rest]
            follow = _row(loaded, "sha-a", follow_ids, prepared, "tiny")
            expected = _greedy(decoder, decoder.prefill(follow, chunk_tokens=7))
            calls, fed[:] = parts.vision_calls, []
            prefix = cache.longest(follow.input_ids, follow.image_keys)
            assert prefix is not None and prefix.tokens == len(first.input_ids)
            reused = RowPrefill(parts, follow, prefix=prefix)
            reused.run(7)
            got = _greedy(decoder, reused)
    finally:
        hook.remove()
    assert got == expected
    assert parts.vision_calls == calls, "the picture lies in the cached prefix: no vision encoder"
    assert sum(fed) == len(follow_ids) - len(first.input_ids), "only the tokens after the cached prompt are fed"
    other = _row(loaded, "sha-b", follow_ids, prepared, "tiny")
    assert cache.longest(other.input_ids, other.image_keys) is None, "another picture, the same tokens: no hit"
    assert cache.longest(first.input_ids, first.image_keys) is None, "a prompt is not a proper prefix of itself"
    figures = cache.figures()
    assert figures["hits"] == 1 and figures["saved_tokens"] == len(first.input_ids)


def test_the_budget_keeps_the_most_recent_prompts():
    class Layer:
        def __init__(self, length: int) -> None:
            self.keys = self.values = torch.zeros(1, 2, length, 4)

    one = 2 * 2 * 5 * 4 * 4  # keys and values of 5 tokens, float32
    cache = PromptPrefixCache(one + one // 2, "m")
    cache.keep([1, 2, 3, 4, 5], None, [Layer(5)])
    cache.keep([7, 8, 9, 10, 11], None, [Layer(5)])
    assert len(cache) == 1
    assert cache.longest([1, 2, 3, 4, 5, 6], None) is None, "the older prompt made room"
    kept = cache.longest([7, 8, 9, 10, 11, 12], None)
    assert kept is not None and kept.tokens == 5
    assert cache.clear() == one and len(cache) == 0


async def test_an_engine_follow_up_hits_and_a_forced_cleanup_drops_it(tiny_qwen3_dir):
    def ask(text: str, history: list[ChatTurn]) -> GenerationRequest:
        return GenerationRequest(question=text, history=history, max_new_tokens=8, min_new_tokens=8)

    async def conversation(engine) -> tuple[str, str, int]:
        first = engine.submit(ask("What does the error say?", []))
        answer = await asyncio.wait_for(first.text(), WAIT_S)
        history = [ChatTurn("user", "What does the error say?"), ChatTurn("assistant", answer)]
        follow_up = await asyncio.wait_for(engine.submit(ask("And the second line?", history)).text(), WAIT_S)
        return answer, follow_up, first.usage.prompt_tokens

    async with running_engine(tiny_qwen3_dir, prefix_cache_bytes=0) as uncached:
        expected = await conversation(uncached)
        assert uncached.stats().prefix_cache == {}
    async with running_engine(tiny_qwen3_dir) as engine:
        got = await conversation(engine)
        figures = engine.stats().prefix_cache
        report = await engine.cleanup(
            force=True, fragmentation_threshold=0.3, unused_reserved_bytes=1 << 30, timeout_s=WAIT_S
        )
        after = engine.stats().prefix_cache
    assert got == expected
    assert figures["hits"] == 1 and figures["saved_tokens"] == got[2] and figures["entries"] == 2
    assert report.figures["prefix_cache_released_bytes"] == figures["bytes"] > 0
    assert after["entries"] == 0 and after["bytes"] == 0


async def test_a_follow_up_about_a_kept_picture_makes_no_patches_and_answers_the_same(tiny_model_dir):
    shot = picture(320, 200, seed=9)

    def ask(text: str, history: list[ChatTurn]) -> GenerationRequest:
        return GenerationRequest(question=text, images=[shot], history=history, max_new_tokens=8, min_new_tokens=8)

    async def conversation(engine) -> tuple[list[str], list[int]]:
        made: list[int] = []
        process = engine._prompts.process_images

        def counted(images, max_pixels):
            made.append(len(images))
            return process(images, max_pixels)

        engine._prompts.process_images = counted
        first = await asyncio.wait_for(engine.submit(ask("What does the error say?", [])).text(), WAIT_S)
        made.append(-1)  # the follow-up starts here
        history = [ChatTurn("user", "What does the error say?", images=1), ChatTurn("assistant", first)]
        follow_up = await asyncio.wait_for(engine.submit(ask("And the second line?", history)).text(), WAIT_S)
        return [first, follow_up], made

    async with running_engine(tiny_model_dir, prefix_cache_bytes=0, image_cache_bytes=0) as uncached:
        expected, made_uncached = await conversation(uncached)
    async with running_engine(tiny_model_dir) as engine:
        got, made = await conversation(engine)
    assert got == expected
    assert made_uncached == [1, -1, 1]  # without caches every prompt's picture is patched
    assert made == [1, -1], "the follow-up's picture lies in a kept prompt: no patches were made for it"


def test_patches_are_made_at_prefill_when_the_kept_features_went_meanwhile(tiny_model_dir):
    loaded = load_tiny(str(tiny_model_dir))
    decoder = GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded))
    builder = prompt_builder(loaded)
    shot = picture(200, 150, seed=5)
    request = GenerationRequest(question="What does the error say?", images=[shot])
    whole = builder.prepare(request)
    bare = builder.prepare(request, patches=False)  # prepared while its features were kept
    asked: list[int] = []

    def patches(index: int) -> torch.Tensor:
        asked.append(index)
        return builder.image_patches(shot, bare.max_pixels)

    with torch.inference_mode():
        expected = _greedy(decoder, decoder.prefill(DecodeRow(whole.input_ids, whole.pixel_values,
                                                              whole.image_grid_thw, STEPS)))
        late = DecodeRow(bare.input_ids, None, bare.image_grid_thw, STEPS, patches=patches)
        got = _greedy(decoder, decoder.prefill(late))
    assert got == expected and asked == [0]
