"""Long Office files: time and peak memory to read and index a 200-slide deck and a 50,000-row sheet.

Each file goes through the core as a person's question would (``bot.questions.answer_question`` with the media
worker pool, the SQLite store and a scripted engine that records the prompt): the first question reads the file in
a worker and indexes every part; a follow-up question with the file as thread context is answered from the index
(the sheet, which embeds no pictures) or reads the file again (the deck, for its pictures); nothing is indexed
twice. The files are built and the media workers started first (not timed). The deck has a title, a paragraph and
speaker notes per slide and a picture on every tenth slide; the sheet has four columns; a fact is planted on slide
170 and in row 48,000.

Figures per file and question: seconds end to end, the media workers' CPU seconds (what a busy machine does not
inflate), peak RSS of the bot process and of the media workers (sampled every 20 ms with psutil), the parts indexed,
the characters of the prompt the model got, the answer's "Sources used" line and notes. Targets: each question
answered within ``PEEKBOT_MEDIA_TIME_LIMIT_S`` + 10 s (no refusal for time), and a prompt of at most 4 × the
characters a question may carry of file text (``PEEKBOT_DOC_TEXT_CHARS_PER_QUESTION``).

    .venv/bin/python benchmarks/documents.py              # about a minute on 2 idle cores
    .venv/bin/python benchmarks/documents.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from bot.library import DocumentLibrary  # noqa: E402
from bot.media.files import read_document  # noqa: E402
from bot.media.pool import MediaPool  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store.sqlite import SQLiteStore  # noqa: E402
from tests.support import office_files  # noqa: E402
from tests.support.asking import ask  # noqa: E402
from tests.support.engines import FakeEngine  # noqa: E402
from tests.support.helpers import RecordingReply, local_image  # noqa: E402

MIB = 1024 * 1024
FACT = "The zebra quartz lantern code is 4417."


@dataclass
class Run:
    file: str
    question: str
    seconds: float
    bot_peak_mib: float
    workers_peak_mib: float
    workers_cpu_s: float
    """CPU time the media workers spent on the question: the figure a busy machine does not inflate."""
    parts_indexed: int
    prompt_chars: int
    sources: str
    notes: list[str] = field(default_factory=list)


class Peaks:
    """Peak RSS of this process and, separately, of all its descendants (the media workers), every 20 ms."""

    def __init__(self) -> None:
        self.bot = 0
        self.children = 0
        self.children_cpu_s = 0.0
        self._cpu_at_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Peaks:
        self._cpu_at_start = self._children_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        now = self._children_cpu()
        self.children_cpu_s = sum(cpu - self._cpu_at_start.get(pid, 0.0) for pid, cpu in now.items())

    @staticmethod
    def _children_cpu() -> dict[int, float]:
        cpu = {}
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            cpu[child.pid] = times.user + times.system
        return cpu

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.02):
            self.bot = max(self.bot, me.memory_info().rss)
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.children = max(self.children, total)


async def timed(path: Path, question: str, *, follow_up: bool, **core: Any) -> tuple[float, Peaks, RecordingReply]:
    """One question about the file (attached, or earlier in the thread), timed, with the peaks of memory."""
    file = local_image(path, "application/octet-stream")
    with Peaks() as peaks:
        started = time.monotonic()
        reply, _ = await ask(question, *(() if follow_up else (file,)), context=(file,) if follow_up else (), **core)
        seconds = time.monotonic() - started
    return seconds, peaks, reply


@dataclass
class WholeRead:
    """Reading a whole file and indexing every part, in this process without a deadline: the file's own cost."""

    file: str
    seconds: float
    cpu_s: float
    rss_growth_mib: float
    """Peak RSS of this process while reading, over its RSS before."""
    parts: int
    text_chars: int


