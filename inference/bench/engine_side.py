"""The engine side: ``TransformersEngine`` under one scheduling policy, each request read from its answer stream:
the closed-loop timed run, the probe, then (when asked) the open-loop run and the follow-up workload."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inference.bench.measure import BenchRequest, Probe, probe_alone, timed_request, timed_run
from inference.bench.open_loop import exact_request, follow_ups, open_loop, open_loop_figures, stream_request
from inference.bench.spec import AUTO_LOAD, WorkerSpec
from inference.bench.workload import WorkItem, arrival_offsets

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel

logger = logging.getLogger(__name__)


async def engine_request(engine: Any, item: WorkItem, max_new_tokens: int) -> tuple[BenchRequest, Probe]:
    """Submit one request and read its stream: the first and last non-empty deltas time the answer."""
    record = await stream_request(engine, exact_request(item, max_new_tokens), item.index)
    return timed_request(
        item,
        started=record.submitted,
        first=record.deliveries[0][0] if record.deliveries else None,
        last=record.deliveries[-1][0] if record.deliveries else None,
        finished=record.finished,
        prompt_tokens=record.prompt_tokens,
        generated_tokens=record.generated_tokens,
    )


async def run_engine(
    loaded: LoadedModel,
    settings: EngineSettings,
    items: Sequence[WorkItem],
    spec: WorkerSpec,
    probe_item: WorkItem | None,
    extra: ExtraWorkloads | None = None,
) -> tuple[list[BenchRequest], float, Probe | None, dict[str, Any]]:
    """The timed run, the probe and the ``extra`` workloads on a started engine: records, wall time, probe, the
    engine's own counts (with ``open_loop`` and ``follow_up`` figures when they ran)."""
    from inference.transformers_engine import TransformersEngine

    engine = TransformersEngine(settings, loaded=loaded)
    serve = functools.partial(engine_request, engine)
    await engine.start()
    try:
        records, wall = await timed_run(serve, items, spec.concurrency, spec.max_new_tokens)
        stats = engine.stats()
        probe = await probe_alone(serve, probe_item)
        extra_figures = await _extra_runs(engine, extra, len(records) / wall, spec) if extra else {}
        final = engine.stats()
        cache, prefixes = final.image_cache, getattr(final, "prefix_cache", {})
    finally:
        await engine.stop()
    engine_stats = {
        "requests_by_outcome": dict(stats.requests_by_outcome),
        "generated_tokens": stats.generated_tokens,
        "batches": stats.batches,
        "mean_batch_size": stats.mean_batch_size,
        "mean_step_rows": getattr(stats, "mean_step_rows", None),
        "image_cache": dict(cache),
        "prefix_cache": dict(prefixes),
        **extra_figures,
    }
    return records, wall, probe, engine_stats


def step_figures(stats: Any) -> dict[str, Any]:
    """The engine's own timing of its last minute: a decoding step (p50, p95) and a prefill unit between steps (p95,
    by kind), which together bound a running answer's inter-token latency."""
    units = getattr(stats, "prefill_unit_p95_s", {}) or {}
    return {
        "step_p50_s": getattr(stats, "step_p50_s", None),
        "step_p95_s": getattr(stats, "step_p95_s", None),
        "vision_unit_p95_s": units.get("vision"),
        "text_unit_p95_s": units.get("text"),
    }


class ExtraWorkloads:
    """The open-loop items and the follow-up items (either may be empty)."""

    def __init__(self, open_items: Sequence[WorkItem], follow_up_items: Sequence[WorkItem]) -> None:
        self.open_items = list(open_items)
        self.follow_up_items = list(follow_up_items)


async def _extra_runs(engine: Any, extra: ExtraWorkloads, capacity_per_s: float, spec: WorkerSpec) -> dict[str, Any]:
    """The open-loop run (``auto``: at ``AUTO_LOAD`` × this run's closed-loop requests/s) and the follow-ups."""
    figures: dict[str, Any] = {}
    if extra.open_items and spec.arrival_rate is not None:
        auto = spec.arrival_rate == "auto"
        rate = AUTO_LOAD * capacity_per_s if auto else float(spec.arrival_rate)
        offsets = arrival_offsets(len(extra.open_items), rate, spec.seed)
        logger.info("bench: open loop, %d requests at %.3f/s (%s)", len(offsets), rate, spec.policy)
        records, wall = await open_loop(engine, extra.open_items, offsets, spec.max_new_tokens)
        figures["open_loop"] = {
            **open_loop_figures(records, wall, rate),
            "rate_source": f"auto: {AUTO_LOAD:.0%} of {capacity_per_s:.3f}/s" if auto else "given",
            "closed_loop_capacity_per_s": capacity_per_s,
            **step_figures(engine.stats()),
        }
    if extra.follow_up_items:
        logger.info("bench: follow-up workload, %d pairs", len(extra.follow_up_items))
        figures["follow_up"] = await follow_ups(engine, extra.follow_up_items, spec.max_new_tokens)
    return figures
