"""One side's process (``python -m inference.bench.worker --spec S --out O``): load the model, run the workload on
the baseline or the engine, measure, write the figures as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.bench.baseline import run_baseline
from inference.bench.engine_side import ExtraWorkloads, run_engine
from inference.bench.measure import side_figures
from inference.bench.probes import device_extras, device_name
from inference.bench.spec import PROBE_TOKENS, WORKER_TIMEOUT_S, WorkerSpec
from inference.bench.workload import WorkItem, build_workload, fit_images, probe_item

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel


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
    if spec.policy is not None:
        overrides["scheduling"] = spec.policy
    if spec.threads is not None and "cpu_threads" in EngineSettings.model_fields:
        overrides["cpu_threads"] = spec.threads
    return EngineSettings(**overrides)


def load_for_bench(spec: WorkerSpec, settings: EngineSettings) -> LoadedModel:
    """The checkpoint the spec names, or a real-size architecture with random weights built on the device."""
    if spec.random_arch:
        from inference.bench.random_arch import build_random_arch

        return build_random_arch(spec.random_arch, settings)
    from inference.loader import load_model

    return load_model(settings)


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
    alone = probe_item(spec.seed, settings, factor) if extras_on else None
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)

    engine_stats: dict[str, Any] | None = None
    load_before = os.getloadavg()[0]
    if spec.side == "baseline":
        records, wall, probe = asyncio.run(run_baseline(loaded, settings, items, spec, alone))
    else:
        extra = extra_workloads(spec, settings, factor)
        records, wall, probe, engine_stats = asyncio.run(run_engine(loaded, settings, items, spec, alone, extra))
    load_after = os.getloadavg()[0]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    gpu_peak = torch.cuda.max_memory_allocated(loaded.device) / 2**20 if loaded.device.type == "cuda" else None

    figures = side_figures(records, wall)
    open_loop = engine_stats.pop("open_loop", None) if engine_stats else None
    follow_up = engine_stats.pop("follow_up", None) if engine_stats else None
    extras = None
    if extras_on:
        if probe is not None and spec.side == "engine":
            probe.image_tokens = _image_tokens(alone, loaded)  # the stream does not tell them
        extras = device_extras(loaded, probe)
    return {
        "side": spec.side,
        "policy": settings.scheduling if spec.side == "engine" else None,
        "pid": os.getpid(),
        "model": loaded.name,
        "device": str(loaded.device),
        "device_name": device_name(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn_implementation": loaded.attn_implementation,
        "max_pixels": settings.max_pixels,
        "load_s": load_s,
        **figures,
        "peak_rss_mib": peak_rss_mib,
        "gpu_peak_allocated_mib": gpu_peak,
        "host_load_average": [load_before, load_after],
        "engine_stats": engine_stats,
        "open_loop": open_loop,
        "follow_up": follow_up,
        "extras": extras,
    }


def extra_workloads(spec: WorkerSpec, settings: EngineSettings, factor: int) -> ExtraWorkloads:
    """The open-loop items (their own seed, so they differ from the closed loop's) and the follow-up items."""
    open_items = []
    if spec.arrival_rate is not None:
        open_items = fit_images(build_workload(spec.open_requests, spec.seed + 1), settings, factor)
    follow_up_items = []
    if spec.follow_ups > 0:
        follow_up_items = fit_images(build_workload(spec.follow_ups, spec.seed + 2), settings, factor)
    return ExtraWorkloads(open_items, follow_up_items)


def _image_tokens(item: WorkItem | None, loaded: LoadedModel) -> int:
    if item is None:
        return 0
    w, h = item.image.size
    return (w // loaded.patch_size) * (h // loaded.patch_size) // loaded.merge_size**2


def worker_main(spec_path: Path, out_path: Path) -> None:
    """Run the side ``spec_path`` describes and write its figures to ``out_path`` (JSON)."""
    spec = WorkerSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
    result = run_side(spec)
    out_path.write_text(json.dumps(result), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """The worker's entry: the runner names the spec file and where the figures go."""
    parser = argparse.ArgumentParser(prog="python -m inference.bench.worker")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench-worker %(levelname)s %(name)s: %(message)s")
    worker_main(args.spec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
