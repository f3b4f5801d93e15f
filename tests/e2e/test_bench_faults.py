"""The Feishu fault-injection benchmark's core, in miniature: six questions, a connection kill and a backfill."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.faults_common import plan_faults
from benchmarks.feishu_faults import Options, run_benchmark, table


def test_fault_plan_spreads_the_kinds_over_the_run() -> None:
    plan = plan_faults(200, 10, 2.0)
    assert [p.kind for p in plan].count("kill") == 2 and [p.kind for p in plan].count("discovery_failure") == 1
    assert [p.after_event for p in plan] == [10, 30, 50, 70, 90, 110, 130, 150, 170, 190]
    assert plan[0].offset_s == 5.25


async def test_benchmark_core_survives_a_kill_and_a_backfill(tiny_qwen3_dir: Path) -> None:
    options = Options(
        events=6, faults=2, rate_per_s=4.0, kinds=("kill", "backfill"), model=tiny_qwen3_dir,
        max_new_tokens=12, cpu_threads=None, warmup=False, timeout_s=60.0, settle_s=30.0,
    )
    result = await run_benchmark(options)

    answers = result["answers"]
    assert (answers["expected"], answers["delivered"], answers["lost"], answers["duplicates"]) == (6, 6, 0, 0)
    kill, backfill = result["faults"]
    assert kill["kind"] == "kill" and kill["new_connection_after_s"] is not None
    assert result["reconnect_after_kill_s"]["count"] == 1
    assert backfill["kind"] == "backfill" and result["frames"]["backfills_pushed"] == 1
    # Every frame (six questions and the backfilled copy) was acknowledged, and each question got feedback.
    assert result["frames"]["pushed"] == 7 and result["frames"]["unacked"] == 0
    assert result["ack_latency_ms"]["count"] == 7
    assert result["first_feedback_s"]["count"] == 6
    assert result["connections"]["reconnects"] >= 1
    targets = {t["name"]: t for t in result["targets"]}
    assert targets["lost answers"]["met"] is True and targets["duplicate answers"]["met"] is True
    assert targets["ack latency p99"]["met"] == (result["ack_latency_ms"]["p99"] < 100)
    assert targets["silence detected (slowest)"]["met"] is None  # no silence was injected
    assert "lost / duplicates" in table(result)
    json.dumps(result)
