"""Timing requests: one record per request, C clients driving a workload, one side's figures, repeated probes.

Both sides go through the same :func:`timed_run` and :func:`probe_alone`; only their ``Serve`` differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.stats import percentile
from inference.bench.spec import PROBE_REPEATS, PROBE_TOKENS, WARMUP_TOKENS
from inference.bench.workload import WorkItem, warm_up_items

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BenchRequest:
    """One timed request: its image size, its tokens and when its answer began and ended."""

    index: int
    width: int
    height: int
    prompt_tokens: int
    generated_tokens: int
    latency_s: float
    ttft_s: float | None


@dataclass(slots=True)
class Probe:
    """One request alone: time to first token and decode time per step."""

    ttft_s: float | None
    decode_ms_per_step: float | None
    prompt_tokens: int
    image_tokens: int
    generated_tokens: int
    samples: list[dict[str, float | None]] = field(default_factory=list)


Serve = Callable[[WorkItem, int], Awaitable[tuple[BenchRequest, Probe]]]
"""One side answering one item with exactly N new tokens: the request's record and its probe figures."""


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


def timed_request(
    item: WorkItem,
    *,
    started: float,
    first: float | None,
    last: float | None,
    finished: float,
    prompt_tokens: int,
    generated_tokens: int,
    image_tokens: int = 0,
) -> tuple[BenchRequest, Probe]:
    """The record and the probe figures of one request, from when it was sent and its first/last tokens came."""
    record = BenchRequest(
        index=item.index,
        width=item.image.width,
        height=item.image.height,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        latency_s=finished - started,
        ttft_s=None if first is None else first - started,
    )
    probe = Probe(
        ttft_s=record.ttft_s,
        decode_ms_per_step=decode_ms(first, last, generated_tokens),
        prompt_tokens=prompt_tokens,
        image_tokens=image_tokens,
        generated_tokens=generated_tokens,
    )
    return record, probe


def decode_ms(first: float | None, last: float | None, tokens: int) -> float | None:
    if first is None or last is None or tokens < 2 or last <= first:
        return None
    return (last - first) / (tokens - 1) * 1000


async def timed_run(
    serve: Serve, items: Sequence[WorkItem], concurrency: int, max_new_tokens: int
) -> tuple[list[BenchRequest], float]:
    """An untimed warm-up round (the first C items mirrored, a few tokens each), then the timed run: records and wall
    time."""

    async def warm_up(item: WorkItem) -> BenchRequest:
        return (await serve(item, WARMUP_TOKENS))[0]

    async def timed(item: WorkItem) -> BenchRequest:
        return (await serve(item, max_new_tokens))[0]

    await drive(warm_up_items(items, concurrency), concurrency, warm_up, label="warm-up")
    return await drive(items, concurrency, timed)


async def probe_alone(serve: Serve, item: WorkItem | None) -> Probe | None:
    """The median of a few probes of ``item`` served alone (None without an item: no device figures asked)."""
    if item is None:
        return None
    return median_probe([(await serve(item, PROBE_TOKENS))[1] for _ in range(PROBE_REPEATS)])
