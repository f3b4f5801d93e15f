"""The ``/status`` HTML page: one self-contained document (inline CSS and SVG charts, no external assets)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from bot import fmt
from bot.ratings import RatingDay
from bot.report import StatusReport
from bot.ring import Snapshot

WIDTH, HEIGHT = 560, 200
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 12, 28

Point = tuple[float, float | None]


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    color: str
    points: Sequence[Point]


def axis_ticks(maximum: float, most: int = 5) -> list[float]:
    """Tick values from 0 to just above ``maximum`` in a readable step (1, 2 or 5 × 10^k), at most ``most`` steps."""
    if maximum <= 0:
        return [0.0, 1.0]
    magnitude = 10 ** math.floor(math.log10(maximum / most))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude * most >= maximum)
    count = max(1, math.ceil(maximum / step - 1e-9))
    return [round(i * step, 12) for i in range(count + 1)]


def _path(points: Sequence[Point], x_of: Callable[[float], float], y_of: Callable[[float], float]) -> str:
    """SVG path data; a missing value breaks the line."""
    parts: list[str] = []
    pen_down = False
    for t, value in points:
        if value is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x_of(t):.1f},{y_of(value):.1f}")
        pen_down = True
    return " ".join(parts)


def line_chart(title: str, series: Sequence[Series], start: float, end: float, unit: str,
               scale: float = 1.0, x_labels: Sequence[tuple[float, str]] | None = None) -> str:
    """An inline SVG line chart over ``start``..``end`` (unix times); values are divided by ``scale``.

    ``x_labels`` are (time, label) pairs under the x axis; by default, minutes before the end."""
    values = [v / scale for s in series for _, v in s.points if v is not None]
    ticks = axis_ticks(max(values) * 1.05 if values else 0.0)
    top = ticks[-1]
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    span = max(end - start, 1e-9)

    def x_of(t: float) -> float:
        return MARGIN_LEFT + plot_w * min(max((t - start) / span, 0.0), 1.0)

    def y_of(v: float) -> float:
        return MARGIN_TOP + plot_h * (1 - min(max(v / scale / top, 0.0), 1.0))

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for value in ticks:  # horizontal grid and y labels
        y = MARGIN_TOP + plot_h * (1 - value / top)
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{value:g} {escape(unit)}</text>")
    if x_labels is None:  # minutes before the end
        minutes = span / 60
        x_labels = [(start + span * i / 4, "now" if i == 4 else f"−{minutes * (4 - i) / 4:.0f} min") for i in range(5)]
    for t, label in x_labels:
        out.append(f'<text class="axis" x="{x_of(t):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(label)}</text>')
    for s in series:
        data = _path(s.points, x_of, y_of)
        if data:
            out.append(f'<path class="series" d="{data}" fill="none" stroke="{s.color}" stroke-width="2">'
                       f"<title>{escape(s.label)}</title></path>")
        if sum(v is not None for _, v in s.points) == 1:  # a single point is not a line: mark it
            t, v = next((t, v) for t, v in s.points if v is not None)
            out.append(f'<circle cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="3" fill="{s.color}"/>')
    if not values:
        out.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text>')
    out.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{s.color}"></i>{escape(s.label)}</span>'
                     for s in series)
    return f'<figure><figcaption>{escape(title)}</figcaption>{"".join(out)}<div class="legend">{legend}</div></figure>'


def charts(snapshots: Sequence[Snapshot], start: float, end: float) -> list[str]:
    def points(attr: str) -> list[Point]:
        return [(s.ts, getattr(s, attr)) for s in snapshots]

    result = [
        line_chart("Answer latency", [Series("p50", "#2e6edc", points("latency_p50_s")),
                                      Series("p95", "#d9480f", points("latency_p95_s"))], start, end, "s"),
        line_chart("Queue", [Series("waiting", "#7048e8", points("queue_depth")),
                             Series("being answered", "#2f9e44", points("in_flight"))], start, end, ""),
        line_chart("Host memory (RSS)", [Series("RSS", "#1098ad", points("rss_bytes"))], start, end, "GiB",
                   scale=2**30),
    ]
    if any(s.gpu_reserved_bytes is not None for s in snapshots):
        result.append(line_chart("GPU memory", [Series("allocated", "#e8590c", points("gpu_allocated_bytes")),
                                                Series("reserved", "#5c940d", points("gpu_reserved_bytes"))],
                                 start, end, "GiB", scale=2**30))
    return result


def ratings_chart(days: Sequence[RatingDay]) -> str:
    """Answers rated helpful and not helpful per day (UTC)."""
    if not days:
        return ""
    middle = [day.start + 43200 for day in days]
    series = [
        Series("helpful", "#2f9e44", [(t, day.helpful) for t, day in zip(middle, days, strict=True)]),
        Series("not helpful", "#c92a2a", [(t, day.not_helpful) for t, day in zip(middle, days, strict=True)]),
    ]
    labels = [(t, day.day[5:]) for t, day in zip(middle, days, strict=True)]
    return line_chart(f"Ratings per day, last {len(days)} days (UTC)", series, days[0].start, days[-1].start + 86400,
                      "", x_labels=labels)


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.state{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;background:#2f9e44}
.state.bad{background:#c92a2a}.state.warn{background:#e67700}
table{border-collapse:collapse;background:#fff;margin-bottom:8px}
th,td{padding:4px 10px;border:1px solid #e3e3e3;text-align:left;vertical-align:top}
.summary th{background:#f3f3f3;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;padding:8px;max-width:100%}
.chart{max-width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:4px}
.grid{stroke:#eee}.axis{font-size:11px;fill:#666}.empty{font-size:13px;fill:#999}
.legend{font-size:12px;color:#444}.key{margin-right:12px}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.muted{color:#777}
"""


