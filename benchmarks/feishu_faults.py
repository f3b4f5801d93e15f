"""Feishu fault injection: questions at a steady rate through the real adapter while the link misbehaves.

The loopback fake Feishu (``tests/support/fake_feishu.py``: discovery, pbbp2 WebSocket, REST) runs on its own event
loop in a second thread, like a remote server. The bot is the real ``Application`` with the real
``FeishuAdapter`` and ``TransformersEngine`` on a tiny random Qwen3-VL model (or ``--model``), its queue and
batch limits kept small so that the engine stays saturated. Questions are image messages (direct) and
posts with an image and an @-mention (groups). Faults are spread evenly over the run:

- ``kill``: every WebSocket is reset (no close frame);
- ``silence``: the open WebSocket stops answering pings (events still flow), as a half-dead link does;
- ``duplicate``: the newest question's event is pushed again with the same event_id;
- ``backfill``: a question from ten events back is pushed again with a new event_id;
- ``rate_limit``: the next card updates (CardKit element content) get HTTP 429 with a reset header;
- ``discovery_failure``: the connection is reset and the next endpoint discovery answers 503.

All figures are measured at the fake: ack latency (data frame sent → ack frame received), reconnect time
(kill → next WebSocket accepted), silence detection (pongs stop → next WebSocket accepted), first visible
feedback (question's frame first sent → "Typing" reaction or reply card, whichever comes first) and the
answers each question got. While the run goes on, every fifth answer is rated 👍 as soon as it is final (a
``card.action.trigger``, alternately as an EVENT and a CARD frame): the time to the bot's toast on that frame.

    .venv/bin/python benchmarks/feishu_faults.py                       # 200 questions, 10 faults
    .venv/bin/python benchmarks/feishu_faults.py --events 60 --faults 6 --rate 3 --json out.json

JSON goes to stdout (or to ``--json FILE``, then the table goes to stdout); the human table otherwise goes to stderr.
``--svg`` draws the per-question figures over time with the faults marked. Exit status 0 when every target is met,
1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.faults_common import (  # noqa: E402
    BACKFILL,
    DISCOVERY_FAILURE,
    DUPLICATE,
    FAULT_KINDS,
    KILL,
    RATE_LIMIT,
    RECONNECTING_KINDS,
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

if TYPE_CHECKING:  # the fake is imported lazily so ``--help`` stays fast
    from tests.support.fake_feishu import FakeFeishu, StoredMessage

logger = logging.getLogger("benchmarks.feishu_faults")

ACK_P99_TARGET_MS = 100.0
RECONNECT_MEDIAN_TARGET_S = 2.0
FEEDBACK_P95_TARGET_S = 1.0
SILENCE_PINGS = 3
SILENCE_GRACE_S = 2.0
BACKFILL_DISTANCE = 10
"""A backfill re-sends the question this many events before the newest one."""
ACK_TIMEOUT_S = 3.0
"""Feishu pushes an event again when it is not acked within about 3 s."""
CARD_CONTENT_PATH = r"/open-apis/cardkit/v1/cards/[^/]+/elements/[^/]+/content$"
PROGRESS_PREFIXES = ("Looking at it", "Queued —")
ERROR_PREFIX = "⚠️"
BUSY_MARK = "I'm busy right now"
TYPING = "Typing"
USERS = 6
PRESS_EVERY = 5
"""Every this many questions, the answer gets a 👍 once it is final."""
CALLBACK_TARGET_S = 3.0
"""Feishu shows the presser an error when a card callback is not answered within this time."""
GROUPS = 2
QUESTIONS = (
    "what does this error mean?",
    "which button saves the settings?",
    "summarise this screen",
    "这个提示是什么意思？",
    "is anything in a warning state?",
)
IMAGE_SIZES = ((640, 400), (390, 844), (800, 500), (320, 240))


@dataclass(slots=True)
class Options:
    events: int = 200
    faults: int = 10
    rate_per_s: float = 2.0
    kinds: tuple[str, ...] = FAULT_KINDS
    ping_interval_s: float = 2.0
    """PingInterval in the server's ClientConfig (production Feishu sends 120 s)."""
    pong_timeout_s: float = 2.0
    """FEISHU_PONG_TIMEOUT_S (the adapter's default is 10 s, sized for a 120 s ping interval)."""
    rate_limited_updates: int = 6
    """Card updates answered with 429 per ``rate_limit`` fault."""
    max_new_tokens: int = 96
    max_batch_size: int = 2
    queue_limit: int = 8
    max_pixels: int = 256 * 256
    cpu_threads: int | None = 1
    """torch threads for the engine (process-wide); None leaves torch's default."""
    warmup: bool = True
    device: str = "auto"
    model: Path | None = None
    timeout_s: float = 900.0
    """Hard bound on the measured run (traffic, faults and waiting for the last answers)."""
    settle_s: float = 30.0
    """After the last question was sent, the run waits for the answers still owed while they keep coming: it stops
    when every question is answered or when no answer came in for this long (then the rest count as lost). A
    saturated engine's backlog is therefore waited for, not counted as lost."""


