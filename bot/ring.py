"""A fixed-size ring of periodic metrics snapshots: the data behind the status page's charts."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's vital signs at one moment (latency figures cover the interval before it)."""

    ts: float
    queue_depth: int
    in_flight: int
    requests: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    rss_bytes: int | None
    gpu_allocated_bytes: float | None = None
    gpu_reserved_bytes: float | None = None


class SnapshotRing:
    """Keeps the newest ``capacity`` snapshots, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[Snapshot] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        return self._items.maxlen or 0

    def append(self, snapshot: Snapshot) -> None:
        self._items.append(snapshot)

    def since(self, ts: float) -> list[Snapshot]:
        return [s for s in self._items if s.ts >= ts]

    def latest(self) -> Snapshot | None:
        return self._items[-1] if self._items else None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(list(self._items))