def render_status_page(report: StatusReport, snapshots: Sequence[Snapshot], window_s: float = 3600.0,
                       refresh_s: int = 30, ratings: Sequence[RatingDay] = ()) -> str:
    stats = report.engine
    now = report.generated_at
    start = now - window_s
    badge = "bad" if report.not_ready_reasons() else ("warn" if report.paused else "")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.requests_by_outcome.items()) if v) or "none yet"
    summary = [
        ("Model", stats.model),
        ("Device", stats.device),
        ("Uptime", fmt.duration(report.uptime_s)),
        ("Queue", f"{stats.queue_depth} waiting (limit {stats.queue_limit}), {stats.in_flight} being generated, "
                  f"{report.questions_in_flight} questions in progress"),
        ("Questions", f"{report.answered} answered, {report.failed} failed, {report.duplicates} duplicates dropped"),
        ("Engine requests", outcomes),
        ("Latency, last hour", f"answer p50 {fmt.seconds(report.answer_latency_p50_s)}, "
                               f"p95 {fmt.seconds(report.answer_latency_p95_s)}; engine p50 "
                               f"{fmt.seconds(stats.latency_p50_s)}, p95 {fmt.seconds(stats.latency_p95_s)}"),
        ("Throughput", f"{stats.tokens_per_s:.1f} tokens/s, {stats.generated_tokens:,} tokens generated"),
        ("Host memory", f"RSS {fmt.size(report.host_rss_bytes)}"),
    ]
    if report.gpu_reserved_bytes is not None:
        summary.append(("GPU memory", f"allocated {fmt.size(report.gpu_allocated_bytes)}, reserved "
                                      f"{fmt.size(report.gpu_reserved_bytes)}, fragmentation "
                                      f"{fmt.percent(report.gpu_fragmentation)}"))
    if report.engine_alive is not None or report.engine_stuck_count:
        alive = {True: "answers pings", False: "STUCK", None: "not pinged yet"}[report.engine_alive]
        summary.append(("Model worker", f"{alive}; {report.engine_stuck_count} missed pings so far"))
    reasons = report.not_ready_reasons()
    adapters = [
        (a.name, "connected" if a.health.connected else "DISCONNECTED",
         fmt.age(now - a.health.connected_since) if a.health.connected_since else "–",
         str(a.health.reconnects), str(a.forced_reconnects), fmt.age(a.health.last_event_age_s),
         fmt.age(a.health.last_pong_age_s), a.health.detail)
        for a in report.adapters
    ]
    jobs = [
        (j.name, f"{j.interval_s:g} s", fmt.age(now - j.last.started_at) if j.last else "not yet",
         fmt.seconds(j.last.duration_s) if j.last else "–", ("running" if j.running else
                                                            (j.last.outcome if j.last else "–")),
         j.last.detail if j.last else "", f"{j.runs} / {j.failures} / {j.skips}")
        for j in report.jobs
    ]
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return "".join([
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="refresh" content="{refresh_s}">',
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>peekbot status</title><style>{CSS}</style></head><body>",
        f'<h1>peekbot <span class="state {badge}">{escape(report.state)}</span></h1>',
        f'<div class="muted">generated {generated}</div>',
        "<ul>" + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>" if reasons else "",
        f'<table class="summary">{_rows(summary)}</table>',
        "<h2>Last hour</h2>",
        f'<div class="charts">{"".join(charts(snapshots, start, now))}</div>',
        f'<h2>Ratings</h2><div class="charts">{ratings_chart(ratings)}</div>' if ratings else "",
        "<h2>Platforms</h2>",
        _table(("platform", "state", "connected", "reconnects", "forced by watchdog", "last event", "last pong",
                "detail"), adapters) if adapters else '<p class="muted">no platform adapters</p>',
        "<h2>Scheduler jobs</h2>",
        _table(("job", "every", "last run", "took", "outcome", "detail", "runs / failures / skips"), jobs)
        if jobs else '<p class="muted">the scheduler is not running</p>',
        "</body></html>",
    ])
