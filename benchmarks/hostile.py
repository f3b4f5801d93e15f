"""Hostile uploads through the whole bot: time and memory per file, and the file lane under load.

Part 1 (always): builds its own corpus of hostile files in a temporary directory (giant transparent and 16-bit
PNGs, a 1-bit PNG, many-frame TIFF/GIF/WebP including a TIFF with a 240,000-page IFD chain, a PDF whose 300 pages
share one heavy content stream, giant page boxes, a huge progressive JPEG, a JPEG whose header claims 65500×65500,
a PDF named .png; Office files: a ZIP bomb, a ZIP of 60,000 entries, a sheet of 10⁶ cells, an encrypted workbook, a
macro-enabled workbook) plus two references, a normal 1080p screenshot and a normal 40-page text PDF, and runs each
through ``peekbot chat --demo --file F "question"`` in a subprocess. The peak RSS of the bot and all its child
processes together (the media workers and their forkserver) is sampled every 20 ms with psutil.

Targets: every file answered (a reply or a reason) within 30 s end to end, process start included; peak memory at
most 300 MiB over its reference's run (the screenshot for images; for PDFs the normal PDF, since any PDF question
sends the model several pages).

Part 2 (``--lane``): a real ``peekbot run`` against the loopback fake Slack (``sandbox/slack_server.py``)
with the tiny model. 20 normal questions (a screenshot each) from one user at one every 2 s, first alone, then
while 4 hostile files from another user are in flight. Target: the p95 latency (event sent → the bot removes its
progress reaction) with the hostile files at most 2× the p95 alone. File work has its own lane (worker
processes at a lower CPU priority, at most workers − 1 per person), so it cannot starve the model.

    .venv/bin/python benchmarks/hostile.py                        # part 1, about two minutes on 2 cores
    .venv/bin/python benchmarks/hostile.py --lane --json out.json # both parts, about five minutes

Prints a table (stderr when the JSON goes to stdout); ``--json FILE`` writes the figures: per file ``seconds``,
``peak_rss_mib``, ``reply`` (first line). The exit status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.faults_common import (  # noqa: E402
    Report,
    Target,
    at_most,
    build_tiny_model,
    distribution,
    emit,
    machine,
    targets_json,
)
from tests.support import corpus, office_files  # noqa: E402

logger = logging.getLogger("benchmarks.hostile")

QUESTION = "What does this show?"
ANSWER_LIMIT_S = 30.0
EXTRA_MEMORY_LIMIT_MIB = 300.0
LANE_RATIO_LIMIT = 2.0
RUN_TIMEOUT_S = 90.0
"""A single ``peekbot chat`` run is killed after this long (and counts as not answered)."""
SAMPLE_INTERVAL_S = 0.02
LANE_MAX_PIXELS = 512 * 512
"""Pixel budget of the lane run: the tiny model on two CPU cores then answers in well under a second, so the
figure shows what the file work does to other people's answers (the hostile questions' own answers still take
their turns in the same engine)."""
REFERENCE = "screenshot-1080p.png"
REFERENCE_PDF = "document-40p.pdf"
"""PDFs are also compared with a normal long document: any PDF question sends several pages to the model."""
MIB = 1024 * 1024


# the corpus ----------------------------------------------------------------------------------------
def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header is rewritten to claim ``width``×``height`` pixels."""
    data = bytearray(corpus.make_jpeg(64, 64))
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _progressive_jpeg(side: int) -> bytes:
    from PIL import Image

    return corpus.encode(Image.new("RGB", (side, side), (200, 200, 200)), "JPEG", quality=95, progressive=True)


def _normal_document(pages: int) -> bytes:
    texts = [f"Section {n}: quarterly figures for region {n}, revenue and costs by month." for n in range(1, pages + 1)]
    return corpus.make_pdf(texts)


def _many_frame_webp(frames: int) -> bytes:
    from PIL import Image

    pictures = [Image.new("RGB", (64, 64), (i % 256, 40, 90)) for i in range(frames)]
    return corpus.encode(pictures[0], "WEBP", save_all=True, append_images=pictures[1:], duration=10, lossless=True)


