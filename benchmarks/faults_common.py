"""Shared parts of the fault-injection benchmarks (Feishu, Slack): schedules, probes, figures and output.

A run pushes questions at a steady rate through a loopback fake platform while faults are injected at
evenly spaced points and the engine is kept saturated. The platform-specific script drives the fake and
collects raw timestamps; this module turns them into figures, target checks, a table, JSON and an SVG
timeline. Nothing here knows a platform.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any, TypeVar

from bot.stats import percentile
from bot.status_page import axis_ticks

logger = logging.getLogger(__name__)

T = TypeVar("T")

KILL = "kill"
SILENCE = "silence"
DUPLICATE = "duplicate"
BACKFILL = "backfill"
RATE_LIMIT = "rate_limit"
DISCOVERY_FAILURE = "discovery_failure"
FAULT_KINDS: tuple[str, ...] = (KILL, SILENCE, DUPLICATE, BACKFILL, RATE_LIMIT, DISCOVERY_FAILURE)
"""The order faults are drawn in (cycled): ten faults give two of each of the first four and one of the rest."""
RECONNECTING_KINDS = frozenset({KILL, SILENCE, DISCOVERY_FAILURE})


# schedules -----------------------------------------------------------------------------------------
def event_offsets(events: int, rate_per_s: float) -> list[float]:
    """Seconds after the start at which each of ``events`` questions is sent: a steady rate."""
    if events < 0 or rate_per_s <= 0:
        raise ValueError("events must be >= 0 and the rate positive")
    return [index / rate_per_s for index in range(events)]


@dataclass(frozen=True, slots=True)
class PlannedFault:
    number: int
    """1-based position in the schedule."""
    kind: str
    after_event: int
    """0-based index of the question it follows."""
    offset_s: float
    """Seconds after the start: half-way between that question and the next."""


def plan_faults(
    events: int, faults: int, rate_per_s: float, kinds: Sequence[str] = FAULT_KINDS
) -> list[PlannedFault]:
    """``faults`` faults spread evenly over the run, kinds drawn from ``kinds`` in turn (any names a platform uses).

    Fault *i* (0-based) follows question ``floor((i + 0.5) × events / faults)``, so none falls on the very
    first or last question and consecutive faults are about ``events / faults`` questions apart.
    """
    if faults < 0 or (faults and not kinds):
        raise ValueError("faults must be >= 0 and kinds non-empty")
    if events < 1:
        return []
    planned = []
    for index in range(faults):
        after = min(events - 1, math.floor((index + 0.5) * events / faults))
        planned.append(PlannedFault(index + 1, kinds[index % len(kinds)], after, (after + 0.5) / rate_per_s))
    return planned


# figures -------------------------------------------------------------------------------------------
def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def distribution(values: Sequence[float], *, scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """count, min, median, p50, p95, p99, max and mean of ``values`` × ``scale`` (``None`` where empty)."""
    scaled = [v * scale for v in values]
    return {
        "count": len(scaled),
        "min": _rounded(min(scaled), digits) if scaled else None,
        "median": _rounded(statistics.median(scaled), digits) if scaled else None,
        "p50": _rounded(percentile(scaled, 0.50), digits),
        "p95": _rounded(percentile(scaled, 0.95), digits),
        "p99": _rounded(percentile(scaled, 0.99), digits),
        "max": _rounded(max(scaled), digits) if scaled else None,
        "mean": _rounded(statistics.fmean(scaled), digits) if scaled else None,
    }


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: ``met`` is computed from ``measured``; ``None`` when nothing was measured."""

    name: str
    target: str
    measured: float | int | None
    unit: str
    met: bool | None


def below(name: str, measured: float | int | None, limit: float, unit: str, *, digits: int = 3) -> Target:
    """A target of the form ``measured < limit`` (not judged when nothing was measured)."""
    value = None if measured is None else round(measured, digits)
    return Target(name, f"< {limit:g} {unit}".rstrip(), value, unit, None if measured is None else measured < limit)


def at_most(name: str, measured: float | int | None, limit: float, unit: str, *, digits: int = 3) -> Target:
    """A target of the form ``measured <= limit``."""
    value = None if measured is None else round(measured, digits)
    return Target(name, f"≤ {limit:g} {unit}".rstrip(), value, unit, None if measured is None else measured <= limit)


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [asdict(t) for t in targets]


@dataclass(slots=True)
class QuestionOutcome:
    """What the fake platform saw for one question (platform-neutral)."""

    key: str
    final_replies: int = 0
    """Replies that carry a final answer or an error sentence (not a progress indicator)."""
    handlings: int = 0
    """Times the bot started on it (e.g. progress reactions added): more than one means it was answered twice."""
    busy: bool = False
    error: bool = False


