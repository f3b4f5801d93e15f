"""Device figures measured in a side's process: copy bandwidth, the weight bytes one decode step reads, and from them
the memory-bandwidth bound of a decode step that the batch-1 probe is compared with."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.bench.measure import Probe
    from inference.loader import LoadedModel


def synchronize(device: Any) -> None:
    """Wait for the device's queued kernels (a no-op off CUDA), so a clock read after it times finished work."""
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def measure_copy_bandwidth(device: Any, *, max_bytes: int = 1 << 30, iterations: int = 10) -> float:
    """Device memory bandwidth in GB/s from large tensor copies (each copy reads and writes its bytes)."""
    import torch

    size = max_bytes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        size = min(size, int(free * 0.4))
    else:
        size = min(size, 256 << 20)
    size = max(size, 16 << 20)
    source = torch.empty(size, dtype=torch.uint8, device=device)
    source.fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        target.copy_(source)
    synchronize(device)
    elapsed = time.perf_counter() - started
    del source, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * size * iterations / elapsed / 1e9


def weight_bytes(model: Any) -> tuple[int, int]:
    """(all weight bytes, bytes one decode step reads): the latter leaves out the vision tower and,
    when not tied to the output head, the input embedding (a decode step reads one row of it)."""
    total = 0
    vision = 0
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        size = param.numel() * param.element_size()
        total += size
        if ".visual." in f".{name}":
            vision += size
    decode = total - vision
    embeddings = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if embeddings is not None and (head is None or head.weight is not embeddings.weight):
        decode -= embeddings.weight.numel() * embeddings.weight.element_size()
    return total, decode


def device_extras(loaded: LoadedModel, probe: Probe | None) -> dict[str, Any]:
    """Copy bandwidth, weights, the bandwidth bound of a decode step and the probe against it."""
    bandwidth = measure_copy_bandwidth(loaded.device)
    total, decode = weight_bytes(loaded.model)
    bound_ms = decode / (bandwidth * 1e9) * 1000
    measured = probe.decode_ms_per_step if probe is not None else None
    return {
        "copy_bandwidth_gb_s": bandwidth,
        "weights_bytes": total,
        "decode_weights_bytes": decode,
        "decode_bound_ms": bound_ms,
        "decode_fraction_of_bound": None if not measured else bound_ms / measured,
        "probe": asdict(probe) if probe is not None else {},
    }


def device_name(device: Any) -> str:
    """The device as the report names it: the GPU's model, or the CPU's cores and torch threads."""
    import torch

    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
