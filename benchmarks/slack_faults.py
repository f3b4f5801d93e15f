"""Slack fault injection: questions at a steady rate over Socket Mode while connections fail and Slack misbehaves.

The real slack-bolt/slack_sdk stack (``SlackAdapter`` inside ``Application``) talks to the loopback fake Slack
(``sandbox/slack_server.py``), which runs on its own event loop in another thread, like a separate server.
The engine is a tiny random Qwen3-VL model kept saturated: a small queue and batch and enough new tokens per answer that
questions wait (and some get the polite "busy" reply, which counts as an answer).

Faults, evenly spaced and cycled in this order: an abrupt socket kill (TCP reset), a server ``disconnect``
message (``refresh_requested``, then ``warning``), a half-open connection (the server stops answering pings and
sending; first with TCP keepalives still echoed, as a middlebox might, so only the watchdog can notice, then with
nothing answered at all), a redelivery of a question that is still being answered (same ``event_id``,
``retry_attempt`` 1), and 429 + ``Retry-After`` on ``chat.update``. Envelopes that are not acked within 3 s are
redelivered by the fake with ``retry_attempt`` + 1 (three times by default, as Slack does), so an event sent on a
dying connection is not lost by construction and "lost" measures the bot.

The ping interval defaults to 1 s instead of the product's 10 s so that half-open faults resolve within the run;
every other setting of the connection and its watchdog is the product's default. To check the product's timing,
run with ``--ping-interval 10`` and enough redeliveries to outlast a 30 s half-open period (Slack's own retries
come minutes apart): ``--ping-interval 10 --events 40 --rate 1 --faults 3 --redeliveries 15``.

Figures: envelope ack latency (envelope sent → ack received at the fake), reconnect time after a kill and after
a ``disconnect`` (fault → the new connection's ``hello``), half-open detection time (silence start → new
``hello``) against the bound 3 × ping interval + 2 s, first visible feedback (event → the first reaction or
placeholder message), and the answers: expected, delivered, lost, duplicated, busy.

    .venv/bin/python benchmarks/slack_faults.py                      # 200 events, 10 faults, 2 events/s
    .venv/bin/python benchmarks/slack_faults.py --events 60 --faults 5 --rate 3 --json out.json

JSON goes to stdout (or to ``--json FILE``, then the table goes to stdout); the human table otherwise goes to stderr.
The exit status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from adapters.slack.connection import LOCAL_CHECK_S  # noqa: E402
from adapters.slack.settings import SlackSettings  # noqa: E402
from benchmarks.faults_common import (  # noqa: E402
    DUPLICATE,
    KILL,
    RATE_LIMIT,
    SILENCE,
    LoopThread,
    Marker,
    PlannedFault,
    PointSeries,
    QuestionOutcome,
    Report,
    Target,
    add_load_arguments,
    add_output_arguments,
    at_most,
    below,
    bot_environment,
    configure_logging,
    count_answers,
    distribution,
    emit,
    engine_figures,
    event_offsets,
    load_settings,
    machine,
    model_directory,
    plan_faults,
    probing,
    targets_json,
    timeline_svg,
)
from sandbox.slack_server import FakeSlack  # noqa: E402

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger("benchmarks.slack_faults")

DISCONNECT = "disconnect"
"""Slack's own fault: the server sends ``disconnect`` and asks the client to move to a fresh connection."""
SLACK_FAULT_KINDS: tuple[str, ...] = (KILL, DISCONNECT, SILENCE, DUPLICATE, RATE_LIMIT)
CONNECTION_FAULTS = frozenset({KILL, DISCONNECT, SILENCE})

ACK_P99_TARGET_MS = 100.0
KILL_RECONNECT_TARGET_S = 2.0
FEEDBACK_P95_TARGET_S = 1.0
HALF_OPEN_SLACK_S = 2.0
"""Half-open detection bound: stale-after pings × ping interval plus this."""