# the world on the fake's side (runs on the fake's own event loop) -----------------------------------
@dataclass(slots=True)
class Question:
    index: int
    message_id: str
    event: dict[str, Any]
    created_at: float
    transport_id: str = ""


@dataclass(slots=True)
class Extra:
    """A frame pushed by a fault (a duplicate or backfill of an earlier question)."""

    kind: str
    message_id: str
    transport_id: str


@dataclass(slots=True)
class FaultLog:
    number: int
    kind: str
    after_event: int
    planned_offset_s: float
    injected_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PressLog:
    """A 👍 on an answer: the frame it went in and how long the bot took to answer it (None: no answer)."""

    message_id: str
    frame: str
    latency_s: float | None
    toast: str = ""


@dataclass(slots=True)
class DriveLog:
    start: float
    questions: list[Question] = field(default_factory=list)
    extras: list[Extra] = field(default_factory=list)
    faults: list[FaultLog] = field(default_factory=list)
    presses: list[PressLog] = field(default_factory=list)
    traffic_end: float | None = None
    settled_at: float | None = None
    settled: bool = False


def render_images() -> list[bytes]:
    from inference.bench.workload import make_screenshot

    pngs = []
    for seed, (width, height) in enumerate(IMAGE_SIZES):
        buffer = io.BytesIO()
        make_screenshot(width, height, seed=seed).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def make_question(fake: FakeFeishu, index: int, images: Sequence[bytes]) -> Question:
    """Every third question is a group post (@bot, text and an image); the others are direct images."""
    user = f"ou_user_{index % USERS}"
    image_key = f"img_bench_{index}"
    if index % 3 == 2:
        content = {"title": "", "content": [
            [{"tag": "at", "user_id": "@_user_1", "user_name": "peekbot"},
             {"tag": "text", "text": " " + QUESTIONS[index % len(QUESTIONS)]}],
            [{"tag": "img", "image_key": image_key}],
        ]}
        event = fake.message_event(
            msg_type="post", content=content, chat_id=f"oc_team_{index % GROUPS}", chat_type="group",
            sender_open_id=user, mentions=[fake.mention(1, fake.bot_open_id, "peekbot")],
        )
    else:
        event = fake.message_event(msg_type="image", content={"image_key": image_key}, chat_id=f"oc_dm_{user}",
                                   sender_open_id=user)
    message_id = event["event"]["message"]["message_id"]
    fake.add_resource(message_id, image_key, images[index % len(images)])
    return Question(index, message_id, event, time.monotonic())


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _wait_for_connection(fake: FakeFeishu, deadline: float) -> bool:
    while fake.open_connections == 0:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def inject(fake: FakeFeishu, fault: FaultLog, log: DriveLog, options: Options, deadline: float) -> None:
    """Carry out one fault at its planned moment and note when it took effect."""
    await _sleep_until(log.start + fault.planned_offset_s)
    if fault.kind in RECONNECTING_KINDS and not await _wait_for_connection(fake, deadline):
        fault.detail["skipped"] = "no connection open before the deadline"
        return
    if fault.kind in (KILL, DISCOVERY_FAILURE):
        if fault.kind == DISCOVERY_FAILURE:
            fault.detail["discovery_failures"] = 1
            fake.discovery_failures += 1
        fault.injected_at = time.monotonic()
        await fake.drop_connections(abrupt=True)
    elif fault.kind == SILENCE:
        fault.injected_at = time.monotonic()
        fake.silence_current()
    elif fault.kind in (DUPLICATE, BACKFILL):
        if not log.questions:
            fault.detail["skipped"] = "no question sent yet"
            return
        if fault.kind == DUPLICATE:
            original = log.questions[-1]
            event = original.event
        else:
            original = log.questions[max(0, len(log.questions) - 1 - BACKFILL_DISTANCE)]
            event = dict(original.event, header=dict(original.event["header"], event_id=uuid.uuid4().hex))
        fault.injected_at = time.monotonic()
        transport_id = await fake.push_event(event)
        log.extras.append(Extra(fault.kind, original.message_id, transport_id))
        fault.detail.update(message_id=original.message_id, question=original.index,
                            event_id=event["header"]["event_id"])
    elif fault.kind == RATE_LIMIT:
        fault.injected_at = time.monotonic()
        fake.fail("PUT", CARD_CONTENT_PATH, status=429, times=options.rate_limited_updates)
        fault.detail["responses_429"] = options.rate_limited_updates


