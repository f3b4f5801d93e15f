"""Long-run stability: many questions through the console adapter, the application and the tiny engine.

Every question carries a screenshot (sizes cycle from an icon to 1080p) and the thread keeps its context, as
in a long chat. The application runs with its scheduler (memory cleanup, liveness, watchdog, expiry,
snapshots). Every ``--sample-every`` questions a memory cleanup runs (as ``/cleanup`` does) and the process's
RSS (and, on a GPU, CUDA allocated/reserved memory) is sampled.

Targets: after warm-up, RSS grows less than 5 % (median of the last three samples against the median of the
first three after warm-up); zero failed questions; on a GPU, reserved memory after each cleanup is within 5 % of
its first post-warm-up value.

    .venv/bin/python benchmarks/soak.py                    # 10,000 questions
    .venv/bin/python benchmarks/soak.py --requests 1000    # shorter
    .venv/bin/python benchmarks/soak.py --requests 1000 --status-screenshot benchmarks/status_page.png

Prints a table and one JSON document; writes an SVG chart of memory over the run (``--chart``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.faults_common import ChartFrame  # noqa: E402

logger = logging.getLogger("benchmarks.soak")

IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (64, 48),  # icon
    (1920, 1080),  # desktop 1080p
    (390, 844),  # phone, portrait
    (1280, 720),  # laptop window
    (240, 160),  # crop of a dialog
    (800, 600),  # dialog
    (2560, 1440),  # large monitor
)
QUESTIONS = (
    "What does this error mean?",
    "Which button saves the settings?",
    "Summarise this screen.",
    "这个提示是什么意思？",
    "Is anything in a warning state?",
)
GROWTH_TARGET = 0.05
RESERVED_TARGET = 0.05


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)


@dataclass(frozen=True, slots=True)
class Sample:
    requests: int
    elapsed_s: float
    rss_bytes: int
    python_objects: int
    failed: int
    cuda_allocated_bytes: float | None = None
    cuda_reserved_bytes: float | None = None
    last_cleanup_reserved_bytes: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="questions to ask (default 10,000)")
    parser.add_argument("--sample-every", type=int, default=100, help="questions between memory samples")
    parser.add_argument("--warmup", type=int, default=None,
                        help="questions before the RSS baseline (default: a tenth of the run, at least one sample)")
    parser.add_argument("--model", default=None, help="model id or directory (default: the tiny random model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=256 * 256, help="pixel budget per image")
    parser.add_argument("--images-per-question", type=int, default=2,
                        help="own image plus earlier images of the thread kept in context")
    parser.add_argument("--cleanup-interval", type=float, default=5.0, help="seconds between scheduled cleanups")
    parser.add_argument("--chart", type=Path, default=ROOT / "benchmarks" / "soak_memory.svg")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    parser.add_argument("--status-screenshot", type=Path, default=None,
                        help="at the end, save a PNG of the /status page (needs chromium)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.sample_every < 1:
        parser.error("--requests and --sample-every must be positive")
    if args.warmup is None:
        args.warmup = max(args.sample_every, args.requests // 10)
    return args


def configure_environment(args: argparse.Namespace, data_dir: Path) -> None:
    values = {
        "PEEKBOT_DATA_DIR": str(data_dir),
        "PEEKBOT_DEVICE": args.device,
        "PEEKBOT_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "PEEKBOT_MAX_PIXELS": str(args.max_pixels),
        "PEEKBOT_MAX_IMAGES_PER_QUESTION": str(args.images_per_question),
        "PEEKBOT_HTTP_PORT": "0",
        "PEEKBOT_CLEANUP_INTERVAL_S": str(args.cleanup_interval),
        "PEEKBOT_HEALTH_INTERVAL_S": "10",
        "PEEKBOT_WATCHDOG_INTERVAL_S": "10",
        "PEEKBOT_EXPIRY_INTERVAL_S": "60",
        "PEEKBOT_SNAPSHOT_INTERVAL_S": "5",
        # Every question must reach the engine: the soak repeats questions on the same pictures, which the answer
        # cache would otherwise serve.
        "PEEKBOT_ANSWER_CACHE_TTL_S": "0",
    }
    os.environ.update(values)
    os.environ.pop("PEEKBOT_CONFIG", None)


def write_images(directory: Path) -> list[Path]:
    from inference.bench.workload import make_screenshot

    paths = []
    for index, (width, height) in enumerate(IMAGE_SIZES):
        path = directory / f"screen-{index}-{width}x{height}.png"
        make_screenshot(width, height, seed=index).save(path)
        paths.append(path)
    return paths


def sample(requests: int, started: float, failed: int, device: str, cleanup: Any) -> Sample:
    """Memory figures right after a cleanup (``cleanup``: its job run, or None before the first question)."""
    from inference.memory import host_rss_bytes, memory_snapshot

    figures = memory_snapshot(device)
    reserved_after = None
    if cleanup is not None and cleanup.outcome == "ok":
        reserved_after = cleanup.data.get("after", {}).get("cuda_reserved_bytes")
    return Sample(
        requests=requests,
        elapsed_s=round(time.monotonic() - started, 3),
        rss_bytes=host_rss_bytes(),
        python_objects=len(gc.get_objects()),
        failed=failed,
        cuda_allocated_bytes=figures.get("cuda_allocated_bytes"),
        cuda_reserved_bytes=figures.get("cuda_reserved_bytes"),
        last_cleanup_reserved_bytes=reserved_after,
    )


async def take_screenshot(url: str, target: Path) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        logger.warning("no chromium: skipping the status page screenshot")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peekbot-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,1500",
            f"--screenshot={target}", url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(process.wait(), 120)
    return process.returncode == 0


async def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.console import ConsoleAdapter
    from bot.http import StatusServer
    from bot.settings import Settings
    from bot.wiring import build_application
    from inference.bench.runner import default_tiny_model
    from inference.stats import percentile
    from inference.transformers_engine import TransformersEngine
    from scheduler.service import CLEANUP

    model = args.model or str(default_tiny_model())  # built once under the usual data dir
    with tempfile.TemporaryDirectory(prefix="peekbot-soak-") as tmp:
        configure_environment(args, Path(tmp) / "data")
        os.environ["PEEKBOT_MODEL"] = model
        images = write_images(Path(tmp))
        settings = Settings()
        sink = _Discard()  # the answers are not the point
        console = ConsoleAdapter(settings, out=sink, status=sink)
        app = build_application(settings, engine=TransformersEngine(settings.engine), adapters=[console])
        server = StatusServer(app, port=0) if args.status_screenshot else None
        if server is not None:
            app.services.append(server)
        samples: list[Sample] = []
        latencies: list[float] = []
        failures: list[str] = []
        screenshot_saved = False
        try:
            async with app:
                maintenance = app.maintenance
                assert maintenance is not None
                device = app.engine.stats().device
                started = time.monotonic()
                samples.append(sample(0, started, 0, device, None))
                for index in range(args.requests):
                    image = images[index % len(images)]
                    t0 = time.monotonic()
                    reply = await console.ask(QUESTIONS[index % len(QUESTIONS)], [image])
                    latencies.append(time.monotonic() - t0)
                    if reply.error is not None:
                        failures.append(f"#{index} {image.name}: {reply.error}")
                    done = index + 1
                    if done % args.sample_every == 0 or done == args.requests:
                        cleanup = await maintenance.cleanup_now()
                        samples.append(sample(done, started, len(failures), device, cleanup))
                        logger.info("%d/%d questions, RSS %.1f MiB, %d failed", done, args.requests,
                                    samples[-1].rss_bytes / 2**20, len(failures))
                wall_s = time.monotonic() - started
                cleanup_state = maintenance.jobs.state(CLEANUP)
                engine_stats = app.engine.stats()
                if server is not None and args.status_screenshot is not None:
                    screenshot_saved = await take_screenshot(f"{server.url}/status", args.status_screenshot)
        finally:
            sink.close()

    after_warmup = [s for s in samples if s.requests >= args.warmup] or samples[-1:]
    # RSS moves by a few per cent as the allocator takes and returns memory: compare medians of three samples.
    baseline_rss = statistics.median(s.rss_bytes for s in after_warmup[:3])
    final_rss = statistics.median(s.rss_bytes for s in after_warmup[-3:])
    growth = final_rss / baseline_rss - 1
    peak_growth = max(s.rss_bytes for s in after_warmup) / baseline_rss - 1
    reserved = [s.last_cleanup_reserved_bytes for s in after_warmup if s.last_cleanup_reserved_bytes is not None]
    reserved_spread = (max(abs(r - reserved[0]) / reserved[0] for r in reserved) if reserved and reserved[0] else None)
    targets = [
        {"name": "RSS growth after warm-up", "target": f"< {GROWTH_TARGET:.0%}", "measured": round(growth, 4),
         "met": growth < GROWTH_TARGET},
        {"name": "failed questions", "target": "0", "measured": len(failures), "met": not failures},
        {"name": "GPU reserved after cleanup vs its baseline", "target": f"within {RESERVED_TARGET:.0%}",
         "measured": None if reserved_spread is None else round(reserved_spread, 4),
         "met": None if reserved_spread is None else reserved_spread <= RESERVED_TARGET},
    ]
    return {
        "parameters": {
            "requests": args.requests, "sample_every": args.sample_every, "warmup": args.warmup,
            "model": os.environ["PEEKBOT_MODEL"], "device": device, "max_new_tokens": args.max_new_tokens,
            "max_pixels": args.max_pixels, "images_per_question": args.images_per_question,
            "image_sizes": [f"{w}x{h}" for w, h in IMAGE_SIZES], "cleanup_interval_s": args.cleanup_interval,
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "wall_s": round(wall_s, 2),
        "questions_per_s": round(args.requests / wall_s, 3),
        "latency_p50_s": round(percentile(latencies, 0.5) or 0.0, 4),
        "latency_p95_s": round(percentile(latencies, 0.95) or 0.0, 4),
        "failed": len(failures),
        "failures": failures[:20],
        "rss_baseline_bytes": int(baseline_rss),
        "rss_final_bytes": int(final_rss),
        "rss_growth": round(growth, 4),
        "rss_peak_growth": round(peak_growth, 4),
        "cleanups": {"runs": cleanup_state.runs, "skipped_busy": cleanup_state.skips,
                     "failed": cleanup_state.failures},
        "engine": {"batches": engine_stats.batches, "generated_tokens": engine_stats.generated_tokens,
                   "requests_by_outcome": engine_stats.requests_by_outcome},
        "samples": [asdict(s) for s in samples],
        "targets": targets,
        "chart": str(args.chart),
        "status_screenshot": str(args.status_screenshot) if screenshot_saved else None,
    }


def memory_chart(result: dict[str, Any]) -> str:
    """An SVG line chart of RSS (and CUDA memory) in MiB against questions answered."""
    from bot.status_page import axis_ticks

    width, height, left, right, top, bottom = 760, 300, 70, 20, 30, 40
    samples = result["samples"]
    series = [("host RSS", "#1098ad", "rss_bytes")]
    if any(s["cuda_reserved_bytes"] is not None for s in samples):
        series += [("GPU allocated", "#e8590c", "cuda_allocated_bytes"),
                   ("GPU reserved", "#5c940d", "cuda_reserved_bytes")]
    values = [s[key] / 2**20 for _, _, key in series for s in samples if s[key] is not None]
    y_ticks = axis_ticks(max(values) * 1.05)
    x_ticks = axis_ticks(samples[-1]["requests"] or 1, most=8)
    x_max, y_max = x_ticks[-1], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(requests: float) -> float:
        return left + plot_w * requests / x_max

    def y_of(mib: float) -> float:
        return top + plot_h * (1 - mib / y_max)

    title = f"Memory over {result['parameters']['requests']:,} questions ({result['parameters']['device']})"
    frame = ChartFrame(width, height, left, right)
    out = frame.axes(title, y_ticks, y_of, "MiB", x_ticks, x_of, "questions")
    warm_x = x_of(result["parameters"]["warmup"])
    out.append(f'<line x1="{warm_x:.1f}" y1="{top}" x2="{warm_x:.1f}" y2="{top + plot_h}" stroke="#aaa" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{warm_x + 4:.1f}" y="{top + 12}" fill="#777">end of warm-up</text>')
    legend_x = width - right - 130
    for index, (label, color, key) in enumerate(series):
        points = [f"{x_of(s['requests']):.1f},{y_of(s[key] / 2**20):.1f}" for s in samples if s[key] is not None]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>')
        out += frame.legend_item(legend_x, top + 14 + index * 16, color, label)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def format_table(result: dict[str, Any]) -> str:
    mib = 2**20
    rows = [
        ("questions", f"{result['parameters']['requests']:,} ({result['failed']} failed)"),
        ("wall time", f"{result['wall_s']:.1f} s ({result['questions_per_s']:.2f} questions/s)"),
        ("latency p50 / p95", f"{result['latency_p50_s']:.3f} s / {result['latency_p95_s']:.3f} s"),
        ("RSS after warm-up (median of 3 samples)", f"{result['rss_baseline_bytes'] / mib:.1f} MiB"),
        ("RSS at the end (median of 3 samples)", f"{result['rss_final_bytes'] / mib:.1f} MiB"),
        ("RSS growth (end / peak)", f"{result['rss_growth']:+.2%} / {result['rss_peak_growth']:+.2%}"),
        ("cleanups (runs / skipped busy / failed)",
         f"{result['cleanups']['runs']} / {result['cleanups']['skipped_busy']} / {result['cleanups']['failed']}"),
    ]
    lines = [f"{name:<42} {value}" for name, value in rows]
    lines.append("")
    lines.append(f"{'requests':>9} {'elapsed s':>10} {'RSS MiB':>9} {'objects':>9} {'failed':>7} "
                 f"{'GPU alloc MiB':>14} {'GPU resv MiB':>13}")
    for s in result["samples"]:
        alloc = "–" if s["cuda_allocated_bytes"] is None else f"{s['cuda_allocated_bytes'] / mib:.1f}"
        resv = "–" if s["cuda_reserved_bytes"] is None else f"{s['cuda_reserved_bytes'] / mib:.1f}"
        lines.append(f"{s['requests']:>9} {s['elapsed_s']:>10.1f} {s['rss_bytes'] / mib:>9.1f} "
                     f"{s['python_objects']:>9} {s['failed']:>7} {alloc:>14} {resv:>13}")
    lines.append("")
    for target in result["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "not judged (no GPU)"}[target["met"]]
        lines.append(f"{target['name']:<42} target {target['target']:<10} measured {target['measured']}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("apscheduler", "bot.questions", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(run_soak(args))
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    args.chart.write_text(memory_chart(result), encoding="utf-8")
    print(format_table(result))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if all(t["met"] is not False for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
