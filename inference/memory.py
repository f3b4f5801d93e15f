"""Host and GPU memory figures, and the idle-time cleanup the scheduler triggers.

Fragmentation is ``1 − allocated/reserved`` of the CUDA caching allocator. ``empty_cache()`` only
returns unused cached blocks to the driver, so :func:`cleanup` runs it when the engine is idle
(the scheduler asks for it through ``Engine.cleanup``, which runs it on the model's worker thread), never per
request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import resource
from typing import Any

from bot.i18n import say

logger = logging.getLogger(__name__)

DEFAULT_FRAGMENTATION_THRESHOLD = 0.3
DEFAULT_UNUSED_RESERVED_BYTES = 1 << 30


def host_rss_bytes() -> int:
    """Resident set size of this process (current; peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cuda_device(device: Any) -> Any | None:
    """The CUDA device to read, or ``None`` when ``device`` is not a usable CUDA device."""
    if device is None:
        return None
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return device


def memory_snapshot(device: Any = None) -> dict[str, float]:
    """Host RSS, plus the CUDA caching allocator's figures when ``device`` is an initialised GPU."""
    figures: dict[str, float] = {"host_rss_bytes": float(host_rss_bytes())}
    cuda = _cuda_device(device)
    if cuda is None:
        return figures
    import torch

    stats = torch.cuda.memory_stats(cuda)
    allocated = float(stats.get("allocated_bytes.all.current", 0))
    reserved = float(stats.get("reserved_bytes.all.current", 0))
    figures.update(
        cuda_allocated_bytes=allocated,
        cuda_reserved_bytes=reserved,
        cuda_max_allocated_bytes=float(stats.get("allocated_bytes.all.peak", 0)),
        cuda_fragmentation=(1.0 - allocated / reserved) if reserved > 0 else 0.0,
        cuda_inactive_split_bytes=float(stats.get("inactive_split_bytes.all.current", 0)),
        cuda_num_alloc_retries=float(stats.get("num_alloc_retries", 0)),
        cuda_num_ooms=float(stats.get("num_ooms", 0)),
    )
    free, total = torch.cuda.mem_get_info(cuda)
    figures.update(cuda_free_bytes=float(free), cuda_total_bytes=float(total))
    return figures


def free_memory(device: Any = None) -> None:
    """Collect garbage and return cached CUDA blocks (after an OOM; not on the hot path)."""
    gc.collect()
    if _cuda_device(device) is not None:
        import torch

        torch.cuda.empty_cache()


@functools.cache
def _libc_malloc_trim() -> Any | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_host_heap() -> bool:
    """Give the C heap's free pages back to the OS (glibc keeps them after large transient allocations: decoded
    images, CPU tensors). True when something was released."""
    trim = _libc_malloc_trim()
    return bool(trim(0)) if trim is not None else False


def cleanup(
    device: Any = None,
    *,
    fragmentation_threshold: float = DEFAULT_FRAGMENTATION_THRESHOLD,
    unused_reserved_bytes: int = DEFAULT_UNUSED_RESERVED_BYTES,
    force: bool = False,
) -> dict[str, Any]:
    """``gc.collect()`` and a trim of the C heap, then ``empty_cache()`` when fragmentation or unused reserved
    bytes pass a threshold.

    Call it between batches (``TransformersEngine.cleanup`` runs it on the worker thread). Returns
    ``{"emptied_cache": bool, "reason": str, "reason_key": str, "reason_values": {...}, "gc_collected": int,
    "before": {...}, "after": {...}}`` with :func:`memory_snapshot` figures (``reason_key``/``reason_values`` say the
    reason in any language: ``cleanup.reason.<key>`` of ``bot.i18n``).
    """
    before = memory_snapshot(device)
    collected = gc.collect()
    host_trimmed = trim_host_heap()
    reserved = before.get("cuda_reserved_bytes", 0.0)
    unused = reserved - before.get("cuda_allocated_bytes", 0.0)
    fragmentation = before.get("cuda_fragmentation", 0.0)
    values: dict[str, float] = {}
    if "cuda_reserved_bytes" not in before:
        why = "no_cuda"
    elif force:
        why = "forced"
    elif fragmentation >= fragmentation_threshold and unused > 0:
        why, values = "fragmentation", {"fragmentation": fragmentation, "threshold": fragmentation_threshold}
    elif unused >= unused_reserved_bytes:
        why, values = "unused", {"unused_mib": unused / 2**20, "threshold_mib": unused_reserved_bytes / 2**20}
    else:
        why = "below"
    reason = say(f"cleanup.reason.{why}", "en", **values)
    emptied = why != "below" and "cuda_reserved_bytes" in before
    if emptied:
        import torch

        torch.cuda.empty_cache()
    after = memory_snapshot(device)
    if emptied:
        logger.info(
            "memory cleanup (%s): reserved %.0f -> %.0f MiB, host RSS %.0f -> %.0f MiB",
            reason,
            before.get("cuda_reserved_bytes", 0.0) / 2**20,
            after.get("cuda_reserved_bytes", 0.0) / 2**20,
            before["host_rss_bytes"] / 2**20,
            after["host_rss_bytes"] / 2**20,
        )
    return {
        "emptied_cache": emptied,
        "reason": reason,
        "reason_key": why,
        "reason_values": values,
        "gc_collected": collected,
        "host_heap_trimmed": host_trimmed,
        "before": before,
        "after": after,
    }