RATE_LIMITED_UPDATES = 3
RETRY_AFTER_S = 1.0
BUSY_PREFIX = ":warning: I'm busy right now"
PLACEHOLDER_PREFIXES = ("Looking at it", "Queued — ")
MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
QUESTIONS = (
    "What does this error dialog mean?",
    "Which setting turns the warning off?",
    "Summarise what this screen shows.",
    "Why is the build red?",
    "这个提示是什么意思？",
)


@dataclass(frozen=True, slots=True)
class SlackFaultsConfig:
    events: int = 200
    faults: int = 10
    rate_per_s: float = 2.0
    model: str | None = None
    """A model directory; None builds a tiny random Qwen3-VL model in a temporary directory."""
    ping_interval_s: float = 1.0
    """slack_sdk's ping interval (the product's default is 10 s; a shorter one lets half-open faults resolve within
    the run). Every other connection setting keeps the product's default."""
    max_new_tokens: int = 96
    max_batch_size: int = 2
    queue_limit: int = 4
    cpu_threads: int = 1
    ack_timeout_s: float = 3.0
    """The fake redelivers an envelope not acked within this time (Slack: 3 s)."""
    max_redeliveries: int = 3
    """How often the fake redelivers an unacked envelope before giving up (Slack: 3 times)."""
    image_every: int = 4
    """Every n-th question carries a small screenshot (downloaded with the bot token)."""
    timeout_s: float = 240.0
    """The whole run stops by this time; questions still unanswered then count as lost."""
    native_streaming: bool = True
    """``SLACK_NATIVE_STREAMING``: answers streamed with ``chat.startStream``/``appendStream``, else ``chat.update``."""


# driving the fake (runs on the fake's own event loop) ----------------------------------------------
@dataclass(slots=True)
class SentQuestion:
    index: int
    channel: str
    ts: str
    event_ids: list[str]
    sent_at: float
    """``time.monotonic()`` when its first envelope was sent."""
    with_image: bool
    first_event: dict[str, Any]


@dataclass(slots=True)
class InjectedFault:
    number: int
    kind: str
    planned_offset_s: float
    at: float | None = None
    """``time.monotonic()`` of the injection; None when it could not be injected."""
    detail: str = ""


@dataclass(slots=True)
class DriveLog:
    started_at: float = 0.0
    finished_at: float = 0.0
    questions: list[SentQuestion] = field(default_factory=list)
    faults: list[InjectedFault] = field(default_factory=list)
    stopped_early: bool = False


