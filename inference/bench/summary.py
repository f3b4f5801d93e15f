"""The result of a run: both sides' figures, engine/baseline ratios, device figures and each target's verdict.

The verdicts are computed from the measured figures; a target defined at other parameters than the run's is
reported without one.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from inference.bench.arguments import engine_rows
from inference.bench.spec import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

CPU_TARGET_CONCURRENCY = 8
CPU_TARGET_TOKENS = 128
CPU_TARGET_SPEEDUP = 3.0
GPU_TARGET_DECODE_OF_BOUND = 0.60
GPU_TARGET_CONCURRENCY = 16
GPU_TARGET_SPEEDUP = 5.0
GPU_TARGET_TTFT_1080P_S = 0.250
OPEN_LOOP_TTFT_P95_RATIO = 0.33
"""Open-loop TTFT p95: continuous ≤ this × static."""
FOLLOW_UP_TTFT_RATIO = 0.40
"""Follow-up TTFT (median) ≤ this × the first question's."""
OPEN_LOOP_FIGURES = ("ttft_p50_s", "ttft_p95_s", "itl_p95_s", "tokens_per_s")
STEP_FIGURES = ("step_p50_s", "step_p95_s", "vision_unit_p95_s", "text_unit_p95_s")
"""The engine's own timing of the open loop's last minute (``inference.bench.engine_side.step_figures``)."""


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
    policies = policy_figures(results)
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
            "max_batch_size": engine_rows(args),
            "max_batch_tokens": args.max_batch_tokens,
            "max_pixels": any_side["max_pixels"],
            "seed": args.seed,
            "threads": args.threads,
            "mode": args.mode,
            "model_arg": args.model,
            "random_arch": args.random_arch,
            "policy": list(getattr(args, "policy", None) or []),
            "arrival_rate": getattr(args, "arrival_rate", None),
            "open_requests": getattr(args, "open_requests", None),
            "follow_ups": getattr(args, "follow_ups", 0),
        },
        "sides": results,
        "ratios": ratios,
        "gpu": gpu,
        **policies,
        "targets": evaluate_targets(results, ratios, gpu, args) + policy_targets(policies),
    }


def policy_figures(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``open_loop`` and ``closed_loop`` figures per scheduling policy, and the main engine run's ``follow_up``."""
    open_loop: dict[str, Any] = {}
    closed_loop: dict[str, Any] = {}
    for side in results.values():
        policy = side.get("policy")
        if side["side"] != "engine" or policy is None:
            continue
        closed_loop[policy] = {"tokens_per_s": side["tokens_per_s"], "requests_per_s": side["requests_per_s"]}
        run = side.get("open_loop")
        if run:
            open_loop[policy] = {key: run[key] for key in OPEN_LOOP_FIGURES} | {
                "requests": run["requests"],
                "arrival_rate_per_s": run["arrival_rate_per_s"],
                "rate_source": run.get("rate_source"),
                "ttft_max_s": run.get("ttft_max_s"),
                "delivery_gap_p95_s": run.get("delivery_gap_p95_s"),
                "latency_p95_s": run.get("latency_p95_s"),
                **{key: run.get(key) for key in STEP_FIGURES},
            }
    follow = (results.get("engine") or {}).get("follow_up")
    figures: dict[str, Any] = {"open_loop": open_loop, "closed_loop": closed_loop}
    if follow:
        figures["follow_up"] = {key: follow[key] for key in ("first_ttft_s", "follow_up_ttft_s", "ratio", "pairs")}
    return figures


def policy_targets(policies: dict[str, Any]) -> list[dict[str, Any]]:
    """The scheduling targets (static against continuous, follow-up against first question) where measured."""
    targets: list[dict[str, Any]] = []
    open_loop, closed_loop = policies["open_loop"], policies["closed_loop"]
    if {"static", "continuous"} <= open_loop.keys():
        ratio = _ratio(open_loop["continuous"]["ttft_p95_s"], open_loop["static"]["ttft_p95_s"])
        targets.append({
            "name": "open_loop_ttft_p95",
            "target": f"open-loop TTFT p95: continuous ≤ {OPEN_LOOP_TTFT_P95_RATIO:g}× static",
            "measured": ratio,
            "met": None if ratio is None else ratio <= OPEN_LOOP_TTFT_P95_RATIO,
            "note": f"{open_loop['static']['requests']} requests at {open_loop['static']['arrival_rate_per_s']:.3f}/s",
        })  # fmt: skip
    if {"static", "continuous"} <= closed_loop.keys():
        ratio = _ratio(closed_loop["continuous"]["tokens_per_s"], closed_loop["static"]["tokens_per_s"])
        targets.append({
            "name": "closed_loop_policy",
            "target": "closed-loop throughput: continuous ≥ static",
            "measured": ratio,
            "met": None if ratio is None else ratio >= 1.0,
            "note": "",
        })  # fmt: skip
    follow = policies.get("follow_up")
    if follow:
        ratio = follow["ratio"]
        targets.append({
            "name": "follow_up_ttft",
            "target": f"follow-up TTFT ≤ {FOLLOW_UP_TTFT_RATIO:g}× the first question's (medians)",
            "measured": ratio,
            "met": None if ratio is None else ratio <= FOLLOW_UP_TTFT_RATIO,
            "note": f"{follow['pairs']} pairs",
        })  # fmt: skip
    return targets


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
