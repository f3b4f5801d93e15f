"""What a person in Slack waits for: questions at random times, answers of a few hundred tokens streamed into the
placeholder, timed at the fake Slack server.

The real slack-bolt/slack_sdk stack (``SlackAdapter`` inside ``Application``, every reply setting at the product's
default, so one ``chat.update`` per second at most) talks to the loopback fake Slack (``sandbox/slack_server.py``) on
its own event loop in another thread. Questions arrive as a Poisson process (seeded) from several people, as DMs and
channel mentions, every other one with its own screenshot; each question's text is unique, so the answer cache
never serves one. The engine is a tiny random Qwen3-VL model, greedy, under the scheduling policy asked for.

Per question, from the fake's clock:

* **first visible words**: question sent → the first call in its thread that shows answer text, not the placeholder
  (``Looking at it…`` / ``Queued — …``): a ``chat.update`` of the placeholder, or a streamed piece
  (``chat.startStream``/``chat.appendStream``) where the adapter streams natively;
* **whole answer**: question sent → the last such call in its thread (the final edit, or ``chat.stopStream``).

Target: p95 of the first visible words ≤ 0.35 × the median whole answer. The mean gap between questions is meant to
be below one answer's duration (the run says whether it was), so questions overlap and share the engine.

    .venv/bin/python benchmarks/user_latency.py                          # 40 questions, 1.5 s mean gap
    .venv/bin/python benchmarks/user_latency.py --policy static --json out.json

JSON goes to stdout (or to ``--json FILE``, then the table goes to stdout); the table otherwise goes to stderr. The
exit status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from adapters.kit.text import is_progress_text  # noqa: E402
from adapters.slack.settings import SlackSettings  # noqa: E402
from benchmarks.faults_common import (  # noqa: E402
    LoopThread,
    Report,
    Target,
    add_output_arguments,
    at_most,
    below,
    bot_environment,
    configure_logging,
    distribution,
    emit,
    engine_figures,
    load_settings,
    machine,
    model_directory,
    targets_json,
)
from inference.bench.workload import QUESTIONS, SCREEN_SIZES, arrival_offsets, make_screenshot  # noqa: E402
from sandbox.slack_server import FakeSlack  # noqa: E402

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger("benchmarks.user_latency")

FIRST_WORDS_RATIO = 0.35
"""p95 time to the first visible words ≤ this × the median time to the whole answer."""
MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
PEOPLE = 6
NEW_MESSAGE = frozenset({"chat.postMessage", "chat.startStream"})
EDIT = frozenset({"chat.update", "chat.appendStream", "chat.stopStream"})
SETTLE_S = 3.0
"""After the engine is idle: time for the last streamed edit and the final text to land."""


@dataclass(frozen=True, slots=True)
class UserLatencyConfig:
    questions: int = 40
    mean_gap_s: float = 1.5
    """Mean seconds between two questions (exponential gaps)."""
    max_new_tokens: int = 256
    max_batch_size: int = 8
    queue_limit: int = 64
    max_pixels: int = 640 * 480
    image_every: int = 2
    """Every n-th question carries its own screenshot (0: none)."""
    policy: str = "continuous"
    seed: int = 0
    model: str | None = None
    """A model directory; None builds a tiny random Qwen3-VL model in a temporary directory."""
    cpu_threads: int | None = None
    timeout_s: float = 900.0


@dataclass(slots=True)
class SentQuestion:
    index: int
    channel: str
    ts: str
    sent_at: float
    with_image: bool


@dataclass(slots=True)
class Seen:
    """What one question's thread showed, by the fake's clock."""

    index: int
    with_image: bool
    first_words_s: float | None
    whole_answer_s: float | None
    edits: int
    answer_chars: int
    error: bool = False


@dataclass(slots=True)
class Drive:
    started_at: float = 0.0
    questions: list[SentQuestion] = field(default_factory=list)


class Asker:
    """Sends the questions on the fake's loop at the trace's times and reads the threads afterwards."""

    def __init__(self, fake: FakeSlack, config: UserLatencyConfig) -> None:
        self.fake = fake
        self.config = config
        self.drive = Drive()

    async def ask_all(self) -> Drive:
        offsets = arrival_offsets(self.config.questions, 1.0 / self.config.mean_gap_s, self.config.seed)
        self.drive.started_at = time.monotonic()
        for index, offset in enumerate(offsets):
            await asyncio.sleep(max(0.0, self.drive.started_at + offset - time.monotonic()))
            await self._ask(index)
        return self.drive

    async def _ask(self, index: int) -> None:
        fake, config = self.fake, self.config
        text = f"Question {index + 1}: {QUESTIONS[index % len(QUESTIONS)]}"
        with_image = config.image_every > 0 and index % config.image_every == 0
        png = _screenshot_png(index, config.seed) if with_image else b""
        files = [fake.add_file(f"screen-{index}.png", png, "image/png")] if with_image else []
        user = f"U0PERSON{index % PEOPLE:02d}"
        if index % 2 == 0:  # a DM
            event = fake.user_message(f"D0PERSON{index % PEOPLE:02d}", text, user=user, files=files)
            events = [event]
        else:  # a channel mention: Slack sends ``message`` and ``app_mention`` for the same post
            event = fake.user_message("C0GENERAL", f"{MENTION} {text}", user=user, files=files)
            events = [event, fake.app_mention(event)]
        self.drive.questions.append(SentQuestion(index, event["channel"], event["ts"], time.monotonic(), with_image))
        for number, payload in enumerate(events):
            await fake.send_event(payload, event_id=f"Ev{index:05d}{number}")

    def answered(self) -> int:
        """Questions the bot has finished with (it removed its progress reaction, as it does after the answer)."""
        done = {
            (str(c.args.get("channel")), str(c.args.get("timestamp")))
            for c in self.fake.api_calls
            if c.method == "reactions.remove" and c.ok
        }
        return sum(1 for q in self.drive.questions if (q.channel, q.ts) in done)

    def _thread_calls(self, q: SentQuestion) -> list[tuple[float, str]]:
        """(time, text shown) of every post, edit and streamed piece of the bot's messages in the question's thread,
        in order: ``chat.postMessage``/``chat.update`` (``text``) and ``chat.startStream``/``appendStream``/
        ``stopStream`` (``markdown_text`` or markdown chunks)."""
        own = {str(m["ts"]) for m in self.fake.bot_messages(q.channel, q.ts)}
        shown = []
        for call in self.fake.api_calls:
            if not call.ok or str(call.args.get("channel")) != q.channel:
                continue
            if (call.method in NEW_MESSAGE and str(call.args.get("thread_ts")) == q.ts) or (
                call.method in EDIT and str(call.args.get("ts")) in own
            ):
                shown.append((call.at, _shown_text(call.args)))
        return shown

    def seen(self) -> list[Seen]:
        """Per question, what its thread showed and when (runs on the fake's loop)."""
        result = []
        for q in self.drive.questions:
            calls = self._thread_calls(q)
            words = [at for at, text in calls if text.strip() and not is_progress_text(text)]
            first = min(words) if words else None
            final = " ".join(str(m["text"]) for m in self.fake.bot_messages(q.channel, q.ts))
            result.append(
                Seen(
                    index=q.index,
                    with_image=q.with_image,
                    first_words_s=None if first is None else first - q.sent_at,
                    whole_answer_s=None if first is None else max(words) - q.sent_at,
                    edits=len(words),
                    answer_chars=len(final),
                    error=final.startswith(":warning:"),
                )
            )
        return result


def _shown_text(args: dict[str, Any]) -> str:
    """The text a post, edit or streamed piece carries."""
    if args.get("text") or args.get("markdown_text"):
        return str(args.get("text") or args.get("markdown_text"))
    chunks = args.get("chunks") or []
    if isinstance(chunks, str):
        chunks = json.loads(chunks)
    return "".join(str(c.get("text") or "") for c in chunks if c.get("type") == "markdown_text")


def _screenshot_png(index: int, seed: int) -> bytes:
    width, height = SCREEN_SIZES[index % len(SCREEN_SIZES)]
    buffer = io.BytesIO()
    make_screenshot(width, height, seed=seed * 100_003 + index).save(buffer, format="PNG")
    return buffer.getvalue()


# the bot ---------------------------------------------------------------------------------------------
def build_application(fake: FakeSlack, config: UserLatencyConfig, model: str, data_dir: Path) -> Application:
    """``Application`` + ``SlackAdapter`` + ``TransformersEngine``, every reply setting at the product's default."""
    from adapters.slack import SlackAdapter
    from bot.app import Application
    from inference.transformers_engine import TransformersEngine

    env = {
        **bot_environment(model, data_dir, max_new_tokens=config.max_new_tokens, max_batch_size=config.max_batch_size,
                          queue_limit=config.queue_limit, max_pixels=config.max_pixels, cpu_threads=config.cpu_threads,
                          warmup=True, drain_timeout_s=10.0, stop_timeout_s=30.0),
        "PEEKBOT_SCHEDULING": config.policy,
        "PEEKBOT_SAMPLING": "greedy",
        "SLACK_BOT_TOKEN": fake.BOT_TOKEN,
        "SLACK_APP_TOKEN": fake.APP_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "SLACK_STARTUP_ATTEMPTS": "1",
    }  # fmt: skip
    settings = load_settings(env, SlackSettings)
    return Application(settings, engine=TransformersEngine(settings.engine), adapters=[SlackAdapter(settings)])


# the run -------------------------------------------------------------------------------------------
async def run_benchmark(config: UserLatencyConfig) -> dict[str, Any]:
    """Run once and return the result (figures per question, distributions, targets)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peekbot-user-latency-") as tmp:
        model = str(await model_directory(config.model, Path(tmp)))
        fake_loop = LoopThread("fake-slack")
        try:
            return await _run(config, model, Path(tmp) / "data", fake_loop, started + config.timeout_s)
        finally:
            fake_loop.close()


async def _run(
    config: UserLatencyConfig, model: str, data_dir: Path, fake_loop: LoopThread, deadline: float
) -> dict[str, Any]:
    fake = FakeSlack()
    await fake_loop.run(fake.start(), 30.0)
    asker = Asker(fake, config)
    app = build_application(fake, config, model, data_dir)
    timed_out = False
    try:
        async with app:
            drive = await fake_loop.run(asker.ask_all(), max(deadline - time.monotonic(), 1.0))
            while True:  # every thread shows answer text and the engine has nothing left to do
                stats = app.engine.stats()
                done = await fake_loop.call(asker.answered) == config.questions
                if done and stats.in_flight == 0 and stats.queue_depth == 0:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(SETTLE_S)
            engine_stats = app.engine.stats()
            seen = await fake_loop.call(asker.seen)
    finally:
        await fake_loop.run(fake.stop(), 30.0)
    return _result(config, model=model, drive=drive, seen=seen, engine_stats=engine_stats, timed_out=timed_out)


def _result(
    config: UserLatencyConfig, *, model: str, drive: Drive, seen: list[Seen], engine_stats: Any, timed_out: bool
) -> dict[str, Any]:
    first = [s.first_words_s for s in seen if s.first_words_s is not None and not s.error]
    whole = [s.whole_answer_s for s in seen if s.whole_answer_s is not None and not s.error]
    streaming = [s.whole_answer_s - s.first_words_s for s in seen
                 if s.whole_answer_s is not None and s.first_words_s is not None and not s.error]  # fmt: skip
    sent = [q.sent_at for q in drive.questions]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    first_stats = distribution(first)
    whole_stats = distribution(whole)
    ratio = None
    if first_stats["p95"] is not None and whole_stats["median"]:
        ratio = first_stats["p95"] / whole_stats["median"]
    mean_gap = statistics.fmean(gaps) if gaps else None
    targets: list[Target] = [
        at_most("first_words_p95_over_whole_median", ratio, FIRST_WORDS_RATIO, "×"),
        below("mean_gap_over_whole_median", None if mean_gap is None or not whole_stats["median"]
              else mean_gap / whole_stats["median"], 1.0, "×"),
    ]  # fmt: skip
    return {
        "benchmark": "user_latency",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "parameters": asdict(config) | {"model": model},
        "machine": machine(),
        "questions": len(drive.questions),
        "answered": len(whole),
        "error_replies": sum(1 for s in seen if s.error),
        "timed_out": timed_out,
        "mean_gap_s": mean_gap,
        "first_visible_words_s": first_stats,
        "whole_answer_s": whole_stats,
        "streaming_s": distribution(streaming),
        "answer_chars": distribution([float(s.answer_chars) for s in seen if not s.error], digits=0),
        "edits_per_answer": distribution([float(s.edits) for s in seen if not s.error], digits=1),
        "engine": {
            **engine_figures(engine_stats),
            "mean_step_rows": round(engine_stats.mean_step_rows, 2),
            "time_to_first_token_p50_s": engine_stats.time_to_first_token_p50_s,
            "time_to_first_token_p95_s": engine_stats.time_to_first_token_p95_s,
            "queue_wait_p50_s": engine_stats.queue_wait_p50_s,
            "queue_wait_p95_s": engine_stats.queue_wait_p95_s,
        },
        "per_question": [asdict(s) for s in seen],
        "targets": targets_json(targets),
    }


# output ----------------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    p = result["parameters"]
    report = Report(
        f"User latency through Slack: {p['questions']} questions, mean gap {p['mean_gap_s']:g} s (Poisson), "
        f"{p['max_new_tokens']} new tokens, policy {p['policy']}"
    )
    first, whole, streaming = result["first_visible_words_s"], result["whole_answer_s"], result["streaming_s"]
    report.add("first visible words p50 / p95 / max", first["p50"], first["p95"], first["max"], unit="s")
    report.add("whole answer p50 / p95 / max", whole["p50"], whole["p95"], whole["max"], unit="s")
    report.add("streaming (first words → whole) median", streaming["median"], unit="s")
    report.add("mean gap between questions (measured)", result["mean_gap_s"], unit="s")
    report.add("answer characters median", result["answer_chars"]["median"])
    report.add("edits per answer median", result["edits_per_answer"]["median"])
    report.add_text("answered / errors / questions",
                    f"{result['answered']} / {result['error_replies']} / {result['questions']}"
                    + ("  (TIMED OUT)" if result["timed_out"] else ""))  # fmt: skip
    engine = result["engine"]
    report.add("engine TTFT p50 / p95", engine["time_to_first_token_p50_s"], engine["time_to_first_token_p95_s"],
               unit="s")  # fmt: skip
    report.add("engine queue wait p50 / p95", engine.get("queue_wait_p50_s"), engine.get("queue_wait_p95_s"), unit="s")
    report.add("engine rows per decoding step (mean)", engine["mean_step_rows"])
    report.targets = [Target(**t) for t in result["targets"]]
    return report.render()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = UserLatencyConfig()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=defaults.questions, help="questions to ask (default 40)")
    parser.add_argument("--mean-gap", type=float, default=defaults.mean_gap_s,
                        help=f"mean seconds between questions (default {defaults.mean_gap_s:g})")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    parser.add_argument("--image-every", type=int, default=defaults.image_every)
    parser.add_argument("--policy", choices=("continuous", "static"), default=defaults.policy)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--model", default=None, help="model directory (default: a tiny random model, built once)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="global time limit in seconds")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.questions < 2 or args.mean_gap <= 0 or args.max_new_tokens < 1 or args.timeout <= 0:
        parser.error("--questions must be at least 2; --mean-gap, --max-new-tokens and --timeout above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    config = UserLatencyConfig(
        questions=args.questions,
        mean_gap_s=args.mean_gap,
        max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size,
        queue_limit=max(args.questions + 1, UserLatencyConfig().queue_limit),
        max_pixels=args.max_pixels,
        image_every=args.image_every,
        policy=args.policy,
        seed=args.seed,
        model=args.model,
        cpu_threads=args.threads,
        timeout_s=args.timeout,
    )
    result = asyncio.run(run_benchmark(config))
    return emit(result, format_table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
