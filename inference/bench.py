"""``peekbot bench``: the engine against a one-request-at-a-time wrapper, on the same workload.

Two sides, each in its own subprocess (``python -m inference.bench --worker SIDE``) so that its peak
RSS is its own:

* **baseline**: what a plain FastAPI-style wrapper does: one ``model.generate`` per request behind
  a lock, with the same prompt building and image preprocessing as the engine;
* **engine**: ``TransformersEngine`` with dynamic batching (max batch size defaults to the concurrency).

Both get N requests (mixed screenshot sizes, one question each, exactly T new tokens, greedy) from C
concurrent clients. On CUDA each side also measures device copy bandwidth, the memory-bandwidth bound
of one decode step, batch-1 decode time and the time to first token of one 1080p screenshot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.bench_workload import WorkItem, build_workload, make_screenshot
from inference.random_arch import REAL_ARCHS
from inference.stats import percentile

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel

logger = logging.getLogger(__name__)

SIDES = ("baseline", "engine")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROBE_TOKENS = 64
PROBE_REPEATS = 3
WARMUP_TOKENS = 2
PROBE_QUESTION = "What does this error message mean and how do I fix it?"
WORKER_TIMEOUT_S = 6 * 3600.0

# Targets (issue 2, item 6). The verdicts are computed from the measured figures.
CPU_TARGET_CONCURRENCY = 8
CPU_TARGET_TOKENS = 128
CPU_TARGET_SPEEDUP = 3.0
GPU_TARGET_DECODE_OF_BOUND = 0.60
GPU_TARGET_CONCURRENCY = 16
GPU_TARGET_SPEEDUP = 5.0
GPU_TARGET_TTFT_1080P_S = 0.250
DEFAULT_MAX_PIXELS = 1920 * 1080
"""The default pixel budget (``EngineSettings.max_pixels``) the GPU targets are defined at."""


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``peekbot bench``."""
    parser.add_argument("--concurrency", "-c", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", "-n", type=int, default=32, help="requests in total (default 32)")
    parser.add_argument(
        "--max-new-tokens", "-t", type=int, default=128, help="new tokens per request, exactly (default 128)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="HF model id or local dir (default: a tiny random model, built once)")
    source.add_argument(
        "--random-arch",
        choices=sorted(REAL_ARCHS),
        help="a real-size architecture with random bf16 weights built on the device (no download)",
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: PEEKBOT_DEVICE, else auto)"
    )
    parser.add_argument("--max-batch-size", type=int, default=None, help="engine max batch size (default: C)")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="engine max prompt tokens per batch (default: settings)"
    )
    parser.add_argument("--max-pixels", type=int, default=None, help="pixel budget per image (default: settings)")
    parser.add_argument("--mode", choices=("both", *SIDES), default="both", help="which sides to run")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the result here")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads in each side (default: PEEKBOT_CPU_THREADS, else torch's own)",
    )
    parser.add_argument(
        "--extras",
        choices=("auto", "on", "off"),
        default="auto",
        help="bandwidth / decode / 1080p TTFT probes: auto = only on CUDA",
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=WORKER_TIMEOUT_S, help="seconds one side may take (default 6 h)"
    )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one side's subprocess needs to know (JSON round trip)."""

    side: str
    model: str | None
    random_arch: str | None
    device: str | None
    concurrency: int
    requests: int
    max_new_tokens: int
    max_batch_size: int
    max_batch_tokens: int | None
    max_pixels: int | None
    seed: int
    extras: str
    threads: int | None = None


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sides ``args.mode`` names, each in a subprocess; return the JSON-able result."""
    _validate(args)
    model = None if args.random_arch else (args.model or str(default_tiny_model()))
    sides = list(SIDES) if args.mode == "both" else [args.mode]
    results: dict[str, dict[str, Any]] = {}
    for side in sides:
        spec = WorkerSpec(
            side=side,
            model=model,
            random_arch=args.random_arch,
            device=args.device,
            concurrency=args.concurrency,
            requests=args.requests,
            max_new_tokens=args.max_new_tokens,
            max_batch_size=args.max_batch_size or args.concurrency,
            max_batch_tokens=args.max_batch_tokens,
            max_pixels=args.max_pixels,
            seed=args.seed,
            extras=args.extras,
            threads=args.threads,
        )
        logger.info("bench: running the %s side (%d requests, %d clients)", side, args.requests, args.concurrency)
        results[side] = run_worker(spec, timeout_s=args.worker_timeout)
    result = summarise(results, args)
    if args.json_path is not None:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        logger.info("bench: wrote %s", args.json_path)
    return result


def _validate(args: argparse.Namespace) -> None:
    for name in ("concurrency", "requests", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_batch_size", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")


def default_tiny_model() -> Path:
    """A tiny random Qwen3-VL checkpoint under the data dir, built on first use."""
    from bot.settings import CoreSettings
    from inference.tiny import build_tiny_model

    directory = CoreSettings().data_dir / "tiny-model" / "qwen3_vl"
    if not (directory / "config.json").exists():
        logger.info("bench: building a tiny random model in %s", directory)
        build_tiny_model(directory, "qwen3_vl")
    return directory


def run_worker(spec: WorkerSpec, *, timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run one side in a fresh interpreter (its log goes to our stderr) and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="peekbot-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, "-m", "inference.bench", "--worker"]
        command += ["--spec", str(spec_path), "--out", str(out_path)]
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"the {spec.side} benchmark worker took longer than {timeout_s:.0f} s") from None
        except BaseException:
            process.kill()
            process.wait()
            raise
        if code != 0 or not out_path.exists():
            raise RuntimeError(f"the {spec.side} benchmark worker exited with code {code} (its log is above)")
        return json.loads(out_path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- summary


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


RATIO_FIGURES = ("requests_per_s", "tokens_per_s", "latency_p50_s", "latency_p95_s", "ttft_mean_s", "peak_rss_mib")


def summarise(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The result document: parameters, both sides, engine/baseline ratios, GPU figures and targets."""
    any_side = next(iter(results.values()))
    expected_tokens = args.requests * args.max_new_tokens
    for side in results.values():
        side["expected_generated_tokens"] = expected_tokens
        side["exact_tokens"] = side["generated_tokens"] == expected_tokens
        if not side["exact_tokens"]:
            logger.warning(
                "bench: the %s side generated %d tokens, expected %d",
                side["side"],
                side["generated_tokens"],
                expected_tokens,
            )
    ratios: dict[str, float | None] = {}
    if "engine" in results and "baseline" in results:
        ratios = {key: _ratio(results["engine"].get(key), results["baseline"].get(key)) for key in RATIO_FIGURES}
    gpu = gpu_figures(results)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "model": any_side["model"],
        "device": any_side["device"],
        "device_name": any_side["device_name"],
        "dtype": any_side["dtype"],
        "attn_implementation": any_side["attn_implementation"],
        "parameters": {
            "concurrency": args.concurrency,
            "requests": args.requests,
            "max_new_tokens": args.max_new_tokens,
            "max_batch_size": args.max_batch_size or args.concurrency,
            "max_batch_tokens": args.max_batch_tokens,
            "max_pixels": any_side["max_pixels"],
            "seed": args.seed,
            "threads": args.threads,
            "mode": args.mode,
            "model_arg": args.model,
            "random_arch": args.random_arch,
        },
        "sides": results,
        "ratios": ratios,
        "gpu": gpu,
        "targets": evaluate_targets(results, ratios, gpu, args),
    }


