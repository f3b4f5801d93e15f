"""What the core reads from, and asks of, the background maintenance (``scheduler/`` implements it).

The composition root (``bot/wiring.py``) builds the maintenance service and hands it to the application
(:attr:`bot.app.Application.maintenance`); ``/status``, ``/cleanup``, ``/readyz``, ``/metrics`` and the status page
read it from there. The records of job runs are defined here so that the core can show them without importing the
scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.i18n import say
from bot.ring import Snapshot

Outcome = Literal["ok", "skipped", "failed", "cancelled"]
MIB = 2**20


def describe_cleanup(figures: Mapping[str, Any], lang: str = "en") -> str:
    """What a memory cleanup freed (``Engine.cleanup`` figures), in ``lang``: GPU reserved memory and why the CUDA
    cache was emptied or kept, host RSS, objects collected."""
    before, after = figures["before"], figures["after"]
    parts = []
    if "cuda_reserved_bytes" in before:
        freed = before["cuda_reserved_bytes"] - after.get("cuda_reserved_bytes", 0.0)
        parts.append(say(
            "cleanup.gpu", lang, before=_mib(before["cuda_reserved_bytes"]),
            after=_mib(after.get("cuda_reserved_bytes", 0.0)), freed=_mib(max(freed, 0.0)),
            allocated=_mib(after.get("cuda_allocated_bytes", 0.0)), fragmentation=after.get("cuda_fragmentation", 0.0),
        ))  # fmt: skip
        key = figures.get("reason_key")
        reason = say(f"cleanup.reason.{key}", lang, **figures.get("reason_values", {})) if key else figures["reason"]
        parts.append(say("cleanup.emptied" if figures["emptied_cache"] else "cleanup.kept", lang, reason=reason))
    rss_freed = before["host_rss_bytes"] - after["host_rss_bytes"]
    parts.append(say(
        "cleanup.host", lang, before=_mib(before["host_rss_bytes"]), after=_mib(after["host_rss_bytes"]),
        freed=_mib(max(rss_freed, 0.0)),
    ))  # fmt: skip
    parts.append(say("cleanup.gc", lang, count=figures["gc_collected"]))
    return say("cleanup.separator", lang).join(parts)


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f} MiB"


@dataclass(frozen=True, slots=True)
class JobRun:
    """One finished run of a job."""

    outcome: Outcome
    started_at: float
    duration_s: float
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ScheduledJobState:
    """Counts and the last run of one job (shown by ``/status`` and the status page)."""

    name: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    skips: int = 0
    running: bool = False
    last: JobRun | None = None
    last_failure: JobRun | None = None


class Maintenance(Protocol):
    """Periodic jobs (memory cleanup, engine liveness, connection watchdog, expiry, metrics snapshots)."""

    @property
    def engine_alive(self) -> bool | None:
        """Result of the last liveness ping: None before the first, False while the engine does not answer."""

    @property
    def engine_stuck_count(self) -> int:
        """Liveness pings the engine did not answer, over the process's life."""

    @property
    def history_s(self) -> float:
        """How far back :meth:`snapshots_since` reaches (the status page's charts)."""

    def forced_reconnects(self) -> Mapping[str, int]:
        """Reconnects the connection watchdog forced, by adapter name."""

    def job_states(self) -> Sequence[ScheduledJobState]:
        """Every job's counts and last run."""

    def snapshots_since(self, since: float) -> list[Snapshot]:
        """The metrics snapshots taken since ``since`` (unix time), oldest first."""

    async def cleanup_now(self) -> JobRun:
        """Run the memory cleanup at once, busy or not, and return its record."""