def reply_view(fake: FakeFeishu, message: StoredMessage) -> tuple[str, bool]:
    """A bot reply's visible text and whether it is final (a closed streaming card, or a plain card/text)."""
    from tests.support.fake_feishu import card_text

    try:
        content = json.loads(message.content or "{}")
    except ValueError:
        return "", False
    if content.get("type") == "card":
        card = fake.cards.get(str((content.get("data") or {}).get("card_id")))
        if card is None:
            return "", False
        text = "\n".join(card.texts.values())
        return text, not card.streaming and not text.startswith(PROGRESS_PREFIXES)
    text = str(content.get("text") or card_text(content))
    return text, bool(text) and not text.startswith(PROGRESS_PREFIXES)


def replies_by_question(fake: FakeFeishu, ids: set[str]) -> dict[str, list[StoredMessage]]:
    found: dict[str, list[StoredMessage]] = defaultdict(list)
    for message in list(fake.messages.values()):
        if message.sender_type == "app" and message.parent_id in ids:
            found[message.parent_id].append(message)
    return found


def unfinished(fake: FakeFeishu, questions: Sequence[Question]) -> list[Question]:
    """Questions without a final reply yet, or whose "Typing" reaction is still there."""
    replies = replies_by_question(fake, {q.message_id for q in questions})
    waiting = []
    for question in questions:
        finals = [m for m in replies.get(question.message_id, []) if reply_view(fake, m)[1]]
        if not finals or fake.reactions.get(question.message_id):
            waiting.append(question)
    return waiting


async def press_answers(fake: FakeFeishu, log: DriveLog) -> None:
    """Rate every ``PRESS_EVERY``-th answer 👍 once it is final, alternately over an EVENT and a CARD frame."""
    pressed: set[str] = set()
    while True:
        await asyncio.sleep(0.5)
        due = [q for q in log.questions if q.index % PRESS_EVERY == 0 and q.message_id not in pressed]
        waiting = {q.message_id for q in unfinished(fake, due)}
        for question in (q for q in due if q.message_id not in waiting):
            pressed.add(question.message_id)
            values = [(m, v) for m in fake.replies_to(question.message_id) for v in fake.buttons_on(m)
                      if v.get("k") == "helpful"]
            if not values:  # a busy reply or an apology carries no rating
                continue
            message, value = values[0]
            frame = "card" if len(log.presses) % 2 else "event"
            callback = fake.card_action_event(message, value, open_id=f"ou_user_{question.index % USERS}")
            try:
                press = await fake.press(callback, frame=frame, timeout=2 * CALLBACK_TARGET_S)
            except AssertionError:  # no connection open, or no answer in time
                log.presses.append(PressLog(question.message_id, frame, None))
                continue
            log.presses.append(PressLog(question.message_id, frame, press.latency_s, press.toast))