class SlackDriver:
    """Sends the questions and injects the faults on the fake's loop, and reads what the fake saw."""

    def __init__(self, fake: FakeSlack, config: SlackFaultsConfig, plan: list[PlannedFault]) -> None:
        self.fake = fake
        self.config = config
        self.plan = plan
        self.log = DriveLog()
        self._image = _small_png()
        self._disconnects = 0
        self._silences = 0
        self._answered: set[str] = set()

    async def drive(self, deadline: float) -> DriveLog:
        """Questions at a steady rate and faults at their planned offsets; returns when both are done."""
        self.log.started_at = time.monotonic()
        await asyncio.gather(self._send_questions(deadline), self._inject_faults(deadline))
        self.log.finished_at = time.monotonic()
        return self.log

    async def _sleep_until(self, offset_s: float, deadline: float) -> bool:
        at = self.log.started_at + offset_s
        if at > deadline:
            self.log.stopped_early = True
            return False
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        return True

    async def _send_questions(self, deadline: float) -> None:
        for index, offset in enumerate(event_offsets(self.config.events, self.config.rate_per_s)):
            if not await self._sleep_until(offset, deadline):
                return
            await self._send_question(index)

    async def _send_question(self, index: int) -> None:
        fake = self.fake
        question = QUESTIONS[index % len(QUESTIONS)]
        with_image = self.config.image_every > 0 and index % self.config.image_every == 0
        files = [fake.add_file(f"screen-{index}.png", self._image, "image/png")] if with_image else []
        direct = index % 2 == 0
        if direct:  # a DM: one ``message`` event
            event = fake.user_message(f"D0USER{index % 7:02d}", question, user=f"U0USER{index % 7:02d}", files=files)
            events = [event]
        else:  # a channel mention: Slack sends ``message`` and ``app_mention`` for the same post
            event = fake.user_message("C0GENERAL", f"{MENTION} {question}", user=f"U0USER{index % 7:02d}", files=files)
            events = [event, fake.app_mention(event)]
        sent_at = time.monotonic()
        event_ids = [f"Ev{index:05d}{n}" for n in range(len(events))]
        self.log.questions.append(
            SentQuestion(index, event["channel"], event["ts"], event_ids, sent_at, with_image, event)
        )
        for payload, event_id in zip(events, event_ids, strict=True):
            await fake.send_event(payload, event_id=event_id)

    async def _inject_faults(self, deadline: float) -> None:
        for planned in self.plan:
            fault = InjectedFault(planned.number, planned.kind, planned.offset_s)
            self.log.faults.append(fault)
            if not await self._sleep_until(planned.offset_s, deadline):
                fault.detail = "not injected: past the deadline"
                return
            try:
                await self._inject(fault, deadline)
            except Exception as exc:  # a fault that cannot be injected is reported, not fatal
                fault.at = None
                fault.detail = f"not injected: {exc}"
                logger.warning("fault %d (%s) could not be injected: %s", fault.number, fault.kind, exc)

    async def _inject(self, fault: InjectedFault, deadline: float) -> None:
        fake = self.fake
        if fault.kind in CONNECTION_FAULTS:
            # The previous fault may still be recovering: wait (bounded) for a live connection to break.
            wait_s = max(min(15.0, deadline - time.monotonic()), 0.1)
            await fake.wait_until(lambda: fake.live, timeout=wait_s, what="a live connection to inject a fault on")
        fault.at = time.monotonic()
        if fault.kind == KILL:
            await fake.drop_connection(abrupt=True)
            fault.detail = "TCP reset of the live connection"
        elif fault.kind == DISCONNECT:
            self._disconnects += 1
            if self._disconnects % 2:
                await fake.disconnect("refresh_requested", close_after_s=1.0)
                fault.detail = "disconnect (refresh_requested), socket closed 1 s later"
            else:
                await fake.disconnect("warning", close_after_s=None)
                fault.detail = "disconnect (warning), socket left open"
        elif fault.kind == SILENCE:
            self._silences += 1
            if self._silences % 2:  # a middlebox still answers keepalives: only the watchdog's own check notices
                fake.go_silent(echo_keepalive=True)
                fault.detail = "half-open, keepalive pings still echoed: no pongs to payload pings, no envelopes"
            else:  # nothing answers: aiohttp's keepalive notices too
                fake.go_silent()
                fault.detail = "half-open: no pongs at all, no envelopes"
        elif fault.kind == DUPLICATE:
            target = self.log.questions[-1]
            await fake.send_event(target.first_event, event_id=target.event_ids[0], retry_attempt=1)
            fault.detail = f"redelivered {target.event_ids[0]} ({target.channel} {target.ts}) with retry_attempt 1"
        elif fault.kind == RATE_LIMIT:
            for method in ("chat.update", "chat.appendStream"):  # whichever way the answers stream
                fake.rate_limit(method, times=RATE_LIMITED_UPDATES, retry_after=RETRY_AFTER_S)
            fault.detail = (f"next {RATE_LIMITED_UPDATES} chat.update and chat.appendStream calls: 429, "
                            f"Retry-After {RETRY_AFTER_S:g} s")
        else:
            raise ValueError(f"unknown fault kind {fault.kind}")

    # reading the fake ----------------------------------------------------------------------------
    def _final_replies(self, question: SentQuestion) -> list[str]:
        """The bot's messages in the question's thread that carry an answer or an error (not progress)."""
        replies = self.fake.bot_messages(question.channel, question.ts)
        return [
            str(m["text"]) for m in replies
            if not m.get("streaming") and not str(m["text"]).startswith(PLACEHOLDER_PREFIXES)
        ]

    def outcomes(self) -> list[QuestionOutcome]:
        reactions = Counter(
            (str(c.args.get("channel")), str(c.args.get("timestamp")))
            for c in self.fake.api_calls
            if c.method == "reactions.add" and c.ok
        )
        outcomes = []
        for q in self.log.questions:
            finals = self._final_replies(q)
            outcomes.append(QuestionOutcome(
                key=f"{q.channel}:{q.ts}",
                final_replies=len(finals),
                handlings=reactions[(q.channel, q.ts)],  # one progress reaction per time the bot took it up
                busy=any(text.startswith(BUSY_PREFIX) for text in finals),
                error=any(text.startswith(":warning:") for text in finals),
            ))
        return outcomes

    def unanswered(self) -> int:
        """Questions without a final reply yet (a final reply stays final, so answered ones are remembered)."""
        for q in self.log.questions:
            if q.ts not in self._answered and self._final_replies(q):
                self._answered.add(q.ts)
        return len(self.log.questions) - len(self._answered)

    def settled(self) -> bool:
        """Every question has its reply and every broken connection has been replaced."""
        recovering = any(
            f.at is not None and f.kind in CONNECTION_FAULTS and _first_after(self.fake.hellos, f.at) is None
            for f in self.log.faults
        )
        return not recovering and self.unanswered() == 0

    def snapshot(self) -> dict[str, Any]:
        """Plain copies of everything the figures need (taken on the fake's loop)."""
        fake = self.fake
        # First visible sign per question: the progress reaction on it or a message in its thread.
        first_seen: dict[tuple[str, str], float] = {}
        for c in fake.api_calls:
            if not c.ok or c.method not in ("reactions.add", "chat.postMessage", "chat.startStream"):
                continue
            ts = c.args.get("timestamp") if c.method == "reactions.add" else c.args.get("thread_ts")
            key = (str(c.args.get("channel")), str(ts))
            first_seen[key] = min(first_seen.get(key, c.at), c.at)
        feedback = {q.ts: first_seen.get((q.channel, q.ts)) for q in self.log.questions}
        deliveries = [
            {
                "event_id": d.envelope["payload"].get("event_id"),
                "retry_attempt": d.envelope.get("retry_attempt", 0),
                "sent_at": d.sent_at,
                "acked_at": d.acked_at,
                "lost": d.lost,
            }
            for d in fake.deliveries.values()
            if d.envelope.get("type") == "events_api"
        ]
        calls = [(c.method, c.status) for c in fake.api_calls]
        return {
            "outcomes": self.outcomes(),
            "feedback": feedback,
            "deliveries": deliveries,
            "hellos": list(fake.hellos),
            "calls": calls,
            "connections_opened": fake.connections_opened,
        }


