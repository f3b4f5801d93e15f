"""``benchmarks/gpu_check.sh OUTDIR --device cpu --tiny``: the GPU check's dry run goes through every stage on the
tiny model and writes its JSON and table; a stage that fails or runs out of time is recorded, not fatal."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(480)  # each run loads the model in fresh processes: minutes on a busy 2-core host
CORE_STAGES = ("build", "probe", "closed_loop", "open_loop", "oom_ladder", "cleanup")


@pytest.fixture(scope="module")
def dry_run(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    completed = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--device", "cpu", "--tiny"],
        capture_output=True,
        text=True,
        timeout=330,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads((out / "gpu_check.json").read_text()), out


def test_the_dry_run_goes_through_every_stage(dry_run: tuple[dict, Path]) -> None:
    result, _ = dry_run
    assert result["profile"] == "tiny" and result["device"] == "cpu"
    (arch,) = result["archs"]
    stages = arch["stages"]
    assert list(stages) == [*CORE_STAGES, "flash_attention", "four_bit"]
    for name in CORE_STAGES:
        assert stages[name]["status"] == "ok", (name, stages[name].get("reason"))
    for name in ("flash_attention", "four_bit"):  # not installed here, or not on CPU: said so
        assert stages[name]["status"] in ("skipped", "ok")
        assert stages[name]["status"] == "ok" or stages[name]["reason"]
    probe = stages["probe"]
    assert probe["ttft_s"] > 0 and probe["decode_ms_per_step"] > 0
    assert probe["fraction_of_bound_copy"] == pytest.approx(probe["bound_ms_copy"] / probe["decode_ms_per_step"])
    closed = stages["closed_loop"]
    assert closed["speedup"] == pytest.approx(closed["engine_tokens_per_s"] / closed["one_at_a_time_tokens_per_s"])
    for policy in ("static", "continuous"):
        assert stages["open_loop"][policy]["ttft_p95_s"] > 0
        assert stages["open_loop"][policy]["step_p95_s"] > 0  # where a token's gap goes: the step and the units
        assert stages["open_loop"][policy]["vision_unit_p95_s"] > 0
    oom = stages["oom_ladder"]
    assert oom["answered"] + oom["failed"] == oom["requests"]
    assert stages["cleanup"]["before"]["host_rss_bytes"] > 0


def test_the_table_shows_each_goal_with_its_verdict(dry_run: tuple[dict, Path]) -> None:
    result, out = dry_run
    table = (out / "gpu_check.txt").read_text()
    for goal in result["archs"][0]["goals"]:
        assert goal["goal"] in table
        assert goal["met"] is not None  # measured, even if a CPU meets none of them
    assert "TTFT p95 static" in table and "= step p95" in table
    assert "reserved" not in table  # CPU: host RSS instead of CUDA reserved


def test_a_failed_or_slow_stage_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    check = gpu_check.Check("tiny_qwen3_vl", "cpu", gpu_check.TINY, tmp_path / "arch.json")

    async def broken() -> dict:
        raise RuntimeError("no kernel image is available")

    async def slow() -> dict:
        await asyncio.sleep(60)
        return {}

    async def fine() -> dict:
        return {"value": 1}

    async def run() -> None:
        await check._run_stage("probe", broken)
        check.profile = dataclasses.replace(
            check.profile, stage_limit_s={**check.profile.stage_limit_s, "cleanup": 0.05}
        )
        await check._run_stage("cleanup", slow)
        await check._run_stage("oom_ladder", fine)

    asyncio.run(run())
    written = json.loads((tmp_path / "arch.json").read_text())["stages"]
    assert written["probe"]["status"] == "error" and "no kernel image" in written["probe"]["reason"]
    assert written["cleanup"]["status"] == "timeout"
    assert written["oom_ladder"] == {"value": 1, "status": "ok", "seconds": written["oom_ladder"]["seconds"]}


@pytest.mark.parametrize(
    ("name", "gb_s"),
    [("cuda:0 NVIDIA H100 80GB HBM3", 3350.0), ("cuda:0 NVIDIA H100 PCIe", 2000.0), ("cuda:0 NVIDIA H200", 4800.0),
     ("cpu (2 cores)", None)],
)  # fmt: skip
def test_the_bandwidth_bound_uses_the_spec_sheet_of_known_gpus(name: str, gb_s: float | None) -> None:
    assert gpu_check.spec_bandwidth(name) == gb_s


def test_the_check_never_installs_torch() -> None:
    assert not any(name.startswith(gpu_check.NEVER_INSTALLED) for name in gpu_check.NEEDED)
    assert gpu_check._requirement("transformers").startswith("transformers>=")  # pyproject's own bounds