async def drive(fake: FakeFeishu, options: Options, plan: Sequence[PlannedFault], images: Sequence[bytes]) -> DriveLog:
    """Send the questions on schedule, inject the faults, then wait (bounded) for the last answers."""
    log = DriveLog(start=time.monotonic())
    deadline = log.start + options.timeout_s
    log.faults = [FaultLog(p.number, p.kind, p.after_event, p.offset_s) for p in plan]
    injections = [asyncio.get_running_loop().create_task(inject(fake, f, log, options, deadline))
                  for f in log.faults]
    presser = asyncio.get_running_loop().create_task(press_answers(fake, log))
    try:
        for index, offset in enumerate(event_offsets(options.events, options.rate_per_s)):
            await _sleep_until(log.start + offset)
            question = make_question(fake, index, images)
            log.questions.append(question)
            question.transport_id = await fake.push_event(question.event)
        if injections:  # ``--faults 0`` injects none
            await asyncio.wait(injections, timeout=max(0.1, deadline - time.monotonic()))
        log.traffic_end = time.monotonic()
        pending, progress_at = list(log.questions), log.traffic_end
        while pending and time.monotonic() < min(deadline, progress_at + options.settle_s):
            await asyncio.sleep(0.25)
            still = unfinished(fake, pending)
            if len(still) < len(pending):
                progress_at = time.monotonic()
            pending = still
        log.settled = not pending
        log.settled_at = time.monotonic()
        # Late duplicates would show up now: frames re-sent after an ack timeout, answers started twice.
        await asyncio.sleep(min(ACK_TIMEOUT_S + 0.5, max(0.0, deadline - time.monotonic())))
    finally:
        for task in (*injections, presser):
            task.cancel()
        await asyncio.gather(*injections, presser, return_exceptions=True)
    return log


