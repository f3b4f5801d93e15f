"""``benchmarks/user_latency.py``: questions through the real Slack stack and the fake Slack server, timed from what
the person's thread shows: the first answer words and the whole answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmarks import user_latency

pytestmark = pytest.mark.timeout(480)  # the bot loads the model in this process: minutes on a busy 2-core host
QUESTIONS = 3


@pytest.fixture(scope="module")
def run(tiny_qwen3_dir: Path) -> dict:
    config = user_latency.UserLatencyConfig(
        questions=QUESTIONS, mean_gap_s=0.3, max_new_tokens=24, max_batch_size=4, model=str(tiny_qwen3_dir),
        cpu_threads=1, timeout_s=300.0,
    )  # fmt: skip
    return asyncio.run(user_latency.run_benchmark(config))


def test_every_question_is_answered_and_timed_from_its_thread(run: dict) -> None:
    assert run["questions"] == run["answered"] == QUESTIONS
    assert not run["timed_out"] and run["error_replies"] == 0
    for question in run["per_question"]:
        assert 0 < question["first_words_s"] <= question["whole_answer_s"]
        assert question["answer_chars"] > 0 and question["edits"] >= 1
    assert [q["with_image"] for q in run["per_question"]] == [True, False, True]  # every other one has a screenshot


def test_the_target_is_computed_from_the_figures(run: dict) -> None:
    first, whole = run["first_visible_words_s"], run["whole_answer_s"]
    targets = {t["name"]: t for t in run["targets"]}
    ratio = first["p95"] / whole["median"]
    assert targets["first_words_p95_over_whole_median"]["measured"] == pytest.approx(ratio, abs=1e-3)
    assert targets["first_words_p95_over_whole_median"]["met"] is (ratio <= user_latency.FIRST_WORDS_RATIO)
    table = user_latency.format_table(run)
    assert "first visible words p50 / p95 / max" in table and "first_words_p95_over_whole_median" in table
