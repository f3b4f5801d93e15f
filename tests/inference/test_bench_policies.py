"""``peekbot bench --policy static,continuous --arrival-rate auto --follow-ups N``: both scheduling policies on the
same open-loop arrival trace, closed-loop throughput per policy, and the follow-up workload."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pytest

from inference import bench
from inference.bench.runner import engine_policies
from inference.bench.spec import AUTO_LOAD
from inference.bench.summary import policy_targets
from inference.bench.workload import arrival_offsets
from tests.inference.test_bench import _args

CONCURRENCY = 2
REQUESTS = 4
NEW_TOKENS = 4
OPEN_REQUESTS = 6
PAIRS = 2
pytestmark = pytest.mark.timeout(480)  # each run loads the model in fresh processes: minutes on a busy 2-core host


@pytest.fixture(scope="module")
def policy_run(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-policies") / "result.json"
    args = _args(
        "--model", str(tiny_qwen3_dir),
        "--mode", "engine",
        "--policy", "continuous,static",
        "--arrival-rate", "auto",
        "--open-requests", str(OPEN_REQUESTS),
        "--follow-ups", str(PAIRS),
        "--concurrency", str(CONCURRENCY),
        "--requests", str(REQUESTS),
        "--max-new-tokens", str(NEW_TOKENS),
        "--max-pixels", str(256 * 256),
        "--device", "cpu",
        "--json", str(out),
        "--worker-timeout", "150",
    )  # fmt: skip
    return bench.run_bench(args), out


def test_each_policy_runs_in_its_own_engine_on_the_same_arrival_rate(policy_run: tuple[dict, Path]) -> None:
    result, _ = policy_run
    sides = result["sides"]
    assert {name: side["policy"] for name, side in sides.items()} == {
        "engine": "continuous",
        "engine_static": "static",
    }
    assert sides["engine"]["pid"] != sides["engine_static"]["pid"]
    static_capacity = sides["engine_static"]["requests_per_s"]
    rates = {policy: figures["arrival_rate_per_s"] for policy, figures in result["open_loop"].items()}
    assert rates["static"] == pytest.approx(AUTO_LOAD * static_capacity)
    assert rates["continuous"] == rates["static"]  # the static run's rate is handed on, not re-measured
    for side in sides.values():
        run = side["open_loop"]
        assert run["requests"] == OPEN_REQUESTS
        assert [r["generated_tokens"] for r in run["per_request"]] == [NEW_TOKENS] * OPEN_REQUESTS
        ttfts = sorted(r["ttft_s"] for r in run["per_request"])
        assert 0 < ttfts[0] <= run["ttft_p50_s"] <= run["ttft_p95_s"] <= ttfts[-1]
        assert run["tokens_per_s"] == pytest.approx(OPEN_REQUESTS * NEW_TOKENS / run["wall_s"])
        assert run["itl_p95_s"] > 0
        # arrivals follow the trace: the last request was submitted about when the trace says
        offsets = arrival_offsets(OPEN_REQUESTS, rates["static"], seed=0)
        assert run["offered_s"] == pytest.approx(offsets[-1], abs=0.5)


def test_the_json_has_the_policy_and_follow_up_figures(policy_run: tuple[dict, Path]) -> None:
    result, out = policy_run
    written = json.loads(out.read_text())
    for policy in ("static", "continuous"):
        assert {"ttft_p50_s", "ttft_p95_s", "itl_p95_s", "tokens_per_s"} <= written["open_loop"][policy].keys()
        side = result["sides"]["engine" if policy == "continuous" else "engine_static"]
        assert written["closed_loop"][policy]["tokens_per_s"] == pytest.approx(side["tokens_per_s"])
    follow = written["follow_up"]
    assert follow["pairs"] == PAIRS
    assert follow["first_ttft_s"] > 0 and follow["follow_up_ttft_s"] > 0
    assert follow["ratio"] == pytest.approx(follow["follow_up_ttft_s"] / follow["first_ttft_s"])


def test_follow_ups_carry_the_answer_and_reuse_the_first_prompt(policy_run: tuple[dict, Path]) -> None:
    result, _ = policy_run
    engine = result["sides"]["engine"]
    pairs = engine["follow_up"]["per_pair"]
    assert len(pairs) == PAIRS
    for pair in pairs:  # the second prompt holds the first question and answer too
        assert pair["follow_up_prompt_tokens"] > pair["first_prompt_tokens"]
    # each follow-up's prompt began with its first question's whole prompt, screenshot included: it was not
    # prefilled again (nor the screenshot encoded again)
    prefixes = engine["engine_stats"]["prefix_cache"]
    assert prefixes["hits"] >= PAIRS
    assert prefixes["saved_tokens"] >= sum(pair["first_prompt_tokens"] for pair in pairs)
    assert result["sides"]["engine_static"]["follow_up"] is None  # the follow-ups run once, on the main policy


def test_the_table_shows_the_policies_side_by_side_with_targets(policy_run: tuple[dict, Path]) -> None:
    result, _ = policy_run
    table = bench.format_table(result)
    for text in ("Open loop", "cont./static", "TTFT p95", "closed loop tokens/s", "Follow-ups", "engine (static)"):
        assert text in table
    targets = {t["name"]: t for t in result["targets"]}
    open_loop = result["open_loop"]
    ratio = open_loop["continuous"]["ttft_p95_s"] / open_loop["static"]["ttft_p95_s"]
    assert targets["open_loop_ttft_p95"]["measured"] == pytest.approx(ratio)
    assert targets["open_loop_ttft_p95"]["met"] is (ratio <= 0.33)
    assert targets["follow_up_ttft"]["met"] is (result["follow_up"]["ratio"] <= 0.4)
    assert "closed_loop_policy" in targets


@pytest.mark.parametrize(
    ("figures", "met"),
    [
        ({"static": 2.0, "continuous": 0.5}, {"open_loop_ttft_p95": True, "closed_loop_policy": True}),
        ({"static": 2.0, "continuous": 0.8}, {"open_loop_ttft_p95": False, "closed_loop_policy": True}),
    ],
)
def test_policy_verdicts_follow_the_numbers(figures: dict, met: dict) -> None:
    open_loop = {
        p: {"ttft_p95_s": v, "requests": 48, "arrival_rate_per_s": 1.0, "tokens_per_s": 1.0} for p, v in figures.items()
    }
    closed = {"static": {"tokens_per_s": 10.0}, "continuous": {"tokens_per_s": 10.0}}
    follow = {"first_ttft_s": 1.0, "follow_up_ttft_s": 0.5, "ratio": 0.5, "pairs": 4}
    verdicts = {
        t["name"]: t["met"]
        for t in policy_targets({"open_loop": open_loop, "closed_loop": closed, "follow_up": follow})
    }
    assert verdicts == {**met, "follow_up_ttft": False}


def test_arrivals_are_a_seeded_poisson_trace() -> None:
    trace = arrival_offsets(2000, rate_per_s=4.0, seed=3)
    assert trace == arrival_offsets(2000, rate_per_s=4.0, seed=3)
    assert trace != arrival_offsets(2000, rate_per_s=4.0, seed=4)
    gaps = [b - a for a, b in itertools.pairwise(trace)]
    assert trace[0] == 0 and min(gaps) >= 0
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.1)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.15)  # exponential gaps: sd = mean


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "fifo"], "use static, continuous"),
        (["--arrival-rate", "fast"], "neither 'auto' nor a number"),
        (["--arrival-rate", "0"], "above 0"),
    ],
)
def test_bad_options_get_a_clear_usage_message(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        _args(*argv)
    assert message in capsys.readouterr().err


def test_auto_rate_runs_the_static_policy_first_even_when_not_asked_for() -> None:
    assert engine_policies(("continuous",), "auto") == ("static", "continuous")
    assert engine_policies(("static", "continuous"), "auto") == ("static", "continuous")
    assert engine_policies(("continuous",), 2.0) == ("continuous",)
    assert engine_policies(None, None) == (None,)  # the configured policy, as before
