"""Token choice (inference/sampling.py): the checkpoint's sampling settings, per-row seeds, greedy as a setting."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from inference.sampling import (
    GREEDY,
    RowSampling,
    SamplingSettings,
    candidates,
    choose_tokens,
    seed_for,
    settings_from_generation_config,
)

QWEN3_VL_4B = {"do_sample": True, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.0, "temperature": 0.7}
QWEN2_5_VL_7B = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001}


def sampled(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> SamplingSettings:
    return SamplingSettings(greedy=False, temperature=temperature, top_k=top_k, top_p=top_p)


def rows_for(settings: SamplingSettings, keys: list[str]) -> list[RowSampling]:
    return [RowSampling.start(settings, seed_for(key)) for key in keys]


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / tokens.numel()


def test_published_generation_configs_become_settings():
    qwen3 = settings_from_generation_config(QWEN3_VL_4B)
    assert qwen3.describe() == "sampled: temperature 0.7, top_k 20, top_p 0.8"
    assert not qwen3.greedy and qwen3.reason == "the checkpoint's generation config"
    qwen25 = settings_from_generation_config(QWEN2_5_VL_7B)
    assert qwen25.greedy and "top_k 1" in qwen25.reason  # Qwen2.5-VL's settings are greedy decoding
    assert settings_from_generation_config(QWEN3_VL_4B, "greedy").describe() == "greedy"
    assert settings_from_generation_config({"do_sample": False, "temperature": 0.7}).greedy
    assert settings_from_generation_config({}).greedy
    unset = settings_from_generation_config({"do_sample": True, "min_p": 0.05, "top_k": None})
    assert (unset.temperature, unset.top_k, unset.top_p) == (1.0, 50, 1.0)  # transformers' defaults
    assert unset.ignored == ("min_p",)


@pytest.mark.parametrize("settings", [
    [sampled(0.7, 20, 0.8)] * 3,
    [sampled(1.3, 0, 0.5), sampled(0.5, 5, 1.0), sampled(1.0, 50, 0.9)],  # rows with different settings
])  # fmt: skip
def test_candidates_match_transformers_warpers(settings):
    torch.manual_seed(0)
    logits = torch.randn(len(settings), 1000) * 3
    probabilities, token_ids = candidates(logits, settings)
    ours = torch.zeros_like(logits).scatter_(1, token_ids, probabilities)
    for row, setting in enumerate(settings):
        scores = TemperatureLogitsWarper(setting.temperature)(None, logits[row : row + 1])
        if setting.top_k:
            scores = TopKLogitsWarper(setting.top_k)(None, scores)
        if setting.top_p < 1.0:
            scores = TopPLogitsWarper(setting.top_p)(None, scores)
        torch.testing.assert_close(ours[row], scores.softmax(dim=-1)[0])


def test_draws_follow_the_distribution_with_fixed_seeds():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    count = 20000
    tokens = choose_tokens(logits.repeat(count, 1), rows_for(sampled(), [f"request-{i}" for i in range(count)]))
    assert (frequencies(tokens, 5) - logits.softmax(dim=-1).double()).abs().max() < 0.015


def test_top_k_and_top_p_never_pick_the_tokens_they_cut():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(4000, 1)
    keys = [f"row-{i}" for i in range(4000)]
    assert set(choose_tokens(logits, rows_for(sampled(top_k=2), keys)).tolist()) == {0, 1}
    # top_p 0.7: the third token has 0.8 of the mass above it, the second 0.5
    assert set(choose_tokens(logits, rows_for(sampled(top_p=0.7), keys)).tolist()) == {0, 1}
    assert set(choose_tokens(logits, rows_for(sampled(top_p=0.5), keys)).tolist()) == {0}
    blocked = logits.clone()
    blocked[:, 0] = float("-inf")  # an end-of-sequence token forbidden before the minimum length
    assert 0 not in set(choose_tokens(blocked, rows_for(sampled(), keys)).tolist())


def test_a_lower_temperature_picks_the_best_token_more_often():
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5]).repeat(4000, 1)
    keys = [f"row-{i}" for i in range(4000)]
    best = [frequencies(choose_tokens(logits, rows_for(sampled(temperature=t), keys)), 4)[0] for t in (2.0, 1.0, 0.3)]
    assert best[0] < best[1] < best[2]
    assert best[2] > 0.8


def _run(rows: list[RowSampling], steps: list[torch.Tensor]) -> list[list[int]]:
    return [choose_tokens(scores, rows).tolist() for scores in steps]


def test_a_rows_tokens_depend_only_on_its_seed_not_on_its_batch():
    torch.manual_seed(1)
    vocab = 300
    steps = [torch.randn(3, vocab) for _ in range(30)]
    setting = sampled(0.8, 40, 0.95)
    alone = _run([RowSampling.start(setting, seed_for("job-a"))], [s[1:2] for s in steps])
    batch = [
        RowSampling.start(sampled(1.5, 0, 0.7), seed_for("job-b")),
        RowSampling.start(setting, seed_for("job-a")),
        RowSampling.start(GREEDY, seed_for("job-c")),
    ]
    together = _run(batch, steps)
    assert [tokens[1] for tokens in together] == [tokens[0] for tokens in alone]
    again = _run([RowSampling.start(setting, seed_for("job-a"))], [s[1:2] for s in steps])
    assert again == alone  # a retried row starts again from its seed: the same text
    other = _run([RowSampling.start(setting, seed_for("job-z"))], [s[1:2] for s in steps])
    assert other != alone
    assert [tokens[2] for tokens in together] == [int(s[2].argmax()) for s in steps]


def test_greedy_rows_take_the_argmax():
    torch.manual_seed(2)
    scores = torch.randn(5, 100)
    assert choose_tokens(scores, rows_for(GREEDY, list("abcde"))).tolist() == scores.argmax(dim=-1).tolist()
    one = settings_from_generation_config({"do_sample": True, "top_k": 1, "temperature": 0.7})
    assert one.greedy and RowSampling.start(one, 7).random is None
