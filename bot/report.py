"""One picture of the running application, shared by ``/status``, ``/readyz`` and the status page."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bot.engine import EngineStats
from bot.i18n import say
from bot.maintenance import ScheduledJobState
from bot.redact import redact, secret_values
from bot.types import AdapterHealth

if TYPE_CHECKING:
    from collections.abc import Callable

    from bot.app import Application


@dataclass(frozen=True, slots=True)
class AdapterReport:
    name: str
    health: AdapterHealth
    forced_reconnects: int = 0


def _memory_figure(key: str) -> property:
    """A ``StatusReport`` property: the engine's memory figure ``key``, None where the engine does not report it."""

    def figure(report: StatusReport) -> float | None:
        return report.memory.get(key)

    return property(figure, doc=f"The engine's ``{key}`` (None when not reported).")


@dataclass(frozen=True, slots=True)
class StatusReport:
    engine: EngineStats
    uptime_s: float
    paused: bool
    questions_in_flight: int
    answered: int
    failed: int
    duplicates: int
    answer_latency_p50_s: float | None
    answer_latency_p95_s: float | None
    adapters: list[AdapterReport]
    jobs: list[ScheduledJobState] = field(default_factory=list)
    engine_alive: bool | None = None
    """Result of the last liveness ping: None before the first, False while the worker is stuck."""
    engine_stuck_count: int = 0
    generated_at: float = field(default_factory=time.time)

    @property
    def memory(self) -> dict[str, float]:
        return self.engine.memory

    gpu_allocated_bytes = _memory_figure("cuda_allocated_bytes")
    gpu_reserved_bytes = _memory_figure("cuda_reserved_bytes")
    gpu_fragmentation = _memory_figure("cuda_fragmentation")
    host_rss_bytes = _memory_figure("host_rss_bytes")

    @property
    def state(self) -> str:
        return say(self.state_key)

    @property
    def state_key(self) -> str:
        """The catalogue key of ``state`` (``bot.i18n``): ``/status`` says it in the asker's language."""
        if self.paused:
            return "state.paused"
        if self.engine_alive is False:
            return "state.stuck"
        return "state.ready" if self.engine.ready else "state.starting"

    def not_ready_reasons(self) -> list[str]:
        """Why the bot cannot serve now (empty when it can): what ``/readyz`` reports."""
        reasons = []
        if not self.engine.ready:
            reasons.append("the model is not loaded")
        if self.engine_alive is False:
            reasons.append("the engine does not answer its liveness ping (model worker stuck or model server down)")
        for adapter in self.adapters:
            if not adapter.health.connected:
                detail = f": {adapter.health.detail}" if adapter.health.detail else ""
                reasons.append(f"{adapter.name} is not connected{detail}")
        return reasons


async def collect_status(app: Application) -> StatusReport:
    """The application's state, with every credential masked (``bot.redact``): each view shows it as it is."""
    maintenance = app.maintenance
    health = await app.adapter_health()
    forced = maintenance.forced_reconnects() if maintenance is not None else {}
    p50, p95 = app.usage.latency_percentiles()
    secrets = secret_values(app.settings)

    def clean(text: str) -> str:
        return redact(text, secrets)

    engine = app.engine.stats()
    return StatusReport(
        engine=replace(engine, model=clean(engine.model), device=clean(engine.device)),
        uptime_s=time.time() - app.started_at,
        paused=app.paused,
        questions_in_flight=app.in_flight,
        answered=app.counters.get("answered", 0),
        failed=app.counters.get("failed", 0),
        duplicates=app.counters.get("duplicates", 0),
        answer_latency_p50_s=p50,
        answer_latency_p95_s=p95,
        adapters=[AdapterReport(name, replace(h, detail=clean(h.detail)), forced.get(name, 0))
                  for name, h in health.items()],
        jobs=[_clean_job(job, clean) for job in maintenance.job_states()] if maintenance is not None else [],
        engine_alive=maintenance.engine_alive if maintenance is not None else None,
        engine_stuck_count=maintenance.engine_stuck_count if maintenance is not None else 0,
    )


def _clean_job(job: ScheduledJobState, clean: Callable[[str], str]) -> ScheduledJobState:
    last = replace(job.last, detail=clean(job.last.detail)) if job.last is not None else None
    failure = replace(job.last_failure, detail=clean(job.last_failure.detail)) if job.last_failure is not None else None
    return replace(job, last=last, last_failure=failure)