@dataclass(frozen=True)
class HostileFile:
    name: str
    what: str
    build: Callable[[], bytes]


CORPUS: tuple[HostileFile, ...] = (
    HostileFile(REFERENCE, "reference: a normal screenshot", lambda: corpus.make_screenshot_png(1920, 1080)),
    HostileFile(REFERENCE_PDF, "reference: a normal 40-page text PDF", lambda: _normal_document(40)),
    HostileFile("transparent-7900.png", "fully transparent RGBA, 7900×7900", corpus.make_transparent_png),
    HostileFile("grey16-7900.png", "16-bit greyscale, 7900×7900", corpus.make_deep_grey_png),
    HostileFile("bilevel-8000.png", "1-bit, 8000×7999", lambda: corpus.make_bilevel_png(8000, 7999)),
    HostileFile(
        "ifd-chain-240k.tif", "TIFF, 240,000 pages in one IFD chain", lambda: corpus.make_ifd_chain_tiff(240_000)
    ),
    HostileFile("frames-100k.gif", "GIF, 100,000 frames", lambda: corpus.make_many_frame_gif(100_000)),
    HostileFile("frames-3000.webp", "animated WebP, 3,000 frames", lambda: _many_frame_webp(3000)),
    HostileFile("progressive-8000.jpg", "progressive JPEG, 8000×8000", lambda: _progressive_jpeg(8000)),
    HostileFile("header-65500.jpg", "JPEG whose header claims 65500×65500", lambda: _jpeg_claiming(65500, 65500)),
    HostileFile(
        "shared-stream-300p.pdf",
        "PDF, 300 pages sharing one heavy content stream",
        lambda: corpus.make_shared_stream_pdf(300, ops=corpus.heavy_page_ops(60_000)),
    ),
    HostileFile(
        "page-box-14400.pdf",
        "PDF page of 14400×14400 pt",
        lambda: corpus.make_pdf(["poster"], page_size=(14400, 14400)),
    ),
    HostileFile(
        "page-box-200000.pdf",
        "PDF page of 200000×200000 pt with heavy drawing",
        lambda: corpus.make_pdf(["map"], page_size=(200_000, 200_000), extra_ops={1: corpus.heavy_page_ops(60_000)}),
    ),
    HostileFile("disguised-pdf.png", "PDF bytes named .png", lambda: corpus.make_pdf(["invoice 1042"] * 3)),
    HostileFile("zip-bomb.docx", "Word file unpacking to 1 GB of zeros", lambda: office_files.zip_bomb(1024)),
    HostileFile("entries-60k.xlsx", "workbook ZIP of 60,000 entries", lambda: office_files.many_entries(60_000)),
    HostileFile("cells-1m.xlsx", "sheet of 10⁶ cells (1000×1000)", lambda: office_files.dense_sheet(1000, 1000)),
    HostileFile("encrypted.xlsx", "password-protected workbook (OLE EncryptedPackage)", office_files.encrypted_office),
    HostileFile(
        "macros.xlsm",
        "macro-enabled workbook (VBA project present)",
        lambda: office_files.with_macros(
            office_files.workbook({"Data": 50}, {}),
            "xl/workbook.xml",
            (office_files.XLSX_TYPE, office_files.XLSM_TYPE),
        ),
    ),
)


