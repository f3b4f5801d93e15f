"""What the runner tells one side's process (a JSON round trip), and the fixed points of every run."""

from __future__ import annotations

from dataclasses import dataclass

SIDES = ("baseline", "engine")
POLICIES = ("static", "continuous")
"""The engine's scheduling policies (``EngineSettings.scheduling``), static first: ``--arrival-rate auto`` needs its
capacity before the other policies run."""
MIN_OPEN_REQUESTS = 48
AUTO_LOAD = 0.70
"""``--arrival-rate auto``: this share of the static policy's closed-loop capacity (requests per second)."""
PROBE_TOKENS = 64
"""New tokens of each probe request (one 1080p screenshot alone: time to first token, decode time per step)."""
PROBE_REPEATS = 3
WARMUP_TOKENS = 2
PROBE_QUESTION = "What does this error message mean and how do I fix it?"
WORKER_TIMEOUT_S = 6 * 3600.0
DEFAULT_MAX_PIXELS = 1920 * 1080
"""The default pixel budget (``EngineSettings.max_pixels``) the GPU targets are defined at."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One side's run: which model, where, and the workload's shape."""

    side: str
    model: str | None
    random_arch: str | None
    device: str | None
    concurrency: int
    requests: int
    max_new_tokens: int
    max_batch_size: int
    max_batch_tokens: int | None
    max_pixels: int | None
    seed: int
    extras: str
    threads: int | None = None
    policy: str | None = None
    """The engine's scheduling policy (None: the settings' own)."""
    arrival_rate: float | str | None = None
    """Open-loop arrivals per second, ``"auto"`` (from this side's closed-loop capacity) or None (no open loop)."""
    open_requests: int = MIN_OPEN_REQUESTS
    follow_ups: int = 0
    """Images in the follow-up workload (each asked about twice in one conversation); 0: none."""
