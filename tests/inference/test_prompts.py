"""Prompt building: chat template, several images, history, system prompt, image-token expansion."""

from __future__ import annotations

import pytest
from PIL import Image

from bot.engine import ChatTurn, GenerationRequest
from inference.prompts import (
    IMAGE_PAD,
    LANGUAGE_RULE,
    VISION_END,
    VISION_START,
    PromptBuilder,
    build_messages,
    expand_image_pads,
    with_language_rule,
)
from tests.inference.test_engine_helpers import load_tiny, picture


def _builder(model_dir, **overrides) -> PromptBuilder:
    loaded = load_tiny(str(model_dir))
    values = dict(
        merge_size=loaded.merge_size,
        system_prompt="You are a terse screenshot helper.",
        min_pixels=64 * 64,
        max_pixels=1920 * 1080,
    )
    values.update(overrides)
    return PromptBuilder(loaded.tokenizer, loaded.image_processor, **values)


def test_system_prompt_always_asks_for_the_users_language():
    assert with_language_rule("Be brief.") == f"Be brief. {LANGUAGE_RULE}"
    already = "Answer in the language of the question, always."
    assert with_language_rule(already) == already
    history = [ChatTurn("user", "hola"), ChatTurn("assistant", "¡Hola!")]
    messages = build_messages("Qué es esto?", 2, history, "Be brief.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert LANGUAGE_RULE in messages[0]["content"][0]["text"]
    assert [c["type"] for c in messages[-1]["content"]] == ["image", "image", "text"]


def test_pictures_of_earlier_turns_stay_in_those_turns(tiny_model_dir):
    builder = _builder(tiny_model_dir)
    history = [ChatTurn("user", "What is this dialog?", images=1), ChatTurn("assistant", "A save error.")]
    first = GenerationRequest(question="What is this dialog?", images=[picture(200, 120, 1)])
    follow = GenerationRequest(question="How do I fix it?", images=[picture(200, 120, 1)], history=history)

    assert follow.question_images == 0
    text = builder.render(follow)
    assert text.index(VISION_START) < text.index("What is this dialog?") < text.index("How do I fix it?")
    assert text.startswith(builder.render(first))  # the follow-up's prompt begins with the first prompt
    assert builder.prepare(follow).input_ids[: len(builder.prepare(first).input_ids)] == builder.prepare(
        first
    ).input_ids
    with pytest.raises(ValueError, match="2 pictures"):
        _ = GenerationRequest(question="?", images=[], history=[ChatTurn("user", "two", images=2)]).question_images


@pytest.mark.parametrize("max_pixels", [64 * 64, 256 * 256, 1920 * 1080])
def test_grids_worked_out_without_patches_match_the_image_processor(tiny_model_dir, max_pixels):
    builder = _builder(tiny_model_dir, max_pixels=max_pixels)
    sizes = [(1920, 1080), (1080, 1920), (1366, 768), (200, 120), (17, 900), (600, 4), (3, 3), (1000, 1000)]
    images = [Image.new("RGB", size, (seed * 30, 90, 200)) for seed, size in enumerate(sizes)]
    _, expected = builder.process_images(images, max_pixels)
    assert builder.image_grids(images, max_pixels).tolist() == expected.tolist()

    request = GenerationRequest(question="What changed?", images=images[:2])
    without = builder.prepare(request, max_pixels=max_pixels, patches=False)
    assert without.pixel_values is None
    whole = builder.prepare(request, max_pixels=max_pixels)
    assert without.input_ids == whole.input_ids and without.image_tokens == whole.image_tokens
    added = builder.with_patches(without, request.images)
    assert added.pixel_values is not None and added.pixel_values.equal(whole.pixel_values)


def test_prompt_with_several_images_history_and_system_prompt(tiny_model_dir):
    builder = _builder(tiny_model_dir)
    loaded = load_tiny(str(tiny_model_dir))
    request = GenerationRequest(
        question="Which of these two dialogs shows the error?",
        images=[picture(200, 120, 1), picture(90, 160, 2)],
        history=[ChatTurn("user", "I get a popup when saving."), ChatTurn("assistant", "Please send a screenshot.")],
        system_prompt="You help the IT desk.",
    )
    prepared = builder.prepare(request)
    tokenizer = loaded.tokenizer
    text = tokenizer.decode(prepared.input_ids)

    assert text.index("You help the IT desk.") < text.index("I get a popup") < text.index("Please send a screenshot.")
    assert text.index("Please send a screenshot.") < text.index(VISION_START) < text.index("Which of these two")
    assert LANGUAGE_RULE in text
    assert text.endswith("<|im_start|>assistant\n")

    # Each image's placeholder is expanded to grid.prod() // merge² tokens inside its vision markers.
    ids = prepared.input_ids
    start_id, end_id, pad_id = (tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, VISION_END, IMAGE_PAD))
    starts = [i for i, t in enumerate(ids) if t == start_id]
    ends = [i for i, t in enumerate(ids) if t == end_id]
    assert len(starts) == len(ends) == 2
    grid = prepared.image_grid_thw
    assert grid is not None and grid.shape == (2, 3)
    merge = loaded.merge_size
    for (start, end), row in zip(zip(starts, ends, strict=True), grid, strict=True):
        span = ids[start + 1 : end]
        assert span == [pad_id] * (int(row.prod()) // merge**2)
    assert prepared.image_tokens == sum(int(row.prod()) // merge**2 for row in grid)
    assert sum(1 for t in ids if t == pad_id) == prepared.image_tokens
    assert prepared.prompt_tokens == len(ids)
    # The two images have different shapes, so their token counts differ.
    assert int(grid[0].prod()) != int(grid[1].prod())
    assert prepared.pixel_values is not None
    assert prepared.pixel_values.shape[0] == int(grid.prod(dim=1).sum())


def test_default_system_prompt_is_used_when_the_request_has_none(tiny_qwen3_dir):
    builder = _builder(tiny_qwen3_dir)
    text = builder.render(GenerationRequest(question="hello"))
    assert "You are a terse screenshot helper." in text
    assert IMAGE_PAD not in text


def test_pixel_budget_bounds_image_tokens_and_is_patch_aligned(tiny_qwen25_dir):
    builder = _builder(tiny_qwen25_dir)
    loaded = load_tiny(str(tiny_qwen25_dir))
    factor = loaded.image_factor
    request = GenerationRequest(question="read it", images=[picture(640, 360, 3)])
    full = builder.prepare(request)
    small = builder.prepare(request, max_pixels=128 * 128)
    assert small.max_pixels == 128 * 128
    assert small.image_tokens < full.image_tokens
    _, height, width = (int(v) for v in small.image_grid_thw[0])
    pixels = height * width * loaded.patch_size**2
    assert pixels <= 128 * 128
    assert (height * loaded.patch_size) % factor == 0 and (width * loaded.patch_size) % factor == 0
    assert small.prompt_tokens == full.prompt_tokens - full.image_tokens + small.image_tokens


def test_expand_image_pads_counts_must_match():
    assert expand_image_pads([1, 9, 2, 9, 3], 9, [2, 3]) == [1, 9, 9, 2, 9, 9, 9, 3]
    with pytest.raises(ValueError, match="2 image placeholders for 1 images"):
        expand_image_pads([9, 9], 9, [4])