def build_corpus(directory: Path, names: Sequence[str] = ()) -> list[tuple[HostileFile, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    built = []
    for item in CORPUS:
        if names and item.name not in names and item.name not in (REFERENCE, REFERENCE_PDF):
            continue
        path = directory / item.name
        path.write_bytes(item.build())
        built.append((item, path))
    return built


# part 1: one file per peekbot chat -------------------------------------------------------------------
CHECKOUT: Path | None = None
"""``--checkout``: run the bot from another source tree (e.g. an older revision, for before/after figures)."""


def peekbot_command() -> list[str]:
    script = Path(sys.executable).with_name("peekbot")
    if CHECKOUT is None and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bot.cli"]


def bot_directory() -> Path:
    return CHECKOUT or ROOT


class PeakRss:
    """Samples the RSS of a process and all its descendants together; ``peak`` is the largest sum seen."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.peak_bot = 0
        """The bot's own process alone."""
        self.peak_children = 0
        """Its descendants together (media workers, their forkserver)."""
        self.processes_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            own = children = 0
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for process in family:
                try:
                    rss = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.processes_seen.add(process.pid)
                if process.pid == self.pid:
                    own = rss
                else:
                    children += rss
            self.peak = max(self.peak, own + children)
            self.peak_bot = max(self.peak_bot, own)
            self.peak_children = max(self.peak_children, children)
            self._stop.wait(self.interval_s)


@dataclass
class FileRun:
    name: str
    what: str
    bytes: int
    seconds: float
    peak_rss_mib: float
    """The bot and its descendants together."""
    bot_peak_mib: float
    workers_peak_mib: float
    reply: str
    exit_code: int | None
    processes: int
    reference: str = REFERENCE
    extra_mib: float | None = None
    """``peak_rss_mib`` minus the reference run's: the screenshot for images, the normal document for PDFs."""
    extra_over_screenshot_mib: float | None = None

    @property
    def answered(self) -> bool:
        return self.exit_code in (0, 1) and bool(self.reply)


def run_chat(
    path: Path, env: dict[str, str], timeout_s: float = RUN_TIMEOUT_S
) -> tuple[float, PeakRss, str, int | None]:
    """``peekbot chat --demo --file path QUESTION``: seconds, the RSS sampler, the reply's first line, exit code."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [*peekbot_command(), "chat", "--demo", "--file", str(path), QUESTION],
        cwd=bot_directory(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    with PeakRss(proc.pid) as sampler:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_family(proc)
            out, _ = proc.communicate()
    seconds = time.monotonic() - started
    lines = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
    code = proc.returncode if seconds < timeout_s else None
    return seconds, sampler, (lines[0] if lines else ""), code


def _kill_family(proc: subprocess.Popen[bytes]) -> None:
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.kill()
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue


def chat_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    env.update({"PEEKBOT_DATA_DIR": str(data_dir), "PEEKBOT_DEVICE": "cpu"})
    if CHECKOUT is not None:
        env["PYTHONPATH"] = str(CHECKOUT)
    return env


def run_files(directory: Path, names: Sequence[str] = ()) -> list[FileRun]:
    files = build_corpus(directory / "corpus", names)
    env = chat_env(directory / "data")
    reference = next(path for item, path in files if item.name == REFERENCE)
    logger.info("warm-up run (builds the demo model once)")
    run_chat(reference, env)
    runs: list[FileRun] = []
    for item, path in files:
        seconds, rss, reply, code = run_chat(path, env)
        is_pdf = b"%PDF-" in path.read_bytes()[:1024]
        runs.append(
            FileRun(
                item.name,
                item.what,
                path.stat().st_size,
                round(seconds, 2),
                round(rss.peak / MIB, 1),
                round(rss.peak_bot / MIB, 1),
                round(rss.peak_children / MIB, 1),
                reply[:160],
                code,
                len(rss.processes_seen),
                REFERENCE_PDF if is_pdf else REFERENCE,
            )
        )
        logger.info("%s: %.1f s, %.0f MiB, %s", item.name, seconds, rss.peak / MIB, reply[:80])
    peaks = {r.name: r.peak_rss_mib for r in runs}
    for run in runs:
        run.extra_mib = round(run.peak_rss_mib - peaks[run.reference], 1)
        run.extra_over_screenshot_mib = round(run.peak_rss_mib - peaks[REFERENCE], 1)
    return runs


# part 2: the file lane under load --------------------------------------------------------------------
@dataclass
class LaneResult:
    alone_s: list[float]
    with_hostile_s: list[float]
    hostile_s: dict[str, float | None]
    hostile_replies: dict[str, str]

    def p95(self, values: list[float]) -> float | None:
        return distribution(values)["p95"]


async def run_lane(
    directory: Path,
    *,
    questions: int = 20,
    interval_s: float = 2.0,
    hostile: int = 4,
    max_pixels: int = LANE_MAX_PIXELS,
) -> LaneResult:
    from sandbox.slack_server import FakeSlack

    model = await asyncio.to_thread(build_tiny_model, directory / "tiny-model")
    fake = FakeSlack()
    await fake.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    env.update(
        {
            "PEEKBOT_MODEL": str(model),
            "PEEKBOT_DEVICE": "cpu",
            "PEEKBOT_CPU_THREADS": "1",
            "PEEKBOT_DATA_DIR": str(directory / "lane-data"),
            "PEEKBOT_HTTP_PORT": "0",
            "PEEKBOT_MAX_NEW_TOKENS": "32",
            "PEEKBOT_MAX_PIXELS": str(max_pixels),
            "PEEKBOT_RATE_LIMIT_PER_MINUTE": "0",
            "PEEKBOT_ANSWER_CACHE_TTL_S": "0",
            "PEEKBOT_DRAIN_TIMEOUT_S": "5",
            "SLACK_BOT_TOKEN": fake.BOT_TOKEN,
            "SLACK_APP_TOKEN": fake.APP_TOKEN,
            "SLACK_API_URL": fake.api_url,
            "SLACK_UPDATE_INTERVAL_S": "0.2",
        }
    )
    log = (directory / "lane-bot.log").open("ab")
    proc = start_bot(env, log)
    try:
        await fake.wait_until(lambda: bool(fake.open_connection_numbers) or proc.poll() is not None, 120, "the bot")
        if proc.poll() is not None:
            raise RuntimeError(f"peekbot run exited with {proc.returncode}; see {directory / 'lane-bot.log'}")
        mention = f"<@{fake.BOT_USER_ID}>"

        async def normal(index: int, phase: str) -> float:
            shot = corpus.make_screenshot_png(1280, 720, title=f"Error {phase}-{index}: connection refused")
            file = fake.add_file(f"shot-{phase}-{index}.png", shot, "image/png", user="U0NORMAL")
            event = fake.user_message(
                "C0NORMAL", f"{mention} what does this error say? ({phase} {index})", user="U0NORMAL", files=[file]
            )
            sent = time.monotonic()
            await fake.send_event(event)
            await fake.wait_answered(event, timeout=120)
            return _finished_at(fake, event["ts"]) - sent

        async def series(phase: str) -> list[float]:
            tasks = []
            for index in range(questions):
                tasks.append(asyncio.create_task(normal(index, phase)))
                await asyncio.sleep(interval_s)
            return list(await asyncio.gather(*tasks))

        await normal(0, "warmup")  # the first answer loads what later ones reuse
        alone = await series("alone")
        heavy = [item for item in CORPUS if item.name in _LANE_HOSTILE][:hostile]
        hostile_events = []
        for item in heavy:
            file = fake.add_file(item.name, item.build(), "application/octet-stream", user="U0HOSTILE")
            event = fake.user_message("C0HOSTILE", f"{mention} {QUESTION}", user="U0HOSTILE", files=[file])
            hostile_events.append((item.name, event, time.monotonic()))
            await fake.send_event(event)
        with_hostile = await series("hostile")
        hostile_s: dict[str, float | None] = {}
        replies: dict[str, str] = {}
        for name, event, sent in hostile_events:
            try:
                texts = await fake.wait_answered(event, timeout=120)
                hostile_s[name] = round(_finished_at(fake, event["ts"]) - sent, 2)
                replies[name] = (texts[-1] if texts else "").splitlines()[0][:160] if texts else ""
            except AssertionError:
                hostile_s[name] = None
                replies[name] = ""
        return LaneResult([round(v, 3) for v in alone], [round(v, 3) for v in with_hostile], hostile_s, replies)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                _kill_family(proc)
        log.close()
        await fake.stop()


def start_bot(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """``peekbot run`` with its output in ``log``."""
    return subprocess.Popen(
        [*peekbot_command(), "run"],
        cwd=bot_directory(),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


_LANE_HOSTILE = ("shared-stream-300p.pdf", "transparent-7900.png", "progressive-8000.jpg", "page-box-200000.pdf")


def _finished_at(fake: Any, ts: str) -> float:
    removals = [c.at for c in fake.calls("reactions.remove") if c.ok and c.args.get("timestamp") == ts]
    return min(removals)


# output ----------------------------------------------------------------------------------------------
def file_targets(runs: Sequence[FileRun]) -> list[Target]:
    targets = []
    for run in runs:
        if run.name in (REFERENCE, REFERENCE_PDF):
            continue
        seconds = run.seconds if run.answered else None
        targets.append(_met_or_not(at_most(f"{run.name}: answered, seconds", seconds, ANSWER_LIMIT_S, "s")))
        targets.append(
            at_most(f"{run.name}: extra memory over {run.reference}", run.extra_mib, EXTRA_MEMORY_LIMIT_MIB, "MiB")
        )
    return targets


def _met_or_not(target: Target) -> Target:
    """A file that got no reply fails its target (instead of "not measured")."""
    return target if target.measured is not None else Target(target.name, target.target, None, target.unit, False)


def lane_targets(lane: LaneResult) -> list[Target]:
    alone, loaded = lane.p95(lane.alone_s), lane.p95(lane.with_hostile_s)
    ratio = None if not alone or loaded is None else loaded / alone
    targets = [at_most("lane: p95 with hostile files ÷ p95 alone", ratio, LANE_RATIO_LIMIT, "×")]
    answered = all(value is not None for value in lane.hostile_s.values())
    targets.append(Target("lane: every hostile file answered", "all", int(answered), "", answered))
    return targets


def format_table(result: dict[str, Any]) -> str:
    report = Report("peekbot hostile files")
    report.add_text("machine", f"{result['machine'].get('cpus')} CPUs, {result['machine'].get('memory_gib')} GiB")
    report.add_text("file", "   seconds   peak MiB (extra) = bot + workers   reply")
    for run in result["files"]:
        report.add_text(
            run["name"],
            f"{run['seconds']:6.1f} s {run['peak_rss_mib']:7.0f} ({run['extra_mib']:+5.0f})"
            f" = {run['bot_peak_mib']:4.0f} + {run['workers_peak_mib']:3.0f}   {run['reply'][:60]}",
        )
    lane = result.get("lane")
    if lane:
        alone, loaded = distribution(lane["alone_s"]), distribution(lane["with_hostile_s"])
        report.add("lane: normal questions alone p50 / p95", alone["p50"], alone["p95"], unit="s")
        report.add("lane: with 4 hostile files p50 / p95", loaded["p50"], loaded["p95"], unit="s")
        for name, seconds in lane["hostile_s"].items():
            report.add_text(f"lane: {name}", f"{seconds} s  {lane['hostile_replies'].get(name, '')[:70]}")
    report.targets = [Target(**t) for t in result["targets"]]
    return report.render()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lane", action="store_true", help="also run the lane benchmark through the fake Slack")
    parser.add_argument("--only-lane", action="store_true", help="run only the lane benchmark")
    parser.add_argument("--files", nargs="*", default=[], help="only these corpus files (and the reference)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--checkout", type=Path, help="run the bot from this source tree instead of this one")
    parser.add_argument(
        "--lane-max-pixels", type=int, default=LANE_MAX_PIXELS, help="PEEKBOT_MAX_PIXELS of the lane run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global CHECKOUT
    CHECKOUT = args.checkout.resolve() if args.checkout else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "files": [],
        "targets": [],
    }
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="peekbot-hostile-") as tmp:
        if not args.only_lane:
            runs = run_files(Path(tmp), args.files)
            result["files"] = [{**asdict(r), "answered": r.answered} for r in runs]
            targets += file_targets(runs)
        if args.lane or args.only_lane:
            lane = asyncio.run(run_lane(Path(tmp), max_pixels=args.lane_max_pixels))
            result["lane"] = {**asdict(lane), "max_pixels": args.lane_max_pixels}
            targets += lane_targets(lane)
    result["targets"] = targets_json(targets)
    return emit(result, format_table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