def count_answers(outcomes: Sequence[QuestionOutcome]) -> dict[str, Any]:
    """expected, delivered (answers + error replies), lost, duplicates, busy and error counts, with ids.

    ``lost_while_in_progress`` counts the lost questions the bot had started on (progress shown) but not
    finished when the run ended: late rather than dropped, yet not answered within the run's bound.
    """
    lost = [o.key for o in outcomes if o.final_replies == 0]
    duplicated = {o.key: max(o.final_replies, o.handlings) for o in outcomes if max(o.final_replies, o.handlings) > 1}
    delivered = [o for o in outcomes if o.final_replies > 0]
    return {
        "expected": len(outcomes),
        "delivered": len(delivered),
        "answered": sum(1 for o in delivered if not o.error),
        "error_replies": sum(1 for o in delivered if o.error),
        "busy_replies": sum(1 for o in delivered if o.busy),
        "lost": len(lost),
        "lost_while_in_progress": sum(1 for o in outcomes if o.final_replies == 0 and o.handlings > 0),
        "duplicates": sum(count - 1 for count in duplicated.values()),
        "lost_ids": lost[:50],
        "duplicate_ids": dict(list(duplicated.items())[:50]),
    }


# probes (run in the bot's event loop) --------------------------------------------------------------
class _PeriodicProbe:
    """A background task on the running loop, started by ``start`` and cancelled by ``stop``."""

    name = "probe"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError


class LoopLagProbe(_PeriodicProbe):
    """How late the event loop wakes a sleeper: a direct measure of what delays acks and heartbeats."""

    name = "loop-lag-probe"

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        self.lags_s: list[float] = []

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, time.monotonic() - before - self.interval_s))


@dataclass(slots=True)
class QueueSample:
    at: float
    depth: int
    in_flight: int


