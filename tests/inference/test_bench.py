"""``peekbot bench``: both sides run in their own processes on the same workload and report real figures."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference import bench
from inference.bench.probes import weight_bytes
from inference.bench.random_arch import REAL_ARCHS, ArchSpec, arch_config
from inference.bench.spec import PROBE_TOKENS
from inference.bench.summary import RATIO_FIGURES, evaluate_targets
from inference.bench.workload import SCREEN_SIZES, build_workload

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(480)  # each run loads the model in fresh processes: minutes on a busy 2-core host
REQUESTS = 4
CONCURRENCY = 2
NEW_TOKENS = 4


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def small_run(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    args = _args(
        "--model", str(tiny_qwen3_dir),
        "--concurrency", str(CONCURRENCY),
        "--requests", str(REQUESTS),
        "--max-new-tokens", str(NEW_TOKENS),
        "--max-pixels", str(256 * 256),
        "--device", "cpu",
        "--extras", "on",
        "--json", str(out),
        "--worker-timeout", "150",
    )  # fmt: skip
    return bench.run_bench(args), out


def test_both_sides_generate_exactly_t_tokens_per_request(small_run: tuple[dict, Path]) -> None:
    result, _ = small_run
    assert set(result["sides"]) == {"baseline", "engine"}
    for side in result["sides"].values():
        assert side["requests"] == REQUESTS
        assert side["generated_tokens"] == REQUESTS * NEW_TOKENS
        assert side["exact_tokens"] is True
        assert [r["generated_tokens"] for r in side["per_request"]] == [NEW_TOKENS] * REQUESTS
        sizes = [(r["width"], r["height"]) for r in side["per_request"]]
        assert len(set(sizes)) >= 3 and any(h > w for w, h in sizes)  # mixed shapes, phone included
        assert all(r["width"] * r["height"] <= 256 * 256 for r in side["per_request"])
        assert all(r["prompt_tokens"] > 0 for r in side["per_request"])
    prompts = {name: [r["prompt_tokens"] for r in s["per_request"]] for name, s in result["sides"].items()}
    assert prompts["baseline"] == prompts["engine"]  # identical prompt building and preprocessing


def test_figures_are_derived_from_the_measurements(small_run: tuple[dict, Path]) -> None:
    result, _ = small_run
    sides = result["sides"]
    for side in sides.values():
        latencies = sorted(r["latency_s"] for r in side["per_request"])
        assert side["requests_per_s"] == pytest.approx(REQUESTS / side["wall_s"])
        assert side["tokens_per_s"] == pytest.approx(side["generated_tokens"] / side["wall_s"])
        assert latencies[0] <= side["latency_p50_s"] <= side["latency_p95_s"] <= latencies[-1]
        assert side["latency_p95_s"] <= side["wall_s"]
        assert all(0 < r["ttft_s"] <= r["latency_s"] for r in side["per_request"])
        assert side["ttft_mean_s"] == pytest.approx(sum(r["ttft_s"] for r in side["per_request"]) / REQUESTS)
        assert side["peak_rss_mib"] > 50
    # each side ran in its own process, not in this one
    assert sides["baseline"]["pid"] != sides["engine"]["pid"]
    assert os.getpid() not in {sides["baseline"]["pid"], sides["engine"]["pid"]}
    ratios = result["ratios"]
    for key in ("requests_per_s", "tokens_per_s", "latency_p50_s", "latency_p95_s", "ttft_mean_s", "peak_rss_mib"):
        assert ratios[key] == pytest.approx(sides["engine"][key] / sides["baseline"][key])
    assert sides["engine"]["engine_stats"]["requests_by_outcome"]["answered"] >= REQUESTS


def test_device_figures_and_targets(small_run: tuple[dict, Path]) -> None:
    result, _ = small_run
    gpu = result["gpu"]
    assert gpu["copy_bandwidth_gb_s"] > 0
    assert 0 < gpu["decode_weights_bytes"] < gpu["weights_bytes"]
    bound_ms = gpu["decode_weights_bytes"] / (gpu["copy_bandwidth_gb_s"] * 1e9) * 1e3
    assert gpu["decode_bound_ms"] == pytest.approx(bound_ms)
    probe = gpu["probe"]
    assert probe["generated_tokens"] == PROBE_TOKENS
    assert probe["ttft_s"] > 0 and probe["decode_ms_per_step"] > 0
    assert gpu["decode_fraction_of_bound"] == pytest.approx(gpu["decode_bound_ms"] / probe["decode_ms_per_step"])
    assert set(gpu["probe_by_side"]) == {"baseline", "engine"}
    # CPU targets are defined at C=8, T=128: this run reports the figures without a verdict
    targets = {t["name"]: t for t in result["targets"]}
    assert targets["cpu_throughput"]["measured"] == pytest.approx(result["ratios"]["tokens_per_s"])
    assert targets["cpu_throughput"]["met"] is None
    assert targets["cpu_p95"]["measured"] == pytest.approx(result["ratios"]["latency_p95_s"])


def test_json_file_and_table(small_run: tuple[dict, Path]) -> None:
    result, out = small_run
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    table = bench.format_table(result)
    for label in ("requests/s", "generated tokens/s", "p50 latency", "p95 latency", "peak RSS", "engine/baseline"):
        assert label in table
    assert f"{result['ratios']['tokens_per_s']:.2f}×" in table
    assert "measured on CPU" in table
    assert "n/a on CPU" in bench.format_table({**result, "gpu": None})


def _fake_results(engine_tps: float, engine_p95: float, device: str = "cpu") -> dict:
    def side(tps: float, p95: float) -> dict:
        return {"device": device, "tokens_per_s": tps, "requests_per_s": tps / 128, "latency_p50_s": p95 / 2,
                "latency_p95_s": p95, "ttft_mean_s": 1.0, "peak_rss_mib": 500.0}  # fmt: skip

    return {"baseline": side(10.0, 20.0), "engine": side(engine_tps, engine_p95)}


@pytest.mark.parametrize(
    ("engine_tps", "engine_p95", "throughput_met", "p95_met"),
    [(35.0, 15.0, True, True), (25.0, 15.0, False, True), (40.0, 25.0, True, False)],
)
def test_cpu_verdicts_follow_the_numbers(engine_tps, engine_p95, throughput_met, p95_met) -> None:
    results = _fake_results(engine_tps, engine_p95)
    args = _args("--concurrency", "8", "--max-new-tokens", "128")
    ratios = {k: results["engine"][k] / results["baseline"][k] for k in RATIO_FIGURES}
    targets = {t["name"]: t for t in evaluate_targets(results, ratios, None, args)}
    assert targets["cpu_throughput"]["met"] is throughput_met
    assert targets["cpu_p95"]["met"] is p95_met


def test_gpu_verdicts_follow_the_numbers() -> None:
    results = _fake_results(60.0, 10.0, device="cuda:0")
    ratios = {k: results["engine"][k] / results["baseline"][k] for k in RATIO_FIGURES}
    gpu = {"decode_fraction_of_bound": 0.55, "probe": {"ttft_s": 0.2}}
    args = _args("--concurrency", "16")
    targets = {t["name"]: t for t in evaluate_targets(results, ratios, gpu, args)}
    assert targets["gpu_decode_bound"]["met"] is False
    assert targets["gpu_throughput"]["met"] is True
    assert targets["gpu_ttft_1080p"]["met"] is True
    other = {t["name"]: t for t in evaluate_targets(results, ratios, gpu, _args("--concurrency", "4"))}
    assert other["gpu_throughput"]["met"] is None


@pytest.mark.parametrize(
    ("argv", "said"),
    [(("-c", "0"), "--concurrency/-c: must be at least 1"), (("--requests", "x"), "'x' is not a whole number")],
)
def test_bad_counts_are_refused_with_a_sentence(argv: tuple[str, ...], said: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        _args(*argv)
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_workload_is_deterministic_and_mixed() -> None:
    first, second = build_workload(6, seed=3), build_workload(6, seed=3)
    assert [i.size for i in first] == [SCREEN_SIZES[i % len(SCREEN_SIZES)] for i in range(6)]
    assert [i.question for i in first] == [i.question for i in second]
    assert first[0].image.tobytes() == second[0].image.tobytes()
    assert first[0].image.tobytes() != build_workload(1, seed=4)[0].image.tobytes()
    # a screenshot is mostly flat background with text and boxes drawn on it
    colours = first[0].image.getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 10


# Published parameter counts of the checkpoints (billions, as their model cards round them).
PUBLISHED_PARAMS_B = {"qwen2_5_vl_7b": 8.29, "qwen2_5_vl_3b": 3.75, "qwen3_vl_8b": 8.77, "qwen3_vl_4b": 4.44}


def test_real_size_architectures_match_the_published_models(tiny_qwen3_dir: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    assert set(REAL_ARCHS) == set(PUBLISHED_PARAMS_B)
    for name, billions in PUBLISHED_PARAMS_B.items():
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(arch_config(name, tokenizer), dtype=torch.bfloat16)
        total, decode = weight_bytes(model)
        assert round(total / 2 / 1e9, 2) == billions, name
        if name == "qwen2_5_vl_7b":  # bf16 weights less the vision tower and input embedding: ≈ 14 GB a decode step
            assert 13.5e9 < decode < 14.5e9


def test_random_arch_builds_a_working_model(monkeypatch: pytest.MonkeyPatch, tiny_qwen3_dir: Path) -> None:
    """The real-size builder, on a shrunken spec so it runs on CPU: it must load, preprocess and generate."""
    import torch
    from transformers import AutoTokenizer

    from bot.engine import GenerationRequest
    from bot.settings import EngineSettings
    from inference.bench.random_arch import build_random_arch
    from inference.prompts import PromptBuilder

    spec = ArchSpec(
        checkpoint="test", family="qwen2_5_vl", vocab_size=151936, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
        rope_theta=1e6, mrope_section=(2, 3, 3), max_position_embeddings=4096, vision_depth=2,
        vision_hidden_size=32, vision_intermediate_size=64, vision_num_heads=2, patch_size=14,
        vision_special_blocks=(1,),
    )  # fmt: skip
    monkeypatch.setitem(REAL_ARCHS, "shrunk", spec)
    settings = EngineSettings(device="cpu", max_pixels=112 * 112, min_pixels=56 * 56)
    loaded = build_random_arch("shrunk", settings, tokenizer=AutoTokenizer.from_pretrained(tiny_qwen3_dir))
    assert loaded.dtype == torch.bfloat16 and loaded.device.type == "cpu"
    assert (loaded.patch_size, loaded.merge_size) == (14, 2)
    builder = PromptBuilder(
        loaded.tokenizer, loaded.image_processor, merge_size=2, system_prompt="",
        min_pixels=settings.min_pixels, max_pixels=settings.max_pixels, dtype=loaded.dtype,
    )  # fmt: skip
    item = build_workload(1)[0]
    prepared = builder.prepare(GenerationRequest(question=item.question, images=[item.image]))
    assert 0 < prepared.image_tokens <= 16  # at most 112×112 px at 28×28 px per token
    ids = torch.tensor([prepared.input_ids])
    output = loaded.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=prepared.pixel_values,
        image_grid_thw=prepared.image_grid_thw, max_new_tokens=3, min_new_tokens=3, do_sample=False,
    )  # fmt: skip
    assert output.shape[1] == ids.shape[1] + 3


def _image_build_context(target: Path) -> None:
    """What the container image's build stage copies (``COPY`` lines of deploy/Dockerfile), and nothing else."""
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
                copy(ROOT / source, target / source)


def test_bench_runs_from_an_installed_wheel(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    """The wheel built from what the image copies runs both the CLI and its worker: no checkout, no benchmarks/."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    context, site, elsewhere = tmp_path / "context", tmp_path / "site", tmp_path / "elsewhere"
    for folder in (context, elsewhere):
        folder.mkdir()
    _image_build_context(context)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(context)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    [wheel] = tmp_path.glob("peekbot-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site), "PEEKBOT_DATA_DIR": str(tmp_path / "data")}
    python = [sys.executable, "-P"]  # -P: neither this checkout nor the working directory is on the path
    where = subprocess.run([*python, "-c", "import inference.bench.worker as w; print(w.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site)
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [*python, "-m", "inference.bench", "--model", str(tiny_qwen3_dir), "--mode", "engine", "--requests", "1",
         "--concurrency", "1", "--max-new-tokens", "2", "--max-pixels", str(128 * 128), "--device", "cpu",
         "--extras", "off", "--threads", "1", "--worker-timeout", "120", "--json", str(out)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "generated tokens/s" in done.stdout
    engine = json.loads(out.read_text())["sides"]["engine"]
    assert engine["generated_tokens"] == 2 and engine["pid"] != os.getpid()
