"""What accelerators this process can use (for ``peekbot doctor`` and status)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    name: str
    total_gib: float
    capability: str


def cuda_devices() -> list[DeviceInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            DeviceInfo(
                name=f"cuda:{index} {props.name}",
                total_gib=props.total_memory / 2**30,
                capability=f"{props.major}.{props.minor}",
            )
        )
    return devices


def optional_packages() -> dict[str, bool]:
    """Accelerating extras: flash-attention 2 and bitsandbytes (4/8-bit loading)."""
    return {name: importlib.util.find_spec(name) is not None for name in ("flash_attn", "bitsandbytes")}


def torch_version() -> str:
    import torch

    return str(torch.__version__)
