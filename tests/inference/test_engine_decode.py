"""The greedy batch decoder: the tokens ``generate`` gives, rows that leave, a growing cache, a fast projection."""

from __future__ import annotations

import pytest
import torch

from bot.engine import GenerationRequest
from inference.decode import (
    DecodeRow,
    GreedyDecoder,
    OutputProjection,
    forbid_end_of_sequence,
    penalise_repetition,
)
from tests.inference.test_engine_helpers import eos_ids, load_tiny, picture, prompt_builder


def _prompts(loaded, sizes):
    builder = prompt_builder(loaded)
    prompts = []
    for index, size in enumerate(sizes):
        images = [picture(*size, seed=index)] if size else []
        prompts.append(builder.prepare(GenerationRequest(question=f"What is shown here, {index}?", images=images)))
    return builder, prompts


def _row(prepared, min_new_tokens: int = 0) -> DecodeRow:
    return DecodeRow(prepared.input_ids, prepared.pixel_values, prepared.image_grid_thw, min_new_tokens)


def _run(decoder, rows, steps, finish_at=None):
    """Decode ``rows``; returns every step's tokens per row. ``finish_at`` maps a row to the step it ends at."""
    seen: list[list[int]] = [[] for _ in rows]
    finish_at = finish_at or {}

    def on_step(tokens, step):
        for index, token in enumerate(tokens):
            seen[index].append(token)
        return [finish_at.get(index, steps + 1) <= step for index in range(len(rows))]

    with torch.inference_mode():
        decoder.decode(rows, steps, on_step)
    return seen


@pytest.mark.parametrize(("arch_fixture", "penalty"), [("tiny_qwen25_dir", 1.0), ("tiny_qwen3_dir", 1.0),
                                                      ("tiny_qwen3_dir", 1.3)])
def test_decoder_gives_the_tokens_generate_gives(arch_fixture, penalty, request):
    from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

    loaded = load_tiny(str(request.getfixturevalue(arch_fixture)))
    builder, (prepared,) = _prompts(loaded, [(96, 64)])
    decoder = GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded), repetition_penalty=penalty)
    steps = 12
    (ours,) = _run(decoder, [_row(prepared, min_new_tokens=steps)], steps)

    ids = torch.tensor([prepared.input_ids])
    eos = eos_ids(loaded)
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=prepared.pixel_values,
            image_grid_thw=prepared.image_grid_thw, mm_token_type_ids=(ids == builder.image_token_id).int(),
            max_new_tokens=steps, do_sample=False, eos_token_id=eos, repetition_penalty=penalty,
            logits_processor=LogitsProcessorList([MinNewTokensLengthLogitsProcessor(ids.shape[1], steps, eos)]),
        )  # fmt: skip
    assert ours == output[0, ids.shape[1] :].tolist()
    assert len(set(ours)) > 2, "a tiny random model should not repeat one token"


def test_rows_of_a_batch_match_their_solo_runs_and_leave_when_finished(tiny_qwen3_dir):
    loaded = load_tiny(str(tiny_qwen3_dir))
    _, prompts = _prompts(loaded, [(160, 120), None, (64, 96)])  # different lengths: left padding in the batch
    decoder = GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded))
    steps = 10
    solo = [_run(decoder, [_row(p, steps)], steps)[0] for p in prompts]

    batched = _run(decoder, [_row(p, steps) for p in prompts], steps, finish_at={1: 3})
    assert batched[0] == solo[0] and batched[2] == solo[2]
    assert batched[1][:3] == solo[1][:3]
    assert batched[1][3:] == [-1] * (steps - 3), "a finished row gets no more tokens"


def test_the_cache_grows_past_its_first_chunk(tiny_qwen25_dir, monkeypatch):
    import inference.decode

    loaded = load_tiny(str(tiny_qwen25_dir))
    _, prompts = _prompts(loaded, [(64, 64), None])
    decoder = GreedyDecoder(loaded.model, device=loaded.device, eos_ids=eos_ids(loaded))
    rows = [_row(p, 14) for p in prompts]
    roomy = _run(decoder, rows, 14)
    monkeypatch.setattr(inference.decode, "CACHE_GROWTH", 3)
    cramped = _run(decoder, rows, 14)
    assert cramped == roomy


def test_end_of_sequence_is_forbidden_per_row_until_its_minimum():
    eos = torch.tensor([7, 9])
    minimums = torch.tensor([0, 3, 5])
    scores = torch.zeros(3, 10)
    scores[:, 7] = 5.0  # every row would pick end-of-sequence

    after_two = scores.clone()
    forbid_end_of_sequence(after_two, 2, minimums, eos)
    assert after_two.argmax(dim=-1).tolist()[0] == 7
    assert torch.isinf(after_two[1:, [7, 9]]).all() and not torch.isinf(after_two[0]).any()
    after_four = scores.clone()
    forbid_end_of_sequence(after_four, 4, minimums, eos)
    assert after_four.argmax(dim=-1).tolist()[:2] == [7, 7] and torch.isinf(after_four[2, [7, 9]]).all()
    after_five = scores.clone()
    forbid_end_of_sequence(after_five, 5, minimums, eos)
    assert after_five.argmax(dim=-1).tolist() == [7, 7, 7]


def test_repetition_penalty_matches_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 50, generator=generator)
    history = torch.tensor([[4, 8, 8, 15], [30, 2, 49, 2]])
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, scores.clone())
    ours = scores.clone()
    penalise_repetition(ours, history, 1.3)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("bias", [False, True])
def test_fast_output_projection_equals_the_linear_layer(rows, bias):
    generator = torch.Generator().manual_seed(rows)
    layer = torch.nn.Linear(64, 5000, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5000, 64, generator=generator))
        if bias:
            layer.bias.copy_(torch.randn(5000, generator=generator))
    hidden = torch.randn(rows, 64, generator=generator)
    projection = OutputProjection(layer)
    assert projection.fast
    with torch.inference_mode():
        expected = torch.nn.functional.linear(hidden, layer.weight, layer.bias)
        first = projection(hidden).clone()
        again = projection(hidden)  # the buffer is reused
    assert first.shape == again.shape == (rows, 5000)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(again, first)
    assert first.argmax(dim=-1).tolist() == expected.argmax(dim=-1).tolist()


def test_other_output_layers_run_as_they_are():
    layer = torch.nn.Sequential(torch.nn.Linear(8, 16))
    assert not OutputProjection(layer).fast
    hidden = torch.randn(2, 8)
    with torch.inference_mode():
        assert torch.equal(OutputProjection(layer)(hidden), layer(hidden))
