"""The vision encoder's output per image, kept in an LRU with a byte budget (no torch import at module level).

A follow-up question in a thread about the same screenshot sends the same picture again: its features (for Qwen3-VL
also the "deepstack" features fed to the early decoder layers) are taken from here instead of running the vision
encoder. Entries are keyed by :func:`image_key`: the picture's content hash, its patch grid (which the pixel budget
decides: the same picture at another budget is another entry) and the model. Entries stay on the model's device.

The budget (``PEEKBOT_IMAGE_CACHE_BYTES``) is sized by :func:`default_budget` when unset: on a GPU a tenth of the
memory free once the model is loaded (at most 4 GiB), on CPU 256 MiB. ``Engine.cleanup(force=True)`` and the OOM
ladder drop every entry.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

GPU_FREE_FRACTION = 0.1
GPU_MAX_BYTES = 4 << 30
CPU_BYTES = 256 << 20


def picture_hash(image: Image) -> str:
    """sha256 of a picture's pixels, mode and size (for requests that do not carry their images' content hashes)."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def image_key(model: str, content_hash: str, size: tuple[int, int], grid: Sequence[int]) -> tuple[Hashable, ...]:
    """The cache key of one picture: model, content hash, picture size and the ``(t, h, w)`` patch grid."""
    return (model, content_hash, tuple(size), tuple(int(value) for value in grid))


def default_budget(device: Any) -> int:
    """Bytes for the cache: a tenth of the GPU's free memory (at most 4 GiB), or 256 MiB on CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(GPU_MAX_BYTES, free * GPU_FREE_FRACTION))
    return CPU_BYTES


def nbytes(value: Any) -> int:
    """Bytes held by a tensor, or by a tuple/list of them (recursively)."""
    if isinstance(value, (tuple, list)):
        return sum(nbytes(item) for item in value)
    return int(value.numel() * value.element_size())


class ImageEmbeddingCache:
    """LRU of per-image vision features within ``budget_bytes``; thread-safe; counts hits and misses."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(0, budget_bytes)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def holds(self, key: Hashable) -> bool:
        """Whether ``key`` has an entry (counts as no lookup, keeps the LRU order)."""
        with self._lock:
            return key in self._entries

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Keep ``value`` (``size`` bytes); the least recently used entries make room. A value larger than the whole
        budget is not kept."""
        with self._lock:
            if size > self.budget_bytes:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> int:
        """Drop every entry; returns the bytes released."""
        with self._lock:
            released = self._bytes
            self._entries.clear()
            self._bytes = 0
            return released

    def __len__(self) -> int:
        return len(self._entries)

    def figures(self) -> dict[str, float]:
        """``entries``, ``bytes``, ``budget_bytes``, ``hits``, ``misses`` and ``hit_rate`` (0 before any lookup)."""
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "entries": float(len(self._entries)),
                "bytes": float(self._bytes),
                "budget_bytes": float(self.budget_bytes),
                "hits": float(self.hits),
                "misses": float(self.misses),
                "hit_rate": self.hits / lookups if lookups else 0.0,
            }