def analyse(fake: FakeFeishu, log: DriveLog, options: Options) -> dict[str, Any]:
    """Turn the fake's records into the run's figures (called on the fake's loop, before the bot stops)."""
    ids = {q.message_id for q in log.questions}
    replies = replies_by_question(fake, ids)
    typing_added: dict[str, list[float]] = defaultdict(list)
    shown: dict[str, list[float]] = defaultdict(list)
    for call in list(fake.calls):
        if call.method != "POST" or call.status != 200 or not call.path.startswith("/open-apis/im/v1/messages/"):
            continue
        parts = call.path.split("/")
        message_id, action = parts[5], parts[6] if len(parts) > 6 else ""
        if message_id not in ids:
            continue
        if action == "reactions" and ((call.body or {}).get("reaction_type") or {}).get("emoji_type") == TYPING:
            typing_added[message_id].append(call.at)
            shown[message_id].append(call.at)
        elif action == "reply":
            shown[message_id].append(call.at)

    outcomes: list[QuestionOutcome] = []
    feedback_s: list[float] = []
    feedback_from_message_s: list[float] = []
    per_question: list[dict[str, Any]] = []
    for question in log.questions:
        finals = [text for text, final in (reply_view(fake, m) for m in replies.get(question.message_id, []))
                  if final]
        outcome = QuestionOutcome(
            key=question.message_id,
            final_replies=len(finals),
            handlings=len(typing_added.get(question.message_id, [])),
            busy=any(BUSY_MARK in text for text in finals),
            error=bool(finals) and all(text.startswith(ERROR_PREFIX) for text in finals),
        )
        outcomes.append(outcome)
        sends = fake.sends_for(question.transport_id)
        first_seen = min(shown[question.message_id]) if shown.get(question.message_id) else None
        feedback = first_seen - sends[0].at if first_seen is not None and sends else None
        if feedback is not None:
            feedback_s.append(feedback)
        if first_seen is not None:
            feedback_from_message_s.append(first_seen - question.created_at)
        per_question.append({
            "index": question.index, "message_id": question.message_id,
            "sent_s": round(question.created_at - log.start, 3),
            "feedback_s": None if feedback is None else round(feedback, 4),
            "final_replies": outcome.final_replies, "busy": outcome.busy, "error": outcome.error,
        })

    acks_by_transport: dict[str, list[Any]] = defaultdict(list)
    for ack in list(fake.acks):
        acks_by_transport[ack.transport_id].append(ack)
    frames = [(q.transport_id, "question", q.created_at) for q in log.questions]
    frames += [(e.transport_id, e.kind, None) for e in log.extras]
    ack_latencies: list[float] = []
    ack_points: list[tuple[float, float]] = []
    unacked: list[str] = []
    non_200 = 0
    for transport_id, _, _ in frames:
        acks = acks_by_transport.get(transport_id, [])
        non_200 += sum(1 for a in acks if a.code != 200)
        good = sorted((a for a in acks if a.code == 200), key=lambda a: a.at)
        sends = fake.sends_for(transport_id)
        if not good:
            if sends:
                unacked.append(transport_id)
            continue
        first = good[0]
        same_connection = [s.at for s in sends if s.connection == first.connection and s.at <= first.at]
        if same_connection:
            latency = first.at - same_connection[0]
            ack_latencies.append(latency)
            ack_points.append((same_connection[0] - log.start, latency))
    resent = sum(max(0, len(fake.sends_for(t)) - 1) for t, _, _ in frames)

    faults_out: list[dict[str, Any]] = []
    reconnect_kill: list[float] = []
    reconnect_discovery: list[float] = []
    silence_detection: list[float] = []
    for fault in log.faults:
        recovery = None
        if fault.kind in RECONNECTING_KINDS and fault.injected_at is not None:
            later = [t for t in fake.connection_times if t > fault.injected_at]
            recovery = later[0] - fault.injected_at if later else None
            if recovery is not None:
                {KILL: reconnect_kill, DISCOVERY_FAILURE: reconnect_discovery,
                 SILENCE: silence_detection}[fault.kind].append(recovery)
        faults_out.append({
            "number": fault.number, "kind": fault.kind, "after_event": fault.after_event,
            "at_s": None if fault.injected_at is None else round(fault.injected_at - log.start, 3),
            "new_connection_after_s": None if recovery is None else round(recovery, 3),
            **fault.detail,
        })
    reconnecting_faults = sum(1 for f in log.faults if f.kind in RECONNECTING_KINDS and f.injected_at is not None)
    rate_limited = sum(1 for c in fake.calls if c.status == 429)
    rest_calls = sum(1 for c in fake.calls if not c.path.startswith("/open-apis/auth/"))

    answers = count_answers(outcomes)
    press_latencies = [p.latency_s for p in log.presses if p.latency_s is not None]
    silence_bound = SILENCE_PINGS * options.ping_interval_s + SILENCE_GRACE_S
    return {
        "answers": answers,
        "ack_latency_ms": distribution(ack_latencies, scale=1000.0, digits=2),
        "first_feedback_s": distribution(feedback_s),
        "first_feedback_from_message_s": distribution(feedback_from_message_s),
        "reconnect_after_kill_s": {**distribution(reconnect_kill), "values": [round(v, 3) for v in reconnect_kill]},
        "reconnect_after_kill_with_failing_discovery_s": {
            **distribution(reconnect_discovery), "values": [round(v, 3) for v in reconnect_discovery]},
        "silence_detection_s": {**distribution(silence_detection), "bound_s": silence_bound,
                                "values": [round(v, 3) for v in silence_detection]},
        "frames": {
            "pushed": len(frames), "acked": len(ack_latencies), "unacked": len(unacked), "non_200_acks": non_200,
            "resent": resent, "duplicates_pushed": sum(1 for e in log.extras if e.kind == DUPLICATE),
            "backfills_pushed": sum(1 for e in log.extras if e.kind == BACKFILL),
        },
        "connections": {
            "opened": fake.connections_opened,
            "reconnects": max(0, fake.connections_opened - 1),
            "reconnects_not_caused_by_a_fault": max(0, fake.connections_opened - 1 - reconnecting_faults),
            "discoveries": fake.discoveries,
        },
        "card_callbacks": {
            **distribution(press_latencies),
            "sent": len(log.presses),
            "unanswered": sum(1 for p in log.presses if p.latency_s is None),
            "by_frame": {kind: sum(1 for p in log.presses if p.frame == kind) for kind in ("event", "card")},
            "thanked": sum(1 for p in log.presses if p.toast.startswith("Thanks")),
            "toasts": dict(Counter(p.toast for p in log.presses if p.latency_s is not None)),
        },
        "rate_limited_responses": rate_limited,
        "rest_calls": {"total": rest_calls, "per_question": round(rest_calls / max(1, len(log.questions)), 2)},
        "faults": faults_out,
        "settled": log.settled,
        "traffic_s": None if log.traffic_end is None else round(log.traffic_end - log.start, 2),
        "settled_after_s": None if log.settled_at is None else round(log.settled_at - log.start, 2),
        "per_question": per_question,
        "ack_points": [(round(t, 3), round(v * 1000, 2)) for t, v in ack_points],
    }