class QueueProbe(_PeriodicProbe):
    """Samples the engine's queue (``stats().queue_depth``/``in_flight``) to show that it stayed saturated."""

    name = "queue-probe"

    def __init__(self, stats: Callable[[], Any], interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        self._stats = stats
        self.samples: list[QueueSample] = []

    async def _run(self) -> None:
        while True:
            stats = self._stats()
            self.samples.append(QueueSample(time.monotonic(), stats.queue_depth, stats.in_flight))
            await asyncio.sleep(self.interval_s)

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Share of samples between ``start`` and ``end`` with questions waiting, and the depths seen."""
        window = [s for s in self.samples if start <= s.at <= end]
        if not window:
            return {"samples": 0, "queue_nonempty_share": None, "queue_depth_mean": None, "queue_depth_max": None,
                    "busy_share": None}
        return {
            "samples": len(window),
            "queue_nonempty_share": round(sum(1 for s in window if s.depth > 0) / len(window), 3),
            "busy_share": round(sum(1 for s in window if s.in_flight > 0) / len(window), 3),
            "queue_depth_mean": round(statistics.fmean(s.depth for s in window), 2),
            "queue_depth_max": max(s.depth for s in window),
        }


# a second event loop for the fake platform ---------------------------------------------------------
class LoopThread:
    """An event loop in a daemon thread, so the fake platform does not share the bot's loop.

    ``await loop_thread.run(coro)`` runs ``coro`` there from another loop; ``close()`` stops it.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def run(self, coro: Awaitable[T], timeout_s: float | None = None) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        finally:
            future.cancel()

    async def call(self, fn: Callable[[], T], timeout_s: float | None = 30.0) -> T:
        """Run the plain function ``fn`` on the loop's thread (its objects are not thread-safe)."""

        async def invoke() -> T:
            return fn()

        return await self.run(invoke(), timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


# environment and set-up ----------------------------------------------------------------------------
@contextlib.contextmanager
def patched_environ(values: Mapping[str, str], remove: Iterable[str] = ()) -> Iterator[None]:
    """Set ``values`` (and unset ``remove``) in ``os.environ``; everything is put back on exit."""
    keys = set(values) | set(remove)
    saved = {key: os.environ.get(key) for key in keys}
    try:
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_tiny_model(directory: Path) -> Path:
    """A tiny random Qwen3-VL checkpoint (real tokenizer) in ``directory`` (built once per run)."""
    from inference.tiny import build_tiny_model as build

    return build(directory, "qwen3_vl")


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    return info


def bot_environment(
    model: Path | str,
    data_dir: Path,
    *,
    max_new_tokens: int,
    max_batch_size: int,
    queue_limit: int,
    max_pixels: int,
    cpu_threads: int | None,
    device: str = "cpu",
    warmup: bool = False,
    drain_timeout_s: float = 5.0,
    stop_timeout_s: float = 5.0,
) -> dict[str, str]:
    """``PEEKBOT_*`` variables of a bot measured under load: the engine's limits as given, and no per-user limits
    (the fake's few users send many questions; the load measures the connection)."""
    env = {
        "PEEKBOT_MODEL": str(model),
        "PEEKBOT_DEVICE": device,
        "PEEKBOT_DATA_DIR": str(data_dir),
        "PEEKBOT_HTTP_PORT": "0",
        "PEEKBOT_MAX_NEW_TOKENS": str(max_new_tokens),
        "PEEKBOT_MAX_BATCH_SIZE": str(max_batch_size),
        "PEEKBOT_QUEUE_LIMIT": str(queue_limit),
        "PEEKBOT_MAX_PIXELS": str(max_pixels),
        "PEEKBOT_WARMUP": "true" if warmup else "false",
        "PEEKBOT_DRAIN_TIMEOUT_S": f"{drain_timeout_s:g}",
        "PEEKBOT_STOP_TIMEOUT_S": f"{stop_timeout_s:g}",
        "PEEKBOT_RATE_LIMIT_PER_MINUTE": "0",
        "PEEKBOT_MAX_PENDING_PER_USER": "100000",
    }
    if cpu_threads is not None:
        env["PEEKBOT_CPU_THREADS"] = str(cpu_threads)
    return env


def load_settings(env: Mapping[str, str], section: type[Any], remove: Iterable[str] = ()) -> Any:
    """``bot.settings.Settings`` read from ``env`` (and without ``remove``) only while every layer, the platform's
    ``section`` included, is loaded; the process's own environment is left as it was."""
    from bot.settings import Settings

    with patched_environ(env, remove=("PEEKBOT_CONFIG", *remove)):
        settings = Settings()
        for layer in (settings.core, settings.engine, settings.images, settings.section(section), settings.scheduler,
                      settings.access):
            assert layer is not None
    return settings


async def model_directory(model: Path | str | None, scratch: Path) -> Path:
    """``model`` when given, else a tiny random model built in ``scratch`` for the run."""
    if model is not None:
        return Path(model)
    logger.info("building a tiny random model")
    return await asyncio.to_thread(build_tiny_model, scratch / "tiny-model")


@contextlib.asynccontextmanager
async def probing(stats: Callable[[], Any]) -> AsyncIterator[tuple[LoopLagProbe, QueueProbe]]:
    """The bot's loop lag and the engine's queue (``stats``) sampled on the running loop until the block ends."""
    lag, queue = LoopLagProbe(), QueueProbe(stats)
    lag.start()
    queue.start()
    try:
        yield lag, queue
    finally:
        await lag.stop()
        await queue.stop()


def engine_figures(stats: Any) -> dict[str, Any]:
    """What the engine's ``stats()`` says about the run: answers by outcome, batches, tokens."""
    return {
        "requests_by_outcome": dict(stats.requests_by_outcome),
        "batches": stats.batches,
        "mean_batch_size": round(stats.mean_batch_size, 2),
        "generated_tokens": stats.generated_tokens,
    }


# command line --------------------------------------------------------------------------------------
def add_load_arguments(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """The options of a run's load (questions, faults, rate) and of the engine's limits; ``defaults`` has the
    attributes ``events``, ``faults``, ``rate_per_s``, ``max_new_tokens``, ``max_batch_size`` and ``queue_limit``."""
    parser.add_argument("--events", type=int, default=defaults.events,
                        help=f"questions to send (default {defaults.events})")
    parser.add_argument("--faults", type=int, default=defaults.faults,
                        help=f"faults to inject (default {defaults.faults})")
    parser.add_argument("--rate", type=float, default=defaults.rate_per_s,
                        help=f"questions per second (default {defaults.rate_per_s:g})")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--queue-limit", type=int, default=defaults.queue_limit)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="write the JSON result here instead of stdout")
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def emit(result: Mapping[str, Any], table: str, json_path: Path | None) -> int:
    """Print the result: the JSON to stdout and the table to stderr, or, with ``json_path``, the JSON to that file and
    the table to stdout. Returns the exit status: 0 when every target is met, 1 otherwise."""
    text = write_json(result, json_path)
    if json_path is None:
        print(table, file=sys.stderr)
        print(text)
    else:
        print(table)
    return 0 if all(t["met"] is True for t in result["targets"]) else 1


# output --------------------------------------------------------------------------------------------
def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    text = str(value)
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".rstrip()


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    value: str


@dataclass(slots=True)
class Report:
    """The human table: figure rows, then one line per target with its verdict."""

    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def add(self, name: str, *values: Any, unit: str = "", sep: str = " / ") -> None:
        self.rows.append(Row(name, sep.join(_fmt(v) for v in values) + (f" {unit}" if unit else "")))

    def add_text(self, name: str, text: str) -> None:
        self.rows.append(Row(name, text))

    def render(self) -> str:
        width = max([len(r.name) for r in self.rows] + [len(t.name) for t in self.targets] + [10]) + 2
        lines = [self.title, "=" * len(self.title)]
        lines += [f"{row.name:<{width}}{row.value}" for row in self.rows]
        if self.targets:
            lines += ["", f"{'target':<{width}}{'goal':<16}{'measured':<16}verdict"]
            for t in self.targets:
                verdict = {True: "met", False: "NOT MET", None: "not measured"}[t.met]
                lines.append(f"{t.name:<{width}}{t.target:<16}{_fmt(t.measured, t.unit):<16}{verdict}")
        return "\n".join(lines)


def write_json(result: Mapping[str, Any], path: Path | None) -> str:
    """The result as indented JSON; also written to ``path`` when given."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    return text


@dataclass(frozen=True, slots=True)
class Marker:
    at_s: float
    label: str


@dataclass(frozen=True, slots=True)
class PointSeries:
    label: str
    color: str
    points: Sequence[tuple[float, float]]
    """(seconds since the start, value)"""


@dataclass(frozen=True, slots=True)
class ChartFrame:
    """The frame of an SVG chart: its size and side margins; draws the title, axes and legend entries."""

    width: int
    height: int
    left: int
    right: int

    def axes(self, title: str, y_ticks: Sequence[float], y_of: Callable[[float], float], y_unit: str,
             x_ticks: Sequence[float], x_of: Callable[[float], float], x_label: str) -> list[str]:
        """The opening of the SVG: background, title, a grid line and label per y tick, the x labels and title."""
        width, height, left = self.width, self.height, self.left
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
               f'height="{height}" font-family="sans-serif" font-size="11">',
               '<rect width="100%" height="100%" fill="#fff"/>',
               f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
        for value in y_ticks:
            y = y_of(value)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - self.right}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{value:g} {y_unit}</text>')
        for value in x_ticks:
            out.append(f'<text x="{x_of(value):.1f}" y="{height - 22}" text-anchor="middle" fill="#555">'
                       f"{value:g}</text>")
        plot_w = width - left - self.right
        out.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="#333">'
                   f"{escape(x_label)}</text>")
        return out

    @staticmethod
    def legend_item(x: float, y: float, color: str, label: str) -> list[str]:
        """A colour swatch and its label, the text's baseline at ``y``."""
        return [f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>',
                f'<text x="{x + 14}" y="{y}">{escape(label)}</text>']


def timeline_svg(title: str, series: Sequence[PointSeries], markers: Sequence[Marker], *, unit: str,
                 log_scale: bool = True) -> str:
    """A scatter chart of per-event figures over the run, with a dashed line at each injected fault."""
    width, height, left, right, top, bottom = 900, 340, 70, 20, 40, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for _, v in s.points if v > 0]
    x_end = max([t for s in series for t, _ in s.points] + [m.at_s for m in markers] + [1.0])
    x_ticks = axis_ticks(x_end, most=10)
    if log_scale and values:
        low = 10 ** math.floor(math.log10(min(values)))
        high = 10 ** math.ceil(math.log10(max(values)))
        y_ticks = [low * 10**i for i in range(round(math.log10(high / low)) + 1)] if high > low else [low, low * 10]

        def y_of(value: float) -> float:
            value = max(value, y_ticks[0])
            span = math.log10(y_ticks[-1] / y_ticks[0])
            return top + plot_h * (1 - math.log10(value / y_ticks[0]) / span)
    else:
        y_ticks = axis_ticks(max(values or [1.0]) * 1.05, most=6)

        def y_of(value: float) -> float:
            return top + plot_h * (1 - value / y_ticks[-1])

    def x_of(seconds: float) -> float:
        return left + plot_w * seconds / x_ticks[-1]

    frame = ChartFrame(width, height, left, right)
    out = frame.axes(title, y_ticks, y_of, unit, x_ticks, x_of, "seconds since the first question")
    for index, marker in enumerate(markers):
        x = x_of(marker.at_s)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#c92a2a" '
                   'stroke-dasharray="4 3" stroke-opacity="0.6"/>')
        label_y = top - 4 - 10 * (index % 2)
        out.append(f'<text x="{x:.1f}" y="{label_y}" text-anchor="middle" fill="#c92a2a" font-size="9">'
                   f"{escape(marker.label)}</text>")
    legend_x = width - right - 190
    for index, item in enumerate(series):
        for t, v in item.points:
            out.append(f'<circle cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="2" fill="{item.color}" '
                       'fill-opacity="0.7"/>')
        out += frame.legend_item(legend_x, top + 14 + index * 16, item.color, item.label)
    out.append("</svg>")
    return "\n".join(out) + "\n"
