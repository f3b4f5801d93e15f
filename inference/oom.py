"""The out-of-memory ladder: what the engine does when the GPU runs out of memory, rung by rung.

1. **Free**: drop the image-embedding cache, collect garbage, return cached CUDA blocks (always first).
2. **Fewer rows**: a decoding step that ran out sends the newest half of the batch's rows back to the queue (they
   start again from their prompt later; text they already streamed is not sent twice); a prefill that ran out while
   other rows decode goes back to the queue. Either way the batch is capped at the rows it keeps until it drains.
3. **Smaller images**: a request that runs out alone (alone in the batch, or prefilling with no row decoding) is
   prepared again with its largest image's pixel count halved, up to :data:`MAX_PIXEL_REDUCTIONS` times.
4. **Give up** on that request only: it fails with ``OutOfMemory`` (a sentence asking for smaller images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inference.memory import free_memory

if TYPE_CHECKING:
    from bot.engine import GenerationRequest
    from inference.image_cache import ImageEmbeddingCache
    from inference.prompts import PreparedPrompt, PromptBuilder

logger = logging.getLogger(__name__)

MAX_PIXEL_REDUCTIONS = 4
"""How often the OOM ladder halves a lone request's pixel budget before giving up (down to 1/16)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The next rung for one out-of-memory error."""

    evict: int = 0
    """Newest rows of the batch that go back to the queue."""
    requeue: bool = False
    """The request whose prefill ran out goes back to the queue."""
    shrink: bool = False
    """Lower the lone request's pixel budget and try again (or give up when nothing is left to cut)."""
    cap: int | None = None
    """Rows the batch may hold until it drains."""


def plan_for_step(rows: int) -> Plan:
    """A decoding step of ``rows`` rows ran out of memory."""
    if rows > 1:
        keep = rows // 2
        return Plan(evict=rows - keep, cap=keep)
    return Plan(shrink=True)


def plan_for_prefill(decoding_rows: int) -> Plan:
    """A request's prefill (or its join) ran out of memory while ``decoding_rows`` rows were in the batch."""
    if decoding_rows:
        return Plan(requeue=True, cap=decoding_rows)
    return Plan(shrink=True)


def free(device: Any, image_cache: ImageEmbeddingCache | None) -> None:
    """The first rung: drop cached image features, collect garbage, empty the CUDA cache."""
    if image_cache is not None:
        released = image_cache.clear()
        if released:
            logger.info("out of memory: dropped %.0f MiB of cached image features", released / 2**20)
    free_memory(device)


def smaller_prompt(
    request: GenerationRequest,
    prepared: PreparedPrompt,
    prompts: PromptBuilder,
    *,
    current_budget: int,
    min_pixels: int,
    patch_size: int,
    merge_size: int,
) -> PreparedPrompt | None:
    """``request`` prepared with its largest image's pixel count halved; None when nothing is left to cut."""
    grid = prepared.image_grid_thw
    if grid is None:
        return None
    largest = int((grid[:, 1] * grid[:, 2]).max()) * patch_size * patch_size
    budget = min(current_budget, largest) // 2
    factor = patch_size * merge_size
    if budget < max(min_pixels, 4 * factor * factor):
        return None
    try:
        smaller = prompts.prepare(request, max_pixels=budget)
    except Exception as exc:
        logger.warning("request %s: re-preparing at a lower pixel budget failed: %s", request.request_id, exc)
        return None
    assert smaller.image_grid_thw is not None
    if int((smaller.image_grid_thw[:, 1] * smaller.image_grid_thw[:, 2]).max()) * patch_size * patch_size >= largest:
        return None  # the minimum size is reached: nothing left to cut
    return smaller