# the bot's side --------------------------------------------------------------------------------------
def feishu_settings(options: Options, fake: FakeFeishu, model_dir: Path, data_dir: Path) -> Any:
    """The bot's settings for the run: the engine's limits of ``options``, the adapter pointed at ``fake``."""
    from adapters.feishu.settings import FeishuSettings

    env = {
        **bot_environment(model_dir, data_dir, max_new_tokens=options.max_new_tokens,
                          max_batch_size=options.max_batch_size, queue_limit=options.queue_limit,
                          max_pixels=options.max_pixels, cpu_threads=options.cpu_threads, device=options.device,
                          warmup=options.warmup),
        "FEISHU_APP_ID": fake.app_id,
        "FEISHU_APP_SECRET": fake.app_secret,
        "FEISHU_DOMAIN": fake.url,
        "FEISHU_PONG_TIMEOUT_S": str(options.pong_timeout_s),
    }
    return load_settings(env, FeishuSettings, remove=("FEISHU_PING_INTERVAL_S",))


async def _start_fake(options: Options) -> FakeFeishu:
    from tests.support.fake_feishu import FakeFeishu

    config = {"PingInterval": options.ping_interval_s, "ReconnectCount": -1, "ReconnectInterval": 120,
              "ReconnectNonce": 30}  # Feishu's own values, except the ping interval
    fake = FakeFeishu(client_config=config, ack_timeout_s=ACK_TIMEOUT_S, max_resends=5)
    await fake.start()
    return fake


async def _run_bot(options: Options, fake: FakeFeishu, fake_loop: LoopThread, model_dir: Path,
                   data_dir: Path) -> dict[str, Any]:
    from adapters.feishu import FeishuAdapter
    from bot.wiring import build_application
    from inference.transformers_engine import TransformersEngine

    settings = feishu_settings(options, fake, model_dir, data_dir)
    images = render_images()
    plan = plan_faults(options.events, options.faults, options.rate_per_s, options.kinds)
    app = build_application(settings, engine=TransformersEngine(settings.engine), adapters=[FeishuAdapter(settings)])
    async with app:
        async with probing(app.engine.stats) as (lag, queue):
            log = await fake_loop.run(drive(fake, options, plan, images), options.timeout_s + 30.0)
        figures = await fake_loop.call(lambda: analyse(fake, log, options))
        health = await app.adapters["feishu"].health()
        traffic_end = log.traffic_end or time.monotonic()
        figures["engine"] = {**queue.summary(log.start, traffic_end), **engine_figures(app.engine.stats())}
        figures["bot_loop_lag_ms"] = distribution(lag.lags_s, scale=1000.0, digits=2)
        figures["adapter_reconnects"] = health.reconnects
    return figures


