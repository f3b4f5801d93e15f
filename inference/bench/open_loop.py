"""The engine's open-loop run and follow-up workload: requests on a fixed arrival trace, and each screenshot asked
about twice in one conversation.

Closed loop (``measure.timed_run``): C clients, each sends its next request when the previous answer ends, so the
engine is never offered more than it can take. Open loop: requests arrive at the trace's times whatever the engine is
doing, as people in a chat do; a policy that makes newcomers wait for the running batch shows it in its time to first
token (TTFT, engine submit → first token).

Inter-token latency (ITL): the engine hands text to the streams at most every few tens of milliseconds, so one
delivery may carry several tokens. Each delivery's gap since the previous one is divided by the tokens it carried,
estimated from its share of the answer's characters; ``delivery_gap_p95_s`` is the raw gap a reader sees.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.engine import ChatTurn, GenerationRequest
from bot.stats import percentile
from inference.bench.spec import WORKER_TIMEOUT_S
from inference.bench.workload import WorkItem, follow_up_question

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamRecord:
    """One request's stream as the client saw it."""

    index: int
    submitted: float
    finished: float
    prompt_tokens: int
    generated_tokens: int
    deliveries: list[tuple[float, int]] = field(default_factory=list)
    """(time, characters) of every non-empty delivery, in order."""
    text: str = ""

    @property
    def ttft_s(self) -> float | None:
        return self.deliveries[0][0] - self.submitted if self.deliveries else None

    def token_gaps(self) -> list[float]:
        """Seconds per token between consecutive deliveries (see the module docstring)."""
        chars = sum(n for _, n in self.deliveries)
        if chars == 0 or self.generated_tokens < 2:
            return []
        per_char = self.generated_tokens / chars
        gaps = []
        for (before, _), (at, n) in zip(self.deliveries, self.deliveries[1:], strict=False):
            gaps.append((at - before) / max(1.0, n * per_char))
        return gaps

    def delivery_gaps(self) -> list[float]:
        return [at - before for (before, _), (at, _) in zip(self.deliveries, self.deliveries[1:], strict=False)]


async def stream_request(engine: Any, request: GenerationRequest, index: int) -> StreamRecord:
    """Submit ``request`` and read its stream to the end, noting when each delivery came."""
    submitted = time.perf_counter()
    stream = engine.submit(request)
    deliveries: list[tuple[float, int]] = []
    parts: list[str] = []
    async for delta in stream:
        if delta:
            deliveries.append((time.perf_counter(), len(delta)))
            parts.append(delta)
    return StreamRecord(
        index=index,
        submitted=submitted,
        finished=time.perf_counter(),
        prompt_tokens=stream.usage.prompt_tokens,
        generated_tokens=stream.usage.generated_tokens,
        deliveries=deliveries,
        text="".join(parts),
    )


def exact_request(item: WorkItem, max_new_tokens: int, history: Sequence[ChatTurn] = (), question: str = "") -> Any:
    """A request for exactly ``max_new_tokens`` tokens about ``item``'s screenshot."""
    return GenerationRequest(
        question=question or item.question,
        images=[item.image],
        history=list(history),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        timeout_s=WORKER_TIMEOUT_S,
    )


async def open_loop(
    engine: Any, items: Sequence[WorkItem], offsets: Sequence[float], max_new_tokens: int
) -> tuple[list[StreamRecord], float]:
    """Submit ``items[i]`` at ``offsets[i]`` seconds after the start, whatever is running; records and wall time."""
    started = time.perf_counter()

    async def arrive(item: WorkItem, offset: float) -> StreamRecord:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
        return await stream_request(engine, exact_request(item, max_new_tokens), item.index)

    records = await asyncio.gather(*(arrive(item, at) for item, at in zip(items, offsets, strict=True)))
    return list(records), time.perf_counter() - started


def open_loop_figures(records: Sequence[StreamRecord], wall_s: float, rate_per_s: float) -> dict[str, Any]:
    """TTFT and ITL percentiles, throughput and latency of an open-loop run."""
    ttfts = [r.ttft_s for r in records if r.ttft_s is not None]
    gaps = [gap for r in records for gap in r.token_gaps()]
    raw_gaps = [gap for r in records for gap in r.delivery_gaps()]
    latencies = [r.finished - r.submitted for r in records]
    generated = sum(r.generated_tokens for r in records)
    return {
        "requests": len(records),
        "arrival_rate_per_s": rate_per_s,
        "offered_s": max(r.submitted for r in records) - min(r.submitted for r in records),
        "wall_s": wall_s,
        "generated_tokens": generated,
        "tokens_per_s": generated / wall_s,
        "ttft_p50_s": percentile(ttfts, 0.50),
        "ttft_p95_s": percentile(ttfts, 0.95),
        "ttft_max_s": max(ttfts) if ttfts else None,
        "itl_p50_s": percentile(gaps, 0.50),
        "itl_p95_s": percentile(gaps, 0.95),
        "delivery_gap_p95_s": percentile(raw_gaps, 0.95),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "per_request": [_request_figures(r) for r in records],
    }


def _request_figures(record: StreamRecord) -> dict[str, Any]:
    return {
        "index": record.index,
        "ttft_s": record.ttft_s,
        "latency_s": record.finished - record.submitted,
        "prompt_tokens": record.prompt_tokens,
        "generated_tokens": record.generated_tokens,
    }


@dataclass(slots=True)
class FollowUpPair:
    index: int
    first_ttft_s: float | None
    follow_up_ttft_s: float | None
    first_prompt_tokens: int
    follow_up_prompt_tokens: int


async def follow_ups(engine: Any, items: Sequence[WorkItem], max_new_tokens: int) -> dict[str, Any]:
    """Each item asked about twice in one conversation, one pair at a time: the second request carries the first
    question with its screenshot and the first answer as history, as the bot sends a follow-up. Figures are medians
    over the pairs."""
    pairs: list[FollowUpPair] = []
    for number, item in enumerate(items):
        first = await stream_request(engine, exact_request(item, max_new_tokens), item.index)
        history = [ChatTurn("user", item.question, images=1), ChatTurn("assistant", first.text)]
        second = await stream_request(
            engine,
            exact_request(item, max_new_tokens, history, follow_up_question(number)),
            item.index,
        )
        pairs.append(FollowUpPair(item.index, first.ttft_s, second.ttft_s, first.prompt_tokens, second.prompt_tokens))
    firsts = [p.first_ttft_s for p in pairs if p.first_ttft_s is not None]
    seconds = [p.follow_up_ttft_s for p in pairs if p.follow_up_ttft_s is not None]
    first_s = statistics.median(firsts) if firsts else None
    follow_s = statistics.median(seconds) if seconds else None
    return {
        "pairs": len(pairs),
        "first_ttft_s": first_s,
        "follow_up_ttft_s": follow_s,
        "ratio": follow_s / first_s if first_s and follow_s is not None else None,
        "per_pair": [asdict(p) for p in pairs],
    }