def gpu_figures(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Bandwidth bound and probe figures, from the engine side when it ran (else the baseline)."""
    side = results.get("engine") or results.get("baseline")
    if side is None or side.get("extras") is None:
        return None
    extras = dict(side["extras"], source=side["side"])
    probes = {name: r["extras"]["probe"] for name, r in results.items() if r.get("extras")}
    extras["probe_by_side"] = probes
    return extras


def evaluate_targets(
    results: dict[str, dict[str, Any]],
    ratios: dict[str, float | None],
    gpu: dict[str, Any] | None,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Each target with the measured figure and ``met`` (``None`` when this run cannot judge it)."""
    device = next(iter(results.values()))["device"]
    targets: list[dict[str, Any]] = []
    speedup = ratios.get("tokens_per_s")
    both = "engine" in results and "baseline" in results

    def add(name: str, target: str, measured: float | None, met: bool | None, note: str = "") -> None:
        targets.append({"name": name, "target": target, "measured": measured, "met": met, "note": note})

    if device.startswith("cpu"):
        at_point = args.concurrency == CPU_TARGET_CONCURRENCY and args.max_new_tokens == CPU_TARGET_TOKENS
        note = "" if at_point else f"defined at C={CPU_TARGET_CONCURRENCY}, T={CPU_TARGET_TOKENS}"
        add(
            "cpu_throughput",
            f"engine ≥ {CPU_TARGET_SPEEDUP:g}× baseline throughput (CPU, tiny model)",
            speedup,
            None if speedup is None or not at_point else speedup >= CPU_TARGET_SPEEDUP,
            note if both else "needs --mode both",
        )
        p95 = ratios.get("latency_p95_s")
        add(
            "cpu_p95",
            "engine p95 latency ≤ baseline p95",
            p95,
            None if p95 is None or not at_point else p95 <= 1.0,
            note if both else "needs --mode both",
        )
        return targets
    decode = (gpu or {}).get("decode_fraction_of_bound")
    add(
        "gpu_decode_bound",
        f"batch-1 decode ≥ {GPU_TARGET_DECODE_OF_BOUND:.0%} of the memory-bandwidth bound",
        decode,
        None if decode is None else decode >= GPU_TARGET_DECODE_OF_BOUND,
        "" if decode is not None else "needs --extras auto|on",
    )
    at_point = args.concurrency == GPU_TARGET_CONCURRENCY
    add(
        "gpu_throughput",
        f"engine ≥ {GPU_TARGET_SPEEDUP:g}× one-at-a-time throughput at C={GPU_TARGET_CONCURRENCY}",
        speedup,
        None if speedup is None or not at_point else speedup >= GPU_TARGET_SPEEDUP,
        "" if at_point else f"defined at C={GPU_TARGET_CONCURRENCY}",
    )
    ttft = (gpu or {}).get("probe", {}).get("ttft_s")
    budget = next(iter(results.values())).get("max_pixels", DEFAULT_MAX_PIXELS)
    at_budget = budget == DEFAULT_MAX_PIXELS
    add(
        "gpu_ttft_1080p",
        f"1080p screenshot time to first token ≤ {GPU_TARGET_TTFT_1080P_S * 1000:.0f} ms",
        ttft,
        None if ttft is None or not at_budget else ttft <= GPU_TARGET_TTFT_1080P_S,
        "needs --extras auto|on" if ttft is None else "" if at_budget else f"defined at {DEFAULT_MAX_PIXELS:,} pixels",
    )
    return targets


# ------------------------------------------------------------------------------------------------ table


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text report of ``run_bench``'s result."""
    params = result["parameters"]
    sides = result["sides"]
    ratios = result["ratios"]
    lines = [
        f"peekbot bench · {result['date']} · model {result['model']} on {result['device_name']} "
        f"({result['dtype']}, attention {result['attn_implementation']})",
        f"C={params['concurrency']} clients, N={params['requests']} requests, T={params['max_new_tokens']} new tokens "
        f"each (greedy), engine max batch {params['max_batch_size']}, max pixels {params['max_pixels']:,}",
        "",
    ]
    columns = [s for s in SIDES if s in sides]
    header = f"{'':28}" + "".join(f"{name:>14}" for name in columns)
    if ratios:
        header += f"{'engine/baseline':>18}"
    lines.append(header)
    rows = (
        ("requests/s", "requests_per_s", 3),
        ("generated tokens/s", "tokens_per_s", 1),
        ("generated tokens", "generated_tokens", 0),
        ("p50 latency (s)", "latency_p50_s", 2),
        ("p95 latency (s)", "latency_p95_s", 2),
        ("mean time to 1st token (s)", "ttft_mean_s", 2),
        ("peak RSS (MiB)", "peak_rss_mib", 0),
        ("peak GPU memory (MiB)", "gpu_peak_allocated_mib", 0),
        ("wall time (s)", "wall_s", 1),
    )
    for label, key, digits in rows:
        if all(sides[s].get(key) is None for s in columns):
            continue
        line = f"{label:28}" + "".join(f"{_fmt(sides[s].get(key), digits):>14}" for s in columns)
        if ratios and key in ratios:
            line += f"{_fmt(ratios[key], 2, '×'):>18}"
        lines.append(line)
    loads = ", ".join(
        f"{name} {sides[name]['host_load_average'][0]:.1f} → {sides[name]['host_load_average'][1]:.1f}"
        for name in columns
        if sides[name].get("host_load_average")
    )
    if loads:
        lines.append(f"host load average (1 min) before → after the timed run: {loads}")
    for name in columns:
        if not sides[name]["exact_tokens"]:
            lines.append(
                f"warning: {name} generated {sides[name]['generated_tokens']} tokens, "
                f"expected {sides[name]['expected_generated_tokens']}"
            )
    lines.append("")
    lines.extend(_gpu_lines(result))
    lines.append("")
    lines.append("Targets:")
    for target in result["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not judged"}[target["met"]]
        shown = _shown_measure(target["name"], target["measured"])
        note = f" ({target['note']})" if target["note"] else ""
        lines.append(f"  [{verdict:>10}] {target['target']}: measured {shown}{note}")
    return "\n".join(lines)


def _shown_measure(name: str, measured: float | None) -> str:
    if measured is None:
        return "n/a"
    if name == "gpu_ttft_1080p":
        return f"{measured * 1000:.0f} ms"
    if name == "gpu_decode_bound":
        return f"{measured:.0%}"
    return f"{measured:.2f}×"


def _gpu_lines(result: dict[str, Any]) -> list[str]:
    gpu = result["gpu"]
    if gpu is None:
        reason = "n/a on CPU" if result["device"].startswith("cpu") else "not measured (--extras off)"
        return [f"GPU figures: {reason}"]
    probe = gpu["probe"]
    lines = [
        "GPU figures" + (" (measured on CPU, --extras on)" if result["device"].startswith("cpu") else "") + ":",
        f"  device copy bandwidth          {_fmt(gpu['copy_bandwidth_gb_s'], 1)} GB/s",
        f"  weights (all / read per step)  {gpu['weights_bytes'] / 1e9:.2f} GB / "
        f"{gpu['decode_weights_bytes'] / 1e9:.2f} GB",
        f"  bandwidth bound per decode step {_fmt(gpu['decode_bound_ms'], 2)} ms",
        f"  batch-1 decode ({gpu['source']:8})     {_fmt(probe.get('decode_ms_per_step'), 2)} ms/step = "
        f"{_fmt(_pct(gpu.get('decode_fraction_of_bound')), 0)} % of the bound "
        f"(target ≥ {GPU_TARGET_DECODE_OF_BOUND:.0%})",
        f"  1080p time to first token      {_fmt(_ms(probe.get('ttft_s')), 0)} ms "
        f"({probe.get('image_tokens')} image tokens; target ≤ {GPU_TARGET_TTFT_1080P_S * 1000:.0f} ms)",
    ]
    for side, figures in gpu.get("probe_by_side", {}).items():
        lines.append(
            f"    {side:9} probe: TTFT {_fmt(_ms(figures.get('ttft_s')), 0)} ms, "
            f"decode {_fmt(figures.get('decode_ms_per_step'), 2)} ms/step"
        )
    speedup = result["ratios"].get("tokens_per_s")
    lines.append(
        f"  throughput ratio at C={result['parameters']['concurrency']}      {_fmt(speedup, 2, '×')} "
        f"(target ≥ {GPU_TARGET_SPEEDUP:g}× at C={GPU_TARGET_CONCURRENCY})"
    )
    return lines


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


# ------------------------------------------------------------------------------------------------ worker


@dataclass(slots=True)
class BenchRequest:
    index: int
    width: int
    height: int
    prompt_tokens: int
    generated_tokens: int
    latency_s: float
    ttft_s: float | None


def engine_settings(spec: WorkerSpec) -> EngineSettings:
    """The engine settings both sides load the model with."""
    from bot.settings import EngineSettings

    overrides: dict[str, Any] = {
        "max_batch_size": spec.max_batch_size,
        "queue_limit": max(spec.requests + 1, spec.concurrency),
        "max_new_tokens": max(spec.max_new_tokens, PROBE_TOKENS),
        "request_timeout_s": WORKER_TIMEOUT_S,
    }
    if spec.device is not None:
        overrides["device"] = spec.device
    if spec.model is not None:
        overrides["model"] = spec.model
    if spec.max_batch_tokens is not None:
        overrides["max_batch_tokens"] = spec.max_batch_tokens
    if spec.max_pixels is not None:
        overrides["max_pixels"] = spec.max_pixels
    if spec.threads is not None and "cpu_threads" in EngineSettings.model_fields:
        overrides["cpu_threads"] = spec.threads
    return EngineSettings(**overrides)


def load_for_bench(spec: WorkerSpec, settings: EngineSettings) -> LoadedModel:
    if spec.random_arch:
        from inference.random_arch import build_random_arch

        return build_random_arch(spec.random_arch, settings)
    from inference.loader import load_model

    return load_model(settings)


def fit_images(items: Sequence[WorkItem], settings: EngineSettings, factor: int) -> list[WorkItem]:
    """Resize every screenshot into the pixel budget, as the bot does before it asks the engine."""
    from PIL import Image

    from bot.media.images import fit_to_budget

    fitted = []
    for item in items:
        size = fit_to_budget(
            item.image.width,
            item.image.height,
            max_pixels=settings.max_pixels,
            min_pixels=settings.min_pixels,
            factor=factor,
        )
        image = item.image if size == item.image.size else item.image.resize(size, Image.Resampling.LANCZOS)
        fitted.append(WorkItem(index=item.index, image=image, question=item.question))
    return fitted


async def drive(
    items: Sequence[WorkItem],
    concurrency: int,
    serve: Callable[[WorkItem], Awaitable[BenchRequest]],
    *,
    label: str = "timed run",
) -> tuple[list[BenchRequest], float]:
    """C clients take requests from one shared list until it is empty; returns records and wall time."""
    pending = iter(items)
    records: list[BenchRequest] = []
    step = max(1, len(items) // 4)

    async def client() -> None:
        for item in pending:
            records.append(await serve(item))
            if len(records) % step == 0:
                logger.info("bench: %s: %d/%d requests done", label, len(records), len(items))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return sorted(records, key=lambda r: r.index), time.perf_counter() - started


def side_figures(records: Sequence[BenchRequest], wall_s: float) -> dict[str, Any]:
    """Throughput and latency of one side's timed run."""
    latencies = [r.latency_s for r in records]
    ttfts = [r.ttft_s for r in records if r.ttft_s is not None]
    generated = sum(r.generated_tokens for r in records)
    return {
        "requests": len(records),
        "wall_s": wall_s,
        "requests_per_s": len(records) / wall_s,
        "generated_tokens": generated,
        "tokens_per_s": generated / wall_s,
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_mean_s": sum(latencies) / len(latencies),
        "ttft_mean_s": sum(ttfts) / len(ttfts) if ttfts else None,
        "per_request": [asdict(r) for r in records],
    }


@dataclass(slots=True)
class Probe:
    """One request alone: time to first token and decode time per step."""

    ttft_s: float | None
    decode_ms_per_step: float | None
    prompt_tokens: int
    image_tokens: int
    generated_tokens: int
    samples: list[dict[str, float | None]] = field(default_factory=list)


def median_probe(probes: Sequence[Probe]) -> Probe:
    """The median of each timing over repeated probes (one slow outlier on a busy machine does not count)."""

    def median(values: list[float | None]) -> float | None:
        present = sorted(v for v in values if v is not None)
        return present[len(present) // 2] if present else None

    return Probe(
        ttft_s=median([p.ttft_s for p in probes]),
        decode_ms_per_step=median([p.decode_ms_per_step for p in probes]),
        prompt_tokens=probes[0].prompt_tokens,
        image_tokens=probes[0].image_tokens,
        generated_tokens=probes[0].generated_tokens,
        samples=[{"ttft_s": p.ttft_s, "decode_ms_per_step": p.decode_ms_per_step} for p in probes],
    )


def _decode_ms(first: float | None, last: float | None, tokens: int) -> float | None:
    if first is None or last is None or tokens < 2 or last <= first:
        return None
    return (last - first) / (tokens - 1) * 1000


def _token_clock() -> Any:
    """A ``generate`` streamer that only notes when the first and the last new tokens arrive."""
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self._prompt_seen = False
            self.first: float | None = None
            self.last: float | None = None

        def put(self, value: Any) -> None:
            if not self._prompt_seen:  # generate() pushes the prompt first
                self._prompt_seen = True
                return
            _synchronize(getattr(value, "device", None))  # the token exists once its kernels are done
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now

        def end(self) -> None:
            return None

    return TokenClock()


def _eos_blocker(eos_ids: Sequence[int]) -> Any:
    """A logits processor that never lets an end-of-sequence token win (its mask is built once).

    With ``max_new_tokens = T`` this makes ``generate`` produce exactly T tokens, at the cost of one
    ``masked_fill`` per step: the same work the engine's per-row minimum does, and far less than
    ``generate(min_new_tokens=…)``, which rebuilds a vocabulary-sized mask at every step.
    """
    import torch
    from transformers import LogitsProcessor

    class BlockEndOfSequence(LogitsProcessor):
        def __init__(self) -> None:
            self._mask: torch.Tensor | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
            vocab = scores.shape[-1]
            if self._mask is None or self._mask.shape[-1] != vocab or self._mask.device != scores.device:
                self._mask = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
                self._mask[[i for i in eos_ids if 0 <= i < vocab]] = True
            return scores.masked_fill(self._mask, float("-inf"))

    return BlockEndOfSequence()


def _eos_ids(loaded: LoadedModel) -> list[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(int(loaded.tokenizer.eos_token_id))
    return sorted(ids)


class BaselineServer:
    """One ``model.generate`` per request, one request at a time (a lock), as a plain web wrapper would."""

    def __init__(self, loaded: LoadedModel, settings: EngineSettings) -> None:
        from inference.prompts import PromptBuilder

        self.loaded = loaded
        self.prompts = PromptBuilder(
            loaded.tokenizer,
            loaded.image_processor,
            merge_size=loaded.merge_size,
            system_prompt=settings.system_prompt,
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
            dtype=loaded.dtype,
        )
        self._lock = asyncio.Lock()
        self._block_eos = _eos_blocker(_eos_ids(loaded))

    def generate(self, item: WorkItem, max_new_tokens: int, started: float) -> tuple[BenchRequest, Probe]:
        """Build the prompt, preprocess the image and generate exactly ``max_new_tokens`` tokens."""
        import torch
        from transformers import LogitsProcessorList

        from bot.engine import GenerationRequest

        prepared = self.prompts.prepare(GenerationRequest(question=item.question, images=[item.image]))
        device = self.loaded.device
        input_ids = torch.tensor([prepared.input_ids], dtype=torch.long, device=device)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if prepared.pixel_values is not None and prepared.image_grid_thw is not None:
            inputs["pixel_values"] = prepared.pixel_values.to(device)
            inputs["image_grid_thw"] = prepared.image_grid_thw.to(device)
            # Which tokens are image tokens: without it generate gives them 1-D text positions, not 2-D mRoPE ones.
            inputs["mm_token_type_ids"] = (input_ids == self.prompts.image_token_id).int()
        clock = _token_clock()
        with torch.inference_mode():
            output = self.loaded.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([self._block_eos]),
                streamer=clock,
            )
        _synchronize(device)
        finished = time.perf_counter()
        generated = int(output.shape[1] - input_ids.shape[1])
        record = BenchRequest(
            index=item.index,
            width=item.image.width,
            height=item.image.height,
            prompt_tokens=prepared.prompt_tokens,
            generated_tokens=generated,
            latency_s=finished - started,
            ttft_s=None if clock.first is None else clock.first - started,
        )
        probe = Probe(
            ttft_s=record.ttft_s,
            decode_ms_per_step=_decode_ms(clock.first, clock.last, generated),
            prompt_tokens=prepared.prompt_tokens,
            image_tokens=prepared.image_tokens,
            generated_tokens=generated,
        )
        return record, probe

    async def serve(self, item: WorkItem, max_new_tokens: int) -> tuple[BenchRequest, Probe]:
        started = time.perf_counter()
        async with self._lock:
            return await asyncio.to_thread(self.generate, item, max_new_tokens, started)


async def run_baseline(
    loaded: LoadedModel,
    settings: EngineSettings,
    items: Sequence[WorkItem],
    spec: WorkerSpec,
    probe_item: WorkItem | None,
) -> tuple[list[BenchRequest], float, Probe | None]:
    server = BaselineServer(loaded, settings)

    async def warm_up(item: WorkItem) -> BenchRequest:
        record, _ = await server.serve(item, WARMUP_TOKENS)
        return record

    await drive(items[: spec.concurrency], spec.concurrency, warm_up, label="warm-up")

    async def serve(item: WorkItem) -> BenchRequest:
        record, _ = await server.serve(item, spec.max_new_tokens)
        return record

    records, wall = await drive(items, spec.concurrency, serve)
    probe = None
    if probe_item is not None:
        probe = median_probe([(await server.serve(probe_item, PROBE_TOKENS))[1] for _ in range(PROBE_REPEATS)])
    return records, wall, probe


async def _engine_request(engine: Any, item: WorkItem, max_new_tokens: int) -> tuple[BenchRequest, Probe]:
    from bot.engine import GenerationRequest

    started = time.perf_counter()
    stream = engine.submit(
        GenerationRequest(
            question=item.question,
            images=[item.image],
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            timeout_s=WORKER_TIMEOUT_S,
        )
    )
    first: float | None = None
    last: float | None = None
    async for delta in stream:
        if not delta:
            continue
        last = time.perf_counter()
        if first is None:
            first = last
    finished = time.perf_counter()
    usage = stream.usage
    record = BenchRequest(
        index=item.index,
        width=item.image.width,
        height=item.image.height,
        prompt_tokens=usage.prompt_tokens,
        generated_tokens=usage.generated_tokens,
        latency_s=finished - started,
        ttft_s=None if first is None else first - started,
    )
    probe = Probe(
        ttft_s=record.ttft_s,
        decode_ms_per_step=_decode_ms(first, last, usage.generated_tokens),
        prompt_tokens=usage.prompt_tokens,
        image_tokens=0,
        generated_tokens=usage.generated_tokens,
    )
    return record, probe


async def run_engine(
    loaded: LoadedModel,
    settings: EngineSettings,
    items: Sequence[WorkItem],
    spec: WorkerSpec,
    probe_item: WorkItem | None,
) -> tuple[list[BenchRequest], float, Probe | None, dict[str, Any]]:
    from inference.transformers_engine import TransformersEngine

    engine = TransformersEngine(settings, loaded=loaded)
    await engine.start()
    try:

        async def warm_up(item: WorkItem) -> BenchRequest:
            record, _ = await _engine_request(engine, item, WARMUP_TOKENS)
            return record

        await drive(items[: spec.concurrency], spec.concurrency, warm_up, label="warm-up")

        async def serve(item: WorkItem) -> BenchRequest:
            record, _ = await _engine_request(engine, item, spec.max_new_tokens)
            return record

        records, wall = await drive(items, spec.concurrency, serve)
        stats = engine.stats()
        probe = None
        if probe_item is not None:
            probes = [(await _engine_request(engine, probe_item, PROBE_TOKENS))[1] for _ in range(PROBE_REPEATS)]
            probe = median_probe(probes)
    finally:
        await engine.stop()
    engine_stats = {
        "requests_by_outcome": dict(stats.requests_by_outcome),
        "generated_tokens": stats.generated_tokens,
        "batches": getattr(stats, "batches", None),
        "mean_batch_size": getattr(stats, "mean_batch_size", None),
    }
    return records, wall, probe, engine_stats


# ------------------------------------------------------------------------------------------ device figures


def _synchronize(device: Any) -> None:
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def measure_copy_bandwidth(device: Any, *, max_bytes: int = 1 << 30, iterations: int = 10) -> float:
    """Device memory bandwidth in GB/s from large tensor copies (each copy reads and writes its bytes)."""
    import torch

    size = max_bytes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        size = min(size, int(free * 0.4))
    else:
        size = min(size, 256 << 20)
    size = max(size, 16 << 20)
    source = torch.empty(size, dtype=torch.uint8, device=device)
    source.fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        target.copy_(source)
    _synchronize(device)
    elapsed = time.perf_counter() - started
    del source, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * size * iterations / elapsed / 1e9


def weight_bytes(model: Any) -> tuple[int, int]:
    """(all weight bytes, bytes one decode step reads): the latter leaves out the vision tower and,
    when not tied to the output head, the input embedding (a decode step reads one row of it)."""
    total = 0
    vision = 0
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        size = param.numel() * param.element_size()
        total += size
        if ".visual." in f".{name}":
            vision += size
    decode = total - vision
    embeddings = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if embeddings is not None and (head is None or head.weight is not embeddings.weight):
        decode -= embeddings.weight.numel() * embeddings.weight.element_size()
    return total, decode


def device_extras(loaded: LoadedModel, probe: Probe | None) -> dict[str, Any]:
    """Copy bandwidth, weights, the bandwidth bound of a decode step and the probe against it."""
    bandwidth = measure_copy_bandwidth(loaded.device)
    total, decode = weight_bytes(loaded.model)
    bound_ms = decode / (bandwidth * 1e9) * 1000
    measured = probe.decode_ms_per_step if probe is not None else None
    return {
        "copy_bandwidth_gb_s": bandwidth,
        "weights_bytes": total,
        "decode_weights_bytes": decode,
        "decode_bound_ms": bound_ms,
        "decode_fraction_of_bound": None if not measured else bound_ms / measured,
        "probe": asdict(probe) if probe is not None else {},
    }


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _probe_item(seed: int, settings: EngineSettings, factor: int) -> WorkItem:
    item = WorkItem(index=-1, image=make_screenshot(1920, 1080, seed=seed + 7919), question=PROBE_QUESTION)
    return fit_images([item], settings, factor)[0]


def run_side(spec: WorkerSpec) -> dict[str, Any]:
    """Load the model, run one side on the workload and measure it (runs inside the worker process)."""
    import torch

    settings = engine_settings(spec)
    threads = spec.threads or getattr(settings, "cpu_threads", None)
    if threads:  # both sides alike (the engine would set it only for itself)
        torch.set_num_threads(threads)
    started = time.perf_counter()
    loaded = load_for_bench(spec, settings)
    load_s = time.perf_counter() - started
    factor = loaded.patch_size * loaded.merge_size
    items = fit_images(build_workload(spec.requests, spec.seed), settings, factor)
    extras_on = spec.extras == "on" or (spec.extras == "auto" and loaded.device.type == "cuda")
    probe_item = _probe_item(spec.seed, settings, factor) if extras_on else None
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)

    engine_stats: dict[str, Any] | None = None
    load_before = os.getloadavg()[0]
    if spec.side == "baseline":
        records, wall, probe = asyncio.run(run_baseline(loaded, settings, items, spec, probe_item))
    else:
        records, wall, probe, engine_stats = asyncio.run(run_engine(loaded, settings, items, spec, probe_item))
    load_after = os.getloadavg()[0]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    gpu_peak = torch.cuda.max_memory_allocated(loaded.device) / 2**20 if loaded.device.type == "cuda" else None

    figures = side_figures(records, wall)
    extras = None
    if extras_on:
        if probe is not None and spec.side == "engine":
            probe.image_tokens = _image_tokens(probe_item, loaded, settings)
        extras = device_extras(loaded, probe)
    return {
        "side": spec.side,
        "pid": os.getpid(),
        "model": loaded.name,
        "device": str(loaded.device),
        "device_name": _device_name(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn_implementation": loaded.attn_implementation,
        "max_pixels": settings.max_pixels,
        "load_s": load_s,
        **figures,
        "peak_rss_mib": peak_rss_mib,
        "gpu_peak_allocated_mib": gpu_peak,
        "host_load_average": [load_before, load_after],
        "engine_stats": engine_stats,
        "extras": extras,
    }


def _image_tokens(item: WorkItem | None, loaded: LoadedModel, settings: EngineSettings) -> int:
    if item is None:
        return 0
    w, h = item.image.size
    return (w // loaded.patch_size) * (h // loaded.patch_size) // loaded.merge_size**2


# ------------------------------------------------------------------------------------------------ entry


def worker_main(spec_path: Path, out_path: Path) -> None:
    spec = WorkerSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
    result = run_side(spec)
    out_path.write_text(json.dumps(result), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inference.bench``: the same options as ``peekbot bench`` (and the worker entry)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--worker":
        parser = argparse.ArgumentParser(prog="python -m inference.bench --worker")
        parser.add_argument("--spec", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        worker_args = parser.parse_args(argv[1:])
        logging.basicConfig(level=logging.INFO, format="%(asctime)s bench-worker %(levelname)s %(name)s: %(message)s")
        worker_main(worker_args.spec, worker_args.out)
        return 0
    parser = argparse.ArgumentParser(prog="python -m inference.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_bench(args)
    sys.stdout.write(format_table(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