async def run_benchmark(options: Options) -> dict[str, Any]:
    """Run the whole benchmark and return its result (figures, targets, parameters)."""
    if options.events < 1 or options.rate_per_s <= 0:
        raise ValueError("need at least one event and a positive rate")
    unknown = set(options.kinds) - set(FAULT_KINDS)
    if unknown or (options.faults and not options.kinds):
        raise ValueError(f"fault kinds must be some of {', '.join(FAULT_KINDS)} (got {', '.join(options.kinds)})")
    if options.events / options.rate_per_s + 5 > options.timeout_s:
        raise ValueError(f"{options.events} events at {options.rate_per_s}/s do not fit in {options.timeout_s} s")
    began = time.monotonic()
    where = machine()  # the load average before the run
    with tempfile.TemporaryDirectory(prefix="peekbot-feishu-faults-") as tmp:
        model_dir = await model_directory(options.model, Path(tmp))
        fake_loop = LoopThread("fake-feishu")
        try:
            fake = await fake_loop.run(_start_fake(options), 30.0)
            try:
                figures = await _run_bot(options, fake, fake_loop, model_dir, Path(tmp) / "data")
            finally:
                await fake_loop.run(fake.stop(), 30.0)
        finally:
            fake_loop.close()
    result = {
        "benchmark": "feishu_faults",
        "parameters": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
                       "model": str(options.model) if options.model else "tiny random qwen3_vl (built for the run)"},
        "machine": where,
        **figures,
        "total_s": round(time.monotonic() - began, 1),
    }
    result["targets"] = targets_json(judge(result))
    result["all_targets_met"] = all(t["met"] for t in result["targets"])
    return result


def judge(result: dict[str, Any]) -> list[Any]:
    silence = result["silence_detection_s"]
    answers = result["answers"]
    return [
        below("ack latency p99", result["ack_latency_ms"]["p99"], ACK_P99_TARGET_MS, "ms"),
        below("reconnect after a kill, median", result["reconnect_after_kill_s"]["median"],
              RECONNECT_MEDIAN_TARGET_S, "s"),
        at_most("silence detected (slowest)", silence["max"], silence["bound_s"], "s"),
        below("first visible feedback p95", result["first_feedback_s"]["p95"], FEEDBACK_P95_TARGET_S, "s"),
        at_most("lost answers", answers["lost"], 0, ""),
        at_most("duplicate answers", answers["duplicates"], 0, ""),
        below("card callback answered, slowest", result["card_callbacks"]["max"], CALLBACK_TARGET_S, "s"),
        at_most("card callbacks unanswered", result["card_callbacks"]["unanswered"], 0, ""),
    ]


# output --------------------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> str:
    p = result["parameters"]
    report = Report(f"Feishu fault injection: {p['events']} questions at {p['rate_per_s']}/s, "
                    f"{len(result['faults'])} faults")
    ack, feedback = result["ack_latency_ms"], result["first_feedback_s"]
    kill, discovery = result["reconnect_after_kill_s"], result["reconnect_after_kill_with_failing_discovery_s"]
    silence, answers, engine = result["silence_detection_s"], result["answers"], result["engine"]
    report.add("ack latency p50 / p99 / max", ack["p50"], ack["p99"], ack["max"], unit="ms")
    report.add("reconnect after a kill: median / max", kill["median"], kill["max"], unit=f"s (n={kill['count']})")
    report.add("  … with a failing discovery: median / max", discovery["median"], discovery["max"],
               unit=f"s (n={discovery['count']})")
    report.add("silence detected after: median / max", silence["median"], silence["max"],
               unit=f"s (n={silence['count']}, bound {silence['bound_s']:g} s)")
    report.add("first visible feedback p50 / p95 / max", feedback["p50"], feedback["p95"], feedback["max"], unit="s")
    user_view = result["first_feedback_from_message_s"]
    report.add("  … from the message (incl. link down) p50 / p95", user_view["p50"], user_view["p95"], unit="s")
    report.add_text("answers: expected / delivered / lost / duplicates",
                    f"{answers['expected']} / {answers['delivered']} / {answers['lost']} / {answers['duplicates']}")
    report.add_text("  … busy replies / other error replies / lost while in progress",
                    f"{answers['busy_replies']} / {answers['error_replies'] - answers['busy_replies']} / "
                    f"{answers['lost_while_in_progress']}")
    frames = result["frames"]
    report.add_text("frames: pushed / re-sent / unacked / non-200 acks",
                    f"{frames['pushed']} / {frames['resent']} / {frames['unacked']} / {frames['non_200_acks']}")
    connections = result["connections"]
    report.add_text("reconnects (not caused by a fault)",
                    f"{connections['reconnects']} ({connections['reconnects_not_caused_by_a_fault']})")
    callbacks = result["card_callbacks"]
    report.add("👍 callbacks answered p50 / p99 / max", callbacks["p50"], callbacks["p99"], callbacks["max"], unit="s")
    report.add_text("  … sent (event / card frames) / unanswered / thanked",
                    f"{callbacks['sent']} ({callbacks['by_frame']['event']} / {callbacks['by_frame']['card']}) / "
                    f"{callbacks['unanswered']} / {callbacks['thanked']}")
    report.add_text("429 answers to card updates", str(result["rate_limited_responses"]))
    report.add("REST calls: total / per question", result["rest_calls"]["total"], result["rest_calls"]["per_question"])
    report.add("engine queue non-empty / mean depth / max depth", engine["queue_nonempty_share"],
               engine["queue_depth_mean"], engine["queue_depth_max"])
    report.add("engine batches / mean batch size", engine["batches"], engine["mean_batch_size"])
    lag = result["bot_loop_lag_ms"]
    report.add("bot event-loop lag p50 / p99 / max", lag["p50"], lag["p99"], lag["max"], unit="ms")
    report.add_text("traffic / settled after / whole run",
                    f"{result['traffic_s']} s / {result['settled_after_s']} s / {result['total_s']} s")
    report.add_text("faults", ", ".join(
        f"{f['kind']}@{f['at_s']}s" + (f"→{f['new_connection_after_s']}s" if f["new_connection_after_s"] else "")
        for f in result["faults"]))
    report.targets = [Target(**t) for t in result["targets"]]
    return report.render()


