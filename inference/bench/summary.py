"""The result of a run: both sides' figures, engine/baseline ratios, device figures and each target's verdict.

The verdicts are computed from the measured figures; a target defined at other parameters than the run's is
reported without one.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from inference.bench.spec import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

CPU_TARGET_CONCURRENCY = 8
CPU_TARGET_TOKENS = 128
CPU_TARGET_SPEEDUP = 3.0
GPU_TARGET_DECODE_OF_BOUND = 0.60
GPU_TARGET_CONCURRENCY = 16
GPU_TARGET_SPEEDUP = 5.0
GPU_TARGET_TTFT_1080P_S = 0.250


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
