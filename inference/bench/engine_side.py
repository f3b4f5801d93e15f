"""The engine side: ``TransformersEngine`` with dynamic batching, each request read from its answer stream."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inference.bench.measure import BenchRequest, Probe, probe_alone, timed_request, timed_run
from inference.bench.spec import WORKER_TIMEOUT_S, WorkerSpec
from inference.bench.workload import WorkItem

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel


async def _engine_request(engine: Any, item: WorkItem, max_new_tokens: int) -> tuple[BenchRequest, Probe]:
    """Submit one request and read its stream: the first and last non-empty deltas time the answer."""
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
    return timed_request(
        item,
        started=started,
        first=first,
        last=last,
        finished=time.perf_counter(),
        prompt_tokens=stream.usage.prompt_tokens,
        generated_tokens=stream.usage.generated_tokens,
    )


async def run_engine(
    loaded: LoadedModel,
    settings: EngineSettings,
    items: Sequence[WorkItem],
    spec: WorkerSpec,
    probe_item: WorkItem | None,
) -> tuple[list[BenchRequest], float, Probe | None, dict[str, Any]]:
    """The timed run and the probe on a started engine: records, wall time, probe, the engine's own counts."""
    from inference.transformers_engine import TransformersEngine

    engine = TransformersEngine(settings, loaded=loaded)
    serve = functools.partial(_engine_request, engine)
    await engine.start()
    try:
        records, wall = await timed_run(serve, items, spec.concurrency, spec.max_new_tokens)
        stats = engine.stats()
        probe = await probe_alone(serve, probe_item)
    finally:
        await engine.stop()
    engine_stats = {
        "requests_by_outcome": dict(stats.requests_by_outcome),
        "generated_tokens": stats.generated_tokens,
        "batches": stats.batches,
        "mean_batch_size": stats.mean_batch_size,
    }
    return records, wall, probe, engine_stats