async def read_whole(name: str, data: bytes, settings: Settings, store: SQLiteStore) -> WholeRead:
    images = settings.images.model_copy(update={"pdf_time_budget_s": 600.0})
    before = psutil.Process().memory_info().rss
    with Peaks() as peaks:
        started, cpu = time.monotonic(), time.process_time()
        document = read_document(data, name=name, images=images)
        pages = [(p.number, f"{p.label}\n{p.text}", f"{name}:{p.number}") for p in document.parts]
        await store.documents.put_pages(f"whole:{name}", pages, source="extracted")
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    growth = (peaks.bot - before) / MIB
    return WholeRead(name, round(seconds, 2), round(cpu, 2), round(growth, 1), len(document.parts), document.text_chars)


async def measure(directory: Path) -> tuple[list[Run], list[WholeRead]]:
    settings = Settings()
    files = {
        "deck-200.pptx": lambda: office_files.deck(
            200, {170: FACT}, pictures={n: office_files.png() for n in range(1, 201, 10)}
        ),
        "sheet-50000.xlsx": lambda: office_files.workbook({"Data": 50_000}, {("Data", 48_000): FACT}),
    }
    store = SQLiteStore(directory / "state.db")
    await store.open()
    media = MediaPool(settings.images)
    runs: list[Run] = []
    wholes: list[WholeRead] = []
    try:
        await media.read_document(b"warm-up\n", name="warm-up.txt", images=settings.images)  # start the workers
        for name, build in files.items():
            path = directory / name
            path.write_bytes(build())
            wholes.append(await read_whole(name, path.read_bytes(), settings, store))
            engine = FakeEngine()
            library = DocumentLibrary(store.documents, engine, settings, media=media)
            for follow_up, question in (
                (False, "What is the zebra quartz lantern code?"),
                (True, "Which item has the lantern code?"),
            ):
                seconds, peaks, reply = await timed(
                    path,
                    question,
                    follow_up=follow_up,
                    library=library,
                    engine=engine,
                    settings=settings,
                    store=store,
                    media=media,
                )
                documents = await store.documents.documents("local:W1:C1:T1")
                indexed = max((d.indexed_pages for d in documents if d.name == name), default=0)
                final = reply.final or reply.error or ""
                lines = [line.strip("_") for line in final.splitlines()[1:] if line.strip()]
                runs.append(
                    Run(
                        name,
                        "follow-up" if follow_up else "first",
                        round(seconds, 2),
                        round(peaks.bot / MIB, 1),
                        round(peaks.children / MIB, 1),
                        round(peaks.children_cpu_s, 2),
                        indexed,
                        len(engine.requests[-1].question) if engine.requests else 0,
                        next((line for line in lines if line.startswith("Sources used")), ""),
                        [line for line in lines if not line.startswith("Sources used")],
                    )
                )
    finally:
        await media.close()
        await store.close()
    return runs, wholes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="peekbot-documents-") as directory:
        runs, wholes = asyncio.run(measure(Path(directory)))
    settings = Settings()
    limit_s = settings.images.media_time_limit_s + 10
    prompt_limit = 4 * settings.images.doc_text_chars_per_question
    met = all(r.seconds <= limit_s and 0 < r.prompt_chars <= prompt_limit for r in runs)
    print("| file | question | s | workers CPU s | bot peak MiB | workers peak MiB | parts | prompt chars | sources |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(
            f"| {r.file} | {r.question} | {r.seconds} | {r.workers_cpu_s} | {r.bot_peak_mib} | {r.workers_peak_mib} | "
            f"{r.parts_indexed} | {r.prompt_chars:,} | {r.sources} |"
        )
        for note in r.notes:
            print(f"|  | note: {note} | | | | | | | |")
    print(f"targets (≤ {limit_s:g} s, prompt ≤ {prompt_limit:,} chars): {'met' if met else 'NOT met'}")
    print()
    print("| whole file, read and indexed in one process | s | CPU s | RSS growth MiB | parts | text chars |")
    print("|---|---:|---:|---:|---:|---:|")
    for w in wholes:
        print(f"| {w.file} | {w.seconds} | {w.cpu_s} | {w.rss_growth_mib} | {w.parts:,} | {w.text_chars:,} |")
    if args.json:
        figures = {"questions": [asdict(r) for r in runs], "whole": [asdict(w) for w in wholes]}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
