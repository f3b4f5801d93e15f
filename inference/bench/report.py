"""The plain-text report of a run: a table of both sides and their ratios, the device figures, the targets."""

from __future__ import annotations

from typing import Any

from inference.bench.summary import (
    FOLLOW_UP_TTFT_RATIO,
    GPU_TARGET_CONCURRENCY,
    GPU_TARGET_DECODE_OF_BOUND,
    GPU_TARGET_SPEEDUP,
    GPU_TARGET_TTFT_1080P_S,
    OPEN_LOOP_TTFT_P95_RATIO,
)


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
    columns = sorted(sides, key=lambda name: (name != "baseline", name == "engine"))
    header = f"{'':28}" + "".join(f"{_column(name, sides):>20}" for name in columns)
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
        line = f"{label:28}" + "".join(f"{_fmt(sides[s].get(key), digits):>20}" for s in columns)
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
    lines.extend(_policy_lines(result))
    lines.extend(_gpu_lines(result))
    lines.append("")
    lines.append("Targets:")
    for target in result["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not judged"}[target["met"]]
        shown = _shown_measure(target["name"], target["measured"])
        note = f" ({target['note']})" if target["note"] else ""
        lines.append(f"  [{verdict:>10}] {target['target']}: measured {shown}{note}")
    return "\n".join(lines)


def _column(name: str, sides: dict[str, Any]) -> str:
    """A side's column title: ``baseline``, ``engine``, or ``engine (policy)`` when several policies ran."""
    policy = sides[name].get("policy")
    several = sum(1 for side in sides.values() if side.get("policy")) > 1
    return f"engine ({policy})" if several and policy else name


def _policy_lines(result: dict[str, Any]) -> list[str]:
    """The open-loop figures of each policy side by side, closed-loop throughput, the follow-up workload."""
    open_loop = result.get("open_loop") or {}
    closed = result.get("closed_loop") or {}
    lines: list[str] = []
    if open_loop:
        first = next(iter(open_loop.values()))
        lines.append(
            f"Open loop: {first['requests']} requests per policy, Poisson arrivals at "
            f"{first['arrival_rate_per_s']:.3f}/s ({first.get('rate_source') or 'given'}), the same trace for each"
        )
    names = [p for p in ("static", "continuous") if p in open_loop or p in closed]
    both = len(names) == 2
    if open_loop or len(closed) > 1:
        ratio_header = f"{'cont./static':>14}{'target':>10}" if both else ""
        lines.append(f"{'':34}" + "".join(f"{n:>12}" for n in names) + ratio_header)
    rows = (
        ("TTFT p50 (s)", "ttft_p50_s", 3, ""),
        ("TTFT p95 (s)", "ttft_p95_s", 3, f"≤ {OPEN_LOOP_TTFT_P95_RATIO:g}×"),
        ("ITL p95 (ms)", "itl_p95_s", 1, ""),
        ("delivery gap p95 (ms)", "delivery_gap_p95_s", 1, ""),
        ("engine step p95 (ms)", "step_p95_s", 1, ""),
        ("vision unit p95 (ms)", "vision_unit_p95_s", 1, ""),
        ("text chunk p95 (ms)", "text_unit_p95_s", 1, ""),
        ("generated tokens/s", "tokens_per_s", 1, ""),
    )
    for label, key, digits, target in rows if open_loop else ():
        values = [open_loop.get(n, {}).get(key) for n in names]
        scale = 1000 if "(ms)" in label else 1
        line = f"{'open loop ' + label:34}" + "".join(
            f"{_fmt(None if v is None else v * scale, digits):>12}" for v in values
        )
        if both:
            line += f"{_fmt(_div(values[1], values[0]), 2, '×'):>14}{target:>10}"
        lines.append(line.rstrip())
    if len(closed) > 1 or (closed and open_loop):
        values = [closed.get(n, {}).get("tokens_per_s") for n in names]
        line = f"{'closed loop tokens/s':34}" + "".join(f"{_fmt(v, 1):>12}" for v in values)
        if both:
            line += f"{_fmt(_div(values[1], values[0]), 2, '×'):>14}{'≥ 1×':>10}"
        lines.append(line)
    follow = result.get("follow_up")
    if follow:
        lines.append(
            f"Follow-ups ({follow['pairs']} pairs, medians): first question TTFT {_fmt(follow['first_ttft_s'], 3)} s, "
            f"follow-up TTFT {_fmt(follow['follow_up_ttft_s'], 3)} s = {_fmt(follow['ratio'], 2, '×')} "
            f"(target ≤ {FOLLOW_UP_TTFT_RATIO:g}×)"
        )
    return [*lines, ""] if lines else []


def _div(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


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