def _small_png() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 96), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 160, 16), fill=(40, 60, 90))
    draw.rectangle((20, 36, 140, 70), outline=(200, 40, 40), width=2)
    draw.text((28, 46), "Error 502", fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def plan_slack_faults(events: int, faults: int, rate_per_s: float) -> list[PlannedFault]:
    """The shared even spacing of ``plan_faults``, with the kinds cycled through Slack's five."""
    spaced = plan_faults(events, faults, rate_per_s, kinds=(KILL,))
    return [dataclasses.replace(p, kind=SLACK_FAULT_KINDS[i % len(SLACK_FAULT_KINDS)]) for i, p in enumerate(spaced)]


# the bot ---------------------------------------------------------------------------------------------
def build_application(fake: FakeSlack, config: SlackFaultsConfig, model: str, data_dir: Path) -> Application:
    """``Application`` + ``SlackAdapter`` + ``TransformersEngine`` configured for the run (no scheduler)."""
    from adapters.slack import SlackAdapter
    from bot.app import Application
    from inference.transformers_engine import TransformersEngine

    env = {
        **bot_environment(model, data_dir, max_new_tokens=config.max_new_tokens, max_batch_size=config.max_batch_size,
                          queue_limit=config.queue_limit, max_pixels=128 * 128, cpu_threads=config.cpu_threads,
                          warmup=True, drain_timeout_s=10.0, stop_timeout_s=30.0),
        "SLACK_BOT_TOKEN": fake.BOT_TOKEN,
        "SLACK_APP_TOKEN": fake.APP_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "SLACK_PING_INTERVAL_S": str(config.ping_interval_s),
        "SLACK_STARTUP_ATTEMPTS": "1",
        "SLACK_NATIVE_STREAMING": "true" if config.native_streaming else "false",
    }
    settings = load_settings(env, SlackSettings)
    return Application(settings, engine=TransformersEngine(settings.engine), adapters=[SlackAdapter(settings)])


# the run -------------------------------------------------------------------------------------------
async def run_benchmark(config: SlackFaultsConfig) -> dict[str, Any]:
    """Run the whole benchmark once and return the result (figures, answers, targets)."""
    started = time.monotonic()
    deadline = started + config.timeout_s
    with tempfile.TemporaryDirectory(prefix="peekbot-slack-faults-") as tmp:
        model = str(await model_directory(config.model, Path(tmp)))
        fake_loop = LoopThread("fake-slack")
        try:
            return await _run_with_fake(config, model, Path(tmp) / "data", fake_loop, started, deadline)
        finally:
            fake_loop.close()


async def _run_with_fake(
    config: SlackFaultsConfig, model: str, data_dir: Path, fake_loop: LoopThread, started: float, deadline: float
) -> dict[str, Any]:
    fake = FakeSlack(ack_timeout_s=config.ack_timeout_s, max_redeliveries=config.max_redeliveries)
    await fake_loop.run(fake.start(), 30.0)
    plan = plan_slack_faults(config.events, config.faults, config.rate_per_s)
    driver = SlackDriver(fake, config, plan)
    app = build_application(fake, config, model, data_dir)
    timed_out = False
    try:
        async with app:
            ready_s = time.monotonic() - started
            async with probing(app.engine.stats) as (lag, queue):
                log = await fake_loop.run(driver.drive(deadline - 5.0), max(deadline - time.monotonic(), 1.0))
                answers_deadline = deadline - 5.0
                while not await fake_loop.call(driver.settled):
                    if time.monotonic() > answers_deadline:
                        timed_out = True
                        break
                    await asyncio.sleep(0.1)
                settled_at = time.monotonic()
                # Late redeliveries could still produce a second answer: give them one ack timeout and a second.
                await asyncio.sleep(max(0.0, min(config.ack_timeout_s + 1.0, deadline - time.monotonic())))
            health = await app.adapter_health()
            engine_stats = app.engine.stats()
            counters = dict(app.counters)
            snapshot = await fake_loop.call(driver.snapshot)
    finally:
        await fake_loop.run(fake.stop(), 30.0)
    slack_health = health.get("slack")
    return _result(
        config,
        model=model,
        log=log,
        snapshot=snapshot,
        ready_s=ready_s,
        settled_at=settled_at,
        timed_out=timed_out or log.stopped_early,
        queue=queue.summary(log.started_at, log.finished_at),
        loop_lag_s=lag.lags_s,
        adapter_reconnects=slack_health.reconnects if slack_health is not None else None,
        watchdog_interval_s=app.settings.section(SlackSettings).watchdog_interval_s,
        engine_stats=engine_stats,
        counters=counters,
    )


def _first_after(times: list[float], moment: float) -> float | None:
    later = [t for t in times if t >= moment]
    return min(later) if later else None


def _unless_unrecovered(target: Target, times: list[float | None]) -> Target:
    """A connection fault that was never followed by a new connection fails its target outright."""
    if None in times:
        return dataclasses.replace(target, measured=None, met=False)
    return target


def _result(
    config: SlackFaultsConfig,
    *,
    model: str,
    log: DriveLog,
    snapshot: dict[str, Any],
    ready_s: float,
    settled_at: float,
    timed_out: bool,
    queue: dict[str, Any],
    loop_lag_s: list[float],
    adapter_reconnects: int | None,
    engine_stats: Any,
    counters: dict[str, int],
    watchdog_interval_s: float,
) -> dict[str, Any]:
    deliveries: list[dict[str, Any]] = snapshot["deliveries"]
    hellos: list[float] = snapshot["hellos"]
    acked = [d for d in deliveries if d["acked_at"] is not None]
    ack_latencies = [d["acked_at"] - d["sent_at"] for d in acked]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_event.setdefault(str(d["event_id"]), []).append(d)

    # First visible feedback, two ways: from the question's first envelope (what the person waits) and from the
    # envelope that reached the bot (the last one sent before the feedback appeared; the bot's own speed).
    feedback_user: list[float] = []
    feedback_bot: list[float] = []
    delayed_by_faults = 0
    no_feedback: list[str] = []
    points_feedback: list[tuple[float, float]] = []
    for q in log.questions:
        shown_at = snapshot["feedback"].get(q.ts)
        if shown_at is None:
            no_feedback.append(f"{q.channel}:{q.ts}")
            continue
        sends = [d["sent_at"] for e in q.event_ids for d in by_event.get(e, []) if d["sent_at"] <= shown_at]
        feedback_user.append(shown_at - q.sent_at)
        feedback_bot.append(shown_at - max(sends or [q.sent_at]))
        if max(sends or [q.sent_at]) > q.sent_at + config.ack_timeout_s / 2:
            delayed_by_faults += 1  # its first envelope was swallowed by a dying connection
        points_feedback.append((q.sent_at - log.started_at, (shown_at - q.sent_at) * 1000))

    kills, disconnects, silences = [], [], []
    for fault in log.faults:
        if fault.at is None:
            continue
        hello = _first_after(hellos, fault.at)
        took = None if hello is None else hello - fault.at
        if fault.kind == KILL:
            kills.append(took)
        elif fault.kind == DISCONNECT:
            disconnects.append(took)
        elif fault.kind == SILENCE:
            silences.append(took)
    half_open_bound = 3.0 * config.ping_interval_s + HALF_OPEN_SLACK_S
    connection_faults = sum(1 for f in log.faults if f.at is not None and f.kind in CONNECTION_FAULTS)
    calls = snapshot["calls"]

    answers = count_answers(snapshot["outcomes"])
    ack = distribution(ack_latencies, scale=1000.0, digits=2)
    kill_stats = distribution([t for t in kills if t is not None], digits=3)
    silence_stats = distribution([t for t in silences if t is not None], digits=3)
    feedback_bot_stats = distribution(feedback_bot, digits=3)
    feedback_user_stats = distribution(feedback_user, digits=3)
    targets: list[Target] = [
        below("envelope ack p99", ack["p99"], ACK_P99_TARGET_MS, "ms"),
        _unless_unrecovered(below("reconnect after a kill (median)", kill_stats["median"], KILL_RECONNECT_TARGET_S,
                                  "s"), kills),
        _unless_unrecovered(at_most("half-open detection (worst)", silence_stats["max"], half_open_bound, "s"),
                            silences),
        below("first visible feedback p95", feedback_bot_stats["p95"], FEEDBACK_P95_TARGET_S, "s"),
        at_most("lost answers", answers["lost"], 0, ""),
        at_most("duplicate answers", answers["duplicates"], 0, ""),
    ]
    markers = [Marker(f.at - log.started_at, f"{f.number}:{f.kind}") for f in log.faults if f.at is not None]
    points_ack = [(d["sent_at"] - log.started_at, (d["acked_at"] - d["sent_at"]) * 1000) for d in acked]
    return {
        "benchmark": "slack_faults",
        "parameters": {
            **dataclasses.asdict(config),
            "model": model,
            "watchdog_interval_s": watchdog_interval_s,
            "watchdog_local_check_s": LOCAL_CHECK_S,
            "stale_after_s": 3.0 * config.ping_interval_s,
            "fault_kinds": list(SLACK_FAULT_KINDS),
        },
        "machine": machine(),
        "timed_out": timed_out,
        "startup_s": round(ready_s, 2),
        "drive_s": round(log.finished_at - log.started_at, 2),
        "settled_after_s": round(settled_at - log.started_at, 2),
        "faults": [
            {"number": f.number, "kind": f.kind, "planned_at_s": round(f.planned_offset_s, 3),
             "at_s": None if f.at is None else round(f.at - log.started_at, 3), "detail": f.detail}
            for f in log.faults
        ],
        "envelopes": {
            "sent": len(deliveries),
            "acked": len(acked),
            "not_acked": len(deliveries) - len(acked),
            "swallowed": sum(1 for d in deliveries if d["lost"]),
            "redeliveries": sum(1 for d in deliveries if d["retry_attempt"] > 0),
        },
        "ack_latency_ms": ack,
        "reconnect_after_kill_s": kill_stats | {"each": [None if t is None else round(t, 3) for t in kills]},
        "reconnect_after_disconnect_s": {"each": [None if t is None else round(t, 3) for t in disconnects]},
        "half_open_detection_s": silence_stats | {
            "each": [None if t is None else round(t, 3) for t in silences],
            "bound": half_open_bound,
        },
        "connections": {
            "opened": snapshot["connections_opened"],
            "connection_faults": connection_faults,
            "unprovoked_reconnects": max(0, snapshot["connections_opened"] - 1 - connection_faults),
            "adapter_reconnects": adapter_reconnects,
        },
        "first_feedback_s": feedback_bot_stats,
        "first_feedback_from_first_envelope_s": feedback_user_stats | {
            "questions_delayed_by_faults": delayed_by_faults,
        },
        "questions_without_feedback": no_feedback[:50],
        "answers": answers,
        "rate_limited_calls": sum(1 for _, status in calls if status == 429),
        "chat_update_calls": sum(1 for method, _ in calls if method == "chat.update"),
        "api_calls_per_answer": calls_per_answer(calls, len(snapshot["outcomes"])),
        "engine": {**engine_figures(engine_stats), "queue": queue},
        "core_counters": counters,
        "bot_loop_lag_ms": distribution(loop_lag_s, scale=1000.0, digits=2),
        "timeline": {"ack_ms": points_ack, "feedback_ms": points_feedback,
                     "faults": [(m.at_s, m.label) for m in markers]},
        "targets": targets_json(targets),
    }


SET_UP_METHODS = frozenset({"auth.test", "apps.connections.open"})


def calls_per_answer(calls: list[tuple[str, int]], questions: int) -> dict[str, float]:
    """Web API calls per question asked (connection set-up left out): in all and per method."""
    counted = Counter(method for method, _ in calls if method not in SET_UP_METHODS)
    per = {method: round(n / max(questions, 1), 2) for method, n in sorted(counted.items())}
    return {"total": round(sum(counted.values()) / max(questions, 1), 2), **per}


# output ----------------------------------------------------------------------------------------------
def _each(seconds: list[float | None]) -> str:
    return ", ".join("–" if t is None else f"{t:.3f} s" for t in seconds) or "–"


def format_table(result: dict[str, Any]) -> str:
    p = result["parameters"]
    report = Report(
        f"Slack fault injection: {p['events']} events at {p['rate_per_s']:g}/s, {p['faults']} faults, "
        f"ping {p['ping_interval_s']:g} s"
    )
    env, ack, answers = result["envelopes"], result["ack_latency_ms"], result["answers"]
    report.add_text("envelopes sent / acked / swallowed / redelivered",
                    f"{env['sent']} / {env['acked']} / {env['swallowed']} / {env['redeliveries']}")
    report.add("envelope ack p50 / p99 / max", ack["p50"], ack["p99"], ack["max"], unit="ms")
    kill = result["reconnect_after_kill_s"]
    report.add("reconnect after a kill median / max", kill["median"], kill["max"], unit="s")
    report.add_text("reconnect after a disconnect (each)", _each(result["reconnect_after_disconnect_s"]["each"]))
    half = result["half_open_detection_s"]
    report.add_text("half-open detection (each) / bound", f"{_each(half['each'])} / {half['bound']:g} s")
    conn = result["connections"]
    report.add_text("connections opened / faults / unprovoked",
                    f"{conn['opened']} / {conn['connection_faults']} / {conn['unprovoked_reconnects']}")
    fb, fu = result["first_feedback_s"], result["first_feedback_from_first_envelope_s"]
    report.add("first feedback p50 / p95 (envelope that reached the bot)", fb["p50"], fb["p95"], unit="s")
    report.add("first feedback p50 / p95 / max (first envelope)", fu["p50"], fu["p95"], fu["max"], unit="s")
    report.add_text("questions whose first envelope was swallowed", str(fu["questions_delayed_by_faults"]))
    report.add_text("answers expected / delivered / lost / duplicated",
                    f"{answers['expected']} / {answers['delivered']} / {answers['lost']} / {answers['duplicates']}")
    report.add_text("lost, though the bot had shown progress", str(answers.get("lost_while_in_progress", "–")))
    report.add_text("delivered: answers / busy / other errors",
                    f"{answers['answered']} / {answers['busy_replies']} / "
                    f"{answers['error_replies'] - answers['busy_replies']}")
    report.add_text("chat.update calls / 429s served",
                    f"{result['chat_update_calls']} / {result['rate_limited_calls']}")
    per_answer = result["api_calls_per_answer"]
    report.add_text("Web API calls per answer", ", ".join(
        [f"{per_answer['total']:g} in all"] + [f"{m} {n:g}" for m, n in per_answer.items() if m != "total"]))
    queue = result["engine"]["queue"]
    report.add_text("engine queue non-empty / depth mean / max",
                    f"{queue['queue_nonempty_share']} / {queue['queue_depth_mean']} / {queue['queue_depth_max']}")
    lag = result["bot_loop_lag_ms"]
    report.add("bot event-loop lag p50 / p99 / max", lag["p50"], lag["p99"], lag["max"], unit="ms")
    report.add_text("start-up / drive / settled after",
                    f"{result['startup_s']} s / {result['drive_s']} s / {result['settled_after_s']} s"
                    + ("  (TIMED OUT)" if result["timed_out"] else ""))
    report.targets = [Target(**t) for t in result["targets"]]
    return report.render()


def timeline_chart(result: dict[str, Any]) -> str:
    timeline = result["timeline"]
    return timeline_svg(
        "Slack fault injection: envelope ack and first feedback per event",
        [PointSeries("envelope ack (ms)", "#1098ad", timeline["ack_ms"]),
         PointSeries("first feedback (ms)", "#e8590c", timeline["feedback_ms"])],
        [Marker(at, label) for at, label in timeline["faults"]],
        unit="ms",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SlackFaultsConfig()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_load_arguments(parser, defaults)
    parser.add_argument("--model", default=None, help="model directory (default: a tiny random model, built once)")
    parser.add_argument("--ping-interval", type=float, default=defaults.ping_interval_s, help="seconds (default 1)")
    parser.add_argument("--redeliveries", type=int, default=defaults.max_redeliveries,
                        help="times the fake redelivers an unacked envelope, 3 s apart (default 3, as Slack)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="global time limit in seconds")
    parser.add_argument("--chart", type=Path, default=None, help="also write an SVG timeline here")
    parser.add_argument("--native-streaming", choices=("on", "off"), default="on",
                        help="stream answers natively (chat.startStream…) or by chat.update (default on)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.events < 1 or args.faults < 0 or args.rate <= 0 or args.ping_interval <= 0 or args.timeout <= 0:
        parser.error("--events, --rate, --ping-interval and --timeout must be positive, --faults not negative")
    return args


def config_from(args: argparse.Namespace) -> SlackFaultsConfig:
    return SlackFaultsConfig(
        events=args.events,
        faults=args.faults,
        rate_per_s=args.rate,
        model=args.model,
        ping_interval_s=args.ping_interval,
        max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size,
        queue_limit=args.queue_limit,
        max_redeliveries=args.redeliveries,
        timeout_s=args.timeout,
        native_streaming=args.native_streaming == "on",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    config = config_from(args)
    result = asyncio.run(asyncio.wait_for(run_benchmark(config), config.timeout_s + 60.0))
    if args.chart is not None:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_text(timeline_chart(result), encoding="utf-8")
    return emit(result, format_table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