def chart(result: dict[str, Any]) -> str:
    feedback = [(q["sent_s"], q["feedback_s"] * 1000) for q in result["per_question"]
                if q["feedback_s"] is not None and q["feedback_s"] > 0]
    acks = [(t, v) for t, v in result["ack_points"] if v > 0]
    markers = [Marker(f["at_s"], f["kind"]) for f in result["faults"] if f["at_s"] is not None]
    p = result["parameters"]
    return timeline_svg(
        f"Feishu fault injection: {p['events']} questions at {p['rate_per_s']}/s (ms, log scale)",
        [PointSeries("ack latency", "#1971c2", acks), PointSeries("first visible feedback", "#e8590c", feedback)],
        markers, unit="ms",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    add_load_arguments(parser, defaults)
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS),
                        help=f"fault kinds, drawn in turn (default {','.join(FAULT_KINDS)})")
    parser.add_argument("--ping-interval", type=float, default=defaults.ping_interval_s,
                        help="PingInterval the fake server hands out, seconds")
    parser.add_argument("--pong-timeout", type=float, default=defaults.pong_timeout_s,
                        help="FEISHU_PONG_TIMEOUT_S for the bot, seconds")
    parser.add_argument("--cpu-threads", type=int, default=defaults.cpu_threads,
                        help="torch threads for the engine (0: torch's default)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--model", type=Path, default=None, help="model directory or id (default: tiny random)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s,
                        help="hard bound on the measured run in seconds (default 900)")
    parser.add_argument("--svg", type=Path, default=None, help="write a timeline chart here")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    return Options(
        events=args.events, faults=args.faults, rate_per_s=args.rate, kinds=kinds,
        ping_interval_s=args.ping_interval, pong_timeout_s=args.pong_timeout, max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size, queue_limit=args.queue_limit,
        cpu_threads=args.cpu_threads or None, device=args.device, model=args.model, timeout_s=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    logger.setLevel(logging.INFO)
    # The fake server's complaints about clients that hang up mid-request (kills, shutdown) are not figures.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    options = options_from(args)
    try:
        result = asyncio.run(asyncio.wait_for(run_benchmark(options), options.timeout_s + 180.0))
    except ValueError as exc:
        print(f"feishu_faults: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("feishu_faults: the run did not finish within its time bound", file=sys.stderr)
        return 2
    if args.svg is not None:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(chart(result), encoding="utf-8")
    return emit(result, table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
