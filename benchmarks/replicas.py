"""Several replicas answering once: two `peekbot run` processes, one Redis, the fake Slack and the fake Feishu.

Both replicas hold one Socket Mode connection to the loopback fake Slack (``spread`` mode: each envelope goes to a
random open connection of the app, a redelivery may go to another) and one long connection to the fake Feishu
(cluster mode: each event frame goes to a random live connection, a re-push may go to another). They share one
``redis-server`` (``PEEKBOT_STORE_URL``) for dedupe keys and the job journal, and each has its own data directory
and instance id. Questions are mixed Slack/Feishu; about 10 % are delivered twice to different connections (as a
platform does when an ack got lost), and some Slack posts arrive as both ``message`` and ``app_mention``.
Midway one replica is killed with SIGKILL; the survivor takes over its journaled jobs once their leases run out,
continuing the dead replica's placeholders, and the fakes redeliver what the dead replica had not acked.

Figures: answered, duplicates (target 0), lost (target 0), takeover time (kill → the survivor's first visible
action on an orphaned question: an edit of the dead replica's placeholder, or a new one where it had none;
median and max), total wall time.

    .venv/bin/python benchmarks/replicas.py --events 300
    .venv/bin/python benchmarks/replicas.py --events 60 --kill-after 20 --json out.json

JSON goes to stdout (or to ``--json FILE``, then the table goes to stdout); the human table otherwise goes to stderr.
The exit status is 0 when every target is met, 1 otherwise. Everything it starts (redis-server, the two replicas,
the fakes) is stopped before it exits, also on a timeout (``--timeout``).

The same harness (``Replica``, ``replica_env``, ``ask_slack``, ``ask_feishu``, the outcome counters and the
takeover measurement) drives ``tests/e2e/test_replicas.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.faults_common import (  # noqa: E402
    QuestionOutcome,
    Report,
    Target,
    add_output_arguments,
    at_most,
    build_tiny_model,
    configure_logging,
    count_answers,
    distribution,
    emit,
    machine,
    targets_json,
)
from bot.store.base import Job, JobState  # noqa: E402
from sandbox.slack_server import FakeSlack, slack_environment  # noqa: E402
from tests.support.apps import tiny_bot_environment  # noqa: E402
from tests.support.fake_feishu import FakeFeishu, feishu_environment  # noqa: E402
from tests.support.processes import BotProcess, child_environment  # noqa: E402
from tests.support.redis_server import RedisServer, redis_server_binary  # noqa: E402

logger = logging.getLogger("benchmarks.replicas")

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
PROGRESS_MARKERS = ("looking at it", "queued —")
"""Lower-case pieces of the texts a reply shows before its answer (the placeholder, the queue position)."""
ERROR_PREFIXES = (":warning:", "⚠")
"""How the adapters mark an error reply (Slack, Feishu)."""


# processes -----------------------------------------------------------------------------------------
def replica_env(
    instance_id: str,
    *,
    data_dir: Path,
    model_dir: Path,
    redis_url: str,
    slack: FakeSlack,
    feishu: FakeFeishu,
    max_new_tokens: int,
    lease_s: float = 2.0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one replica: the shared Redis and fakes, its own data directory and instance id."""
    return child_environment({
        **tiny_bot_environment(
            model_dir, cpu_threads=1, data_dir=data_dir, instance_id=instance_id, store_url=redis_url,
            job_lease_s=f"{lease_s:g}", max_new_tokens=max_new_tokens, max_pixels=128 * 128, rate_limit_per_minute=0,
            drain_timeout_s=20, log_format="text",
        ),
        **slack_environment(slack, fail_fast=False),
        **feishu_environment(feishu),
        **(extra or {}),
    })


class Replica(BotProcess):
    """One `peekbot run` process with its own log file; killed (SIGKILL) or stopped (SIGTERM) on demand."""

    def __init__(self, instance_id: str, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.instance_id = instance_id
        self.killed_at: float | None = None

    def kill(self) -> float:  # type: ignore[override]
        """SIGKILL and reap it; returns ``time.monotonic()`` once it is gone (nothing it sent is still on the way)."""
        super().kill()
        self.killed_at = time.monotonic()
        return self.killed_at

    async def terminate(self, timeout_s: float) -> int | None:  # type: ignore[override]
        """SIGTERM and wait (bounded); None when it did not exit in time (then it is killed)."""
        if not self.alive:
            return self.proc.returncode
        try:
            return await super().terminate(timeout_s)
        except subprocess.TimeoutExpired:
            self.close()
            return None


async def wait_for_replicas(slack: FakeSlack, feishu: FakeFeishu, count: int, timeout_s: float,
                            replicas: Sequence[Replica] = ()) -> None:
    """Until ``count`` Slack and Feishu connections are open (each replica holds one of each); bounded."""
    deadline = time.monotonic() + timeout_s
    while len(slack.open_connection_numbers) < count or len(feishu.live_connection_numbers) < count:
        dead = [r for r in replicas if not r.alive]
        if dead:
            raise RuntimeError(f"replica {dead[0].instance_id} exited early:\n{dead[0].log_tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.instance_id}\n{r.log_tail(1500)}" for r in replicas)
            raise AssertionError(
                f"only {len(slack.open_connection_numbers)} Slack and {len(feishu.live_connection_numbers)} Feishu "
                f"connections after {timeout_s} s; expected {count}\n{logs}"
            )
        await asyncio.sleep(0.05)


# questions -----------------------------------------------------------------------------------------
@dataclass
class Question:
    """One question asked on a fake platform, and how it was delivered."""

    platform: str  # slack | feishu
    key: str  # slack "channel:ts", feishu message id
    event_ids: list[str] = field(default_factory=list)
    deliveries: int = 0

    @property
    def job_id(self) -> str:
        """The journal's id for it (``bot.durability.job_id_for``)."""
        return f"{self.platform}:{self.key}"

    @property
    def channel(self) -> str:
        return self.key.rpartition(":")[0]

    @property
    def ts(self) -> str:
        return self.key.rpartition(":")[2]


def _other_connection(open_numbers: Sequence[int], first: int | None, rng: random.Random) -> int | None:
    others = [n for n in open_numbers if n != first]
    return rng.choice(others) if others else None


async def ask_slack(
    fake: FakeSlack,
    text: str,
    *,
    channel: str,
    user: str,
    duplicate: bool = False,
    mention_pair: bool = False,
    connection: int | None = None,
    rng: random.Random | None = None,
) -> Question:
    """Post a question that mentions the bot and deliver its event(s).

    ``duplicate``: the same envelope (same ``event_id``, ``retry_attempt`` 1) again on a different connection, as
    Slack does when an ack went missing. ``mention_pair``: the ``app_mention`` event for the same post as well (a
    second event id for one message), also on another connection.
    """
    rng = rng or random.Random()
    event = fake.user_message(channel, f"{MENTION} {text}", user=user)
    question = Question("slack", f"{channel}:{event['ts']}")
    event_id = f"Ev{uuid.uuid4().hex[:10].upper()}"
    question.event_ids.append(event_id)
    envelope = await fake.send_event(event, event_id=event_id, connection=connection)
    first = fake.deliveries[envelope].connection
    question.deliveries += 1
    if duplicate:
        other = _other_connection(fake.open_connection_numbers, first, rng)
        await fake.send_event(event, event_id=event_id, retry_attempt=1, connection=other)
        question.deliveries += 1
    if mention_pair:
        mention_id = f"Ev{uuid.uuid4().hex[:10].upper()}"
        question.event_ids.append(mention_id)
        other = _other_connection(fake.open_connection_numbers, first, rng)
        await fake.send_event(FakeSlack.app_mention(event), event_id=mention_id, connection=other)
        question.deliveries += 1
    return question


async def ask_feishu(
    fake: FakeFeishu,
    text: str,
    *,
    user: str,
    duplicate: bool = False,
    connection: int | None = None,
    rng: random.Random | None = None,
) -> Question:
    """A direct message to the bot; ``duplicate`` pushes the same event (same event id) again on another connection."""
    rng = rng or random.Random()
    event = fake.message_event(msg_type="text", content={"text": text}, chat_id=f"oc_{user}", sender_open_id=user)
    question = Question("feishu", str(event["event"]["message"]["message_id"]))
    question.event_ids.append(str(event["header"]["event_id"]))
    transport_id = await fake.push_event(event, connection=connection)
    sends = fake.sends_for(transport_id)
    question.deliveries += 1
    if duplicate:
        first = sends[0].connection if sends else None
        other = _other_connection(fake.live_connection_numbers, first, rng)
        await fake.push_event(event, connection=other)
        question.deliveries += 1
    return question


# what the platforms saw ----------------------------------------------------------------------------
def _is_progress(text: str) -> bool:
    lowered = text.strip().lower()
    return not lowered or any(marker in lowered for marker in PROGRESS_MARKERS)


def _is_error(text: str) -> bool:
    return text.strip().startswith(ERROR_PREFIXES)


def slack_outcome(fake: FakeSlack, question: Question) -> QuestionOutcome:
    """Final replies = the bot's messages in the question's thread that show an answer (or an error), not progress;
    handlings = placeholders posted in the thread and progress reactions removed, whichever is larger (two
    replicas answering one question post two placeholders, or both remove the reaction)."""
    channel, ts = question.channel, question.ts
    texts = [str(m.get("text", "")) for m in fake.bot_messages(channel, ts)]
    finals = [t for t in texts if not _is_progress(t)]
    posts = [c for c in fake.calls("chat.postMessage") if c.ok and c.args.get("channel") == channel
             and c.args.get("thread_ts") == ts]
    removals = [c for c in fake.calls("reactions.remove") if c.args.get("channel") == channel
                and c.args.get("timestamp") == ts]
    return QuestionOutcome(
        key=question.job_id,
        final_replies=len(finals),
        handlings=max(len(posts), len(removals)),
        error=any(_is_error(t) for t in finals),
    )


def feishu_outcome(fake: FakeFeishu, question: Question) -> QuestionOutcome:
    """Final replies = reply messages to the question that show an answer, not progress; handlings = reply calls
    (the reply uuid would fold two replicas' cards into one message, the calls still show both) and "Typing"
    reactions added or removed, whichever is larger."""
    message_id = question.key
    texts = fake.reply_texts(message_id)
    finals = [t for t in texts if not _is_progress(t)]
    base = f"/open-apis/im/v1/messages/{message_id}"
    replies = [c for c in fake.calls_to("POST", f"^{base}/reply$") if c.status == 200]
    typing_added = [c for c in fake.calls_to("POST", f"^{base}/reactions$") if c.status == 200]
    typing_removed = fake.calls_to("DELETE", f"^{base}/reactions/")
    return QuestionOutcome(
        key=question.job_id,
        final_replies=len(finals),
        handlings=max(len(replies), len(typing_added), len(typing_removed)),
        error=any(_is_error(t) for t in finals),
    )


def outcomes(slack: FakeSlack, feishu: FakeFeishu, questions: Iterable[Question]) -> list[QuestionOutcome]:
    return [slack_outcome(slack, q) if q.platform == "slack" else feishu_outcome(feishu, q) for q in questions]


def finished(slack: FakeSlack, feishu: FakeFeishu, questions: Iterable[Question]) -> bool:
    """True when every question shows a final reply and its progress indicator is gone."""
    for question in questions:
        outcome = slack_outcome(slack, question) if question.platform == "slack" else feishu_outcome(feishu, question)
        if outcome.final_replies == 0 or not _indicator_gone(slack, feishu, question):
            return False
    return True


def _indicator_gone(slack: FakeSlack, feishu: FakeFeishu, question: Question) -> bool:
    if question.platform == "slack":
        return not any(ch == question.channel and ts == question.ts for ch, ts, _ in slack.reactions)
    return not feishu.reactions.get(question.key)


async def wait_answered(slack: FakeSlack, feishu: FakeFeishu, questions: Sequence[Question], timeout_s: float,
                        replicas: Sequence[Replica] = ()) -> None:
    """Until every question is answered (bounded); the error names what is missing and shows the logs."""
    deadline = time.monotonic() + timeout_s
    while not finished(slack, feishu, questions):
        if time.monotonic() > deadline:
            missing = [q.job_id for q, o in zip(questions, outcomes(slack, feishu, questions), strict=True)
                       if o.final_replies == 0 or not _indicator_gone(slack, feishu, q)]
            logs = "\n".join(f"--- {r.instance_id}\n{r.log_tail(2000)}" for r in replicas)
            raise AssertionError(f"{len(missing)} questions unanswered after {timeout_s} s: {missing[:10]}\n{logs}")
        await asyncio.sleep(0.1)


# the journal and takeovers -------------------------------------------------------------------------
class JournalView:
    """Reads the shared job journal (the replicas' Redis) through the store interface."""

    def __init__(self, redis_url: str, directory: Path) -> None:
        from bot.store.redis import RedisStore
        from bot.store.sqlite import SQLiteStore

        directory.mkdir(parents=True, exist_ok=True)
        self.store = RedisStore(redis_url, SQLiteStore(directory / "observer.db"))

    async def __aenter__(self) -> JournalView:
        await self.store.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.store.close()

    async def job(self, question: Question) -> Job | None:
        return await self.store.jobs.get(question.job_id)

    async def wait_for_job(self, question: Question, timeout_s: float) -> Job:
        """The question's job once a replica has journaled it (bounded)."""
        deadline = time.monotonic() + timeout_s
        while (job := await self.store.jobs.get(question.job_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{question.job_id} was not journaled within {timeout_s} s")
            await asyncio.sleep(0.05)
        return job

    async def wait_for_reply_state(self, question: Question, timeout_s: float) -> Job:
        """The question's job once its owner has journaled where its reply lives (bounded)."""
        deadline = time.monotonic() + timeout_s
        while (job := await self.store.jobs.get(question.job_id)) is None or not job.reply_state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{question.job_id} has no journaled reply state after {timeout_s} s")
            await asyncio.sleep(0.05)
        return job

    async def jobs(self, questions: Iterable[Question]) -> dict[str, Job | None]:
        return {q.job_id: await self.store.jobs.get(q.job_id) for q in questions}

    async def owned_unfinished(self, owner: str, questions: Iterable[Question]) -> list[Question]:
        """The questions whose job is unfinished and leased to ``owner`` (orphans once ``owner`` is dead)."""
        found = []
        for question in questions:
            job = await self.store.jobs.get(question.job_id)
            if job is not None and not job.state.finished and job.owner == owner:
                found.append(question)
        return found


@dataclass
class Takeover:
    """One orphaned question: when the survivor claimed it in the journal and first showed it in the chat."""

    question: Question
    placeholder: str | None  # the dead replica's placeholder (Slack ts / Feishu card id), if it had posted one
    claimed_at: float | None = None
    new_owner: str = ""
    first_action_at: float | None = None
    placeholders_after: int = 0

    def seconds(self, killed_at: float) -> float | None:
        return None if self.first_action_at is None else self.first_action_at - killed_at

    def record(self, killed_at: float) -> dict[str, Any]:
        """For the JSON: the job, and the seconds from the kill to the claim and to the first visible action."""
        claim = None if self.claimed_at is None else round(self.claimed_at - killed_at, 3)
        action = self.seconds(killed_at)
        return {"job_id": self.question.job_id, "new_owner": self.new_owner, "claim_s": claim,
                "takeover_s": None if action is None else round(action, 3)}


def slack_placeholder(fake: FakeSlack, question: Question) -> str | None:
    messages = fake.bot_messages(question.channel, question.ts)
    return str(messages[0]["ts"]) if messages else None


def feishu_card(fake: FakeFeishu, question: Question) -> str | None:
    for reply in fake.replies_to(question.key):
        card = fake.card_of(reply)
        if card is not None:
            return card.card_id
    return None


def placeholder_of(slack: FakeSlack, feishu: FakeFeishu, question: Question) -> str | None:
    return slack_placeholder(slack, question) if question.platform == "slack" else feishu_card(feishu, question)


def first_action_after(slack: FakeSlack, feishu: FakeFeishu, takeover: Takeover, since: float) -> float | None:
    """When a replica first touched the question's reply after ``since``: an edit of the placeholder, or a new
    placeholder/card where the dead replica had none."""
    question = takeover.question
    if question.platform == "slack":
        if takeover.placeholder is not None:
            times = [c.at for c in slack.calls("chat.update") if c.args.get("ts") == takeover.placeholder]
        else:
            times = [c.at for c in slack.calls("chat.postMessage") if c.args.get("thread_ts") == question.ts]
    elif takeover.placeholder is not None:
        card_path = f"^/open-apis/cardkit/v1/cards/{takeover.placeholder}/"
        times = [c.at for c in feishu.calls if c.method in ("PUT", "PATCH") and re.search(card_path, c.path)]
    else:
        times = [c.at for c in feishu.calls_to("POST", f"^/open-apis/im/v1/messages/{question.key}/reply$")]
    later = [t for t in times if t >= since]
    return min(later) if later else None


async def watch_takeovers(journal: JournalView, slack: FakeSlack, feishu: FakeFeishu, takeovers: Sequence[Takeover],
                          dead_owner: str, timeout_s: float, poll_s: float = 0.05) -> None:
    """Poll the journal until each orphan has a new owner and the survivor has touched its reply (bounded).

    The survivor's first action is the first placeholder edit after the journal showed the new owner, so nothing
    the dead replica sent can count.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(takeovers)
    while pending and time.monotonic() < deadline:
        for takeover in list(pending):
            if takeover.claimed_at is None:
                job = await journal.job(takeover.question)
                if job is not None and (job.owner != dead_owner or job.state.finished):
                    takeover.claimed_at, takeover.new_owner = time.monotonic(), job.owner
            if takeover.claimed_at is not None:
                takeover.first_action_at = first_action_after(slack, feishu, takeover, takeover.claimed_at - poll_s)
                if takeover.first_action_at is not None:
                    pending.remove(takeover)
        await asyncio.sleep(poll_s)


def count_placeholders(slack: FakeSlack, feishu: FakeFeishu, question: Question) -> int:
    """Placeholders (Slack messages in the thread, Feishu reply messages) the question got in all."""
    if question.platform == "slack":
        return len(slack.bot_messages(question.channel, question.ts))
    return len(feishu.replies_to(question.key))


def journal_states(jobs: Mapping[str, Job | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs.values():
        state = "missing" if job is None else str(job.state)
        counts[state] = counts.get(state, 0) + 1
    return counts




# the benchmark -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplicasConfig:
    events: int = 300
    kill_after: int | None = None
    """Index of the question after which one replica is killed (default: half-way)."""
    rate_per_s: float = 4.0
    duplicate_share: float = 0.1
    max_new_tokens: int = 256
    """Long enough that answers are in flight when the kill comes (each replica holds several)."""
    lease_s: float = 2.0
    model: str | None = None
    seed: int = 7
    timeout_s: float = 540.0

    @property
    def kill_index(self) -> int:
        return self.events // 2 if self.kill_after is None else min(max(self.kill_after, 0), self.events - 1)


@dataclass
class Run:
    """Everything a run saw, raw."""

    questions: list[Question] = field(default_factory=list)
    takeovers: list[Takeover] = field(default_factory=list)
    victim: str = ""
    survivor: str = ""
    killed_at: float | None = None
    victim_unfinished_at_kill: int = 0
    started_at: float = 0.0
    replicas_up_at: float = 0.0
    drive_started_at: float = 0.0
    drive_ended_at: float = 0.0
    settled_at: float | None = None
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)


async def _unfinished_by_owner(journal: JournalView, questions: Sequence[Question]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in (await journal.jobs(questions)).values():
        if job is not None and not job.state.finished:
            counts[job.owner] = counts.get(job.owner, 0) + 1
    return counts


async def _drive(config: ReplicasConfig, slack: FakeSlack, feishu: FakeFeishu, journal: JournalView,
                 replicas: Sequence[Replica], run: Run, deadline: float) -> None:
    rng = random.Random(config.seed)
    watcher: asyncio.Task[None] | None = None
    run.drive_started_at = time.monotonic()
    for index in range(config.events):
        await asyncio.sleep(max(0.0, run.drive_started_at + index / config.rate_per_s - time.monotonic()))
        if time.monotonic() > deadline:
            run.errors.append(f"stopped sending after {index} questions: past the deadline")
            break
        duplicate = rng.random() < config.duplicate_share
        if rng.random() < 0.5:
            pair = duplicate and rng.random() < 0.5  # half of Slack's repeats are message + app_mention pairs
            question = await ask_slack(
                slack, f"question {index}: what does this screen say?", channel=f"C0TEAM{index % 8}",
                user=f"U0USER{index % 25:02d}", duplicate=duplicate and not pair, mention_pair=pair, rng=rng,
            )
        else:
            question = await ask_feishu(feishu, f"问题 {index}: 这个错误是什么意思?", user=f"ou_user{index % 25:02d}",
                                        duplicate=duplicate, rng=rng)
        run.questions.append(question)
        if index == config.kill_index:
            watcher = await _kill_one(slack, feishu, journal, replicas, run, deadline)
    run.drive_ended_at = time.monotonic()
    if watcher is not None:
        await watcher


async def _kill_one(slack: FakeSlack, feishu: FakeFeishu, journal: JournalView,
                    replicas: Sequence[Replica], run: Run, deadline: float) -> asyncio.Task[None]:
    """SIGKILL the replica with the most unfinished jobs; watch the survivor take them over (in the background)."""
    busy = await _unfinished_by_owner(journal, run.questions)
    victim = max(replicas, key=lambda r: busy.get(r.instance_id, 0))
    survivor = next(r for r in replicas if r is not victim)
    run.victim, run.survivor = victim.instance_id, survivor.instance_id
    run.killed_at = victim.kill()
    # Once it is reaped nothing more of it reaches the fakes: its placeholders are what the survivor must continue.
    orphans = await journal.owned_unfinished(victim.instance_id, run.questions)
    run.victim_unfinished_at_kill = len(orphans)
    run.takeovers = [Takeover(q, placeholder_of(slack, feishu, q)) for q in orphans]
    logger.info("killed %s with %d unfinished jobs", victim.instance_id, len(orphans))
    watch_s = max(1.0, deadline - time.monotonic())
    return asyncio.get_running_loop().create_task(
        watch_takeovers(journal, slack, feishu, run.takeovers, victim.instance_id, watch_s)
    )


async def _settle(slack: FakeSlack, feishu: FakeFeishu, run: Run, deadline: float) -> None:
    while not finished(slack, feishu, run.questions):
        if time.monotonic() > deadline:
            run.timed_out = True
            return
        await asyncio.sleep(0.2)
    run.settled_at = time.monotonic()


async def run_benchmark(config: ReplicasConfig) -> dict[str, Any]:
    binary = redis_server_binary()
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    run = Run(started_at=time.monotonic())
    deadline = run.started_at + config.timeout_s
    with tempfile.TemporaryDirectory(prefix="peekbot-replicas-") as tmp:
        root = Path(tmp)
        model_dir = Path(config.model) if config.model else build_tiny_model(root / "tiny-model")
        replicas: list[Replica] = []
        with RedisServer(root / "redis", binary=binary) as redis:
            async with (
                FakeSlack(ack_timeout_s=2.0, spread=True, seed=config.seed) as slack,
                FakeFeishu(ack_timeout_s=2.0, cluster=True, seed=config.seed) as feishu,
                JournalView(redis.url, root / "observer") as journal,
            ):
                try:
                    for name in ("replica-a", "replica-b"):
                        env = replica_env(name, data_dir=root / name, model_dir=model_dir, redis_url=redis.url,
                                          slack=slack, feishu=feishu, max_new_tokens=config.max_new_tokens,
                                          lease_s=config.lease_s)
                        replicas.append(Replica(name, env, root / f"{name}.log"))
                    await wait_for_replicas(slack, feishu, 2, min(180.0, config.timeout_s / 2), replicas)
                    run.replicas_up_at = time.monotonic()
                    await _drive(config, slack, feishu, journal, replicas, run, deadline - 30.0)
                    await _settle(slack, feishu, run, deadline - 10.0)
                    await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))  # late repeats show now
                    result = await _result(config, slack, feishu, journal, run)
                    result["replica_logs_tail"] = {
                        r.instance_id: r.log_tail(1500) for r in replicas
                    } if result["answers"]["lost"] or result["answers"]["duplicates"] else {}
                    return result
                finally:
                    for replica in replicas:
                        await replica.terminate(15.0)
                        replica.close()


async def _result(config: ReplicasConfig, slack: FakeSlack, feishu: FakeFeishu, journal: JournalView,
                  run: Run) -> dict[str, Any]:
    answers = count_answers(outcomes(slack, feishu, run.questions))
    jobs = await journal.jobs(run.questions)
    owners: dict[str, int] = {}
    for job in jobs.values():
        if job is not None and job.state is JobState.ANSWERED:
            owners[job.owner] = owners.get(job.owner, 0) + 1
    killed_at = run.killed_at
    takeover_s = [s for t in run.takeovers if killed_at is not None and (s := t.seconds(killed_at)) is not None]
    claim_s = [t.claimed_at - killed_at for t in run.takeovers if killed_at is not None and t.claimed_at is not None]
    second_placeholders = sum(1 for t in run.takeovers if count_placeholders(slack, feishu, t.question) > 1)
    kept_placeholder = sum(
        1 for t in run.takeovers
        if t.placeholder is not None and placeholder_of(slack, feishu, t.question) == t.placeholder
    )
    end = run.settled_at or time.monotonic()
    deliveries = sum(q.deliveries for q in run.questions)
    result: dict[str, Any] = {
        "benchmark": "replicas",
        "parameters": {
            "events": config.events, "kill_after": config.kill_index, "rate_per_s": config.rate_per_s,
            "duplicate_share": config.duplicate_share, "max_new_tokens": config.max_new_tokens,
            "lease_s": config.lease_s, "seed": config.seed, "timeout_s": config.timeout_s,
        },
        "machine": machine(),
        "questions": len(run.questions),
        "deliveries": deliveries,
        "repeated_deliveries": deliveries - len(run.questions),
        "by_platform": {p: sum(1 for q in run.questions if q.platform == p) for p in ("slack", "feishu")},
        "answers": answers,
        "answered_by": owners,
        "journal_states": journal_states(jobs),
        "kill": {
            "victim": run.victim,
            "survivor": run.survivor,
            "at_s": None if killed_at is None else round(killed_at - run.drive_started_at, 3),
            "orphaned_jobs": run.victim_unfinished_at_kill,
            "orphans_with_placeholder": sum(1 for t in run.takeovers if t.placeholder is not None),
            "taken_over": sum(1 for t in run.takeovers if t.new_owner and t.new_owner != run.victim),
            "placeholder_kept": kept_placeholder,
            "second_placeholders": second_placeholders,
            "takeover_s": distribution(takeover_s, digits=3),
            "claim_s": distribution(claim_s, digits=3),
            "orphans": [t.record(killed_at) for t in run.takeovers if killed_at is not None],
        },
        "startup_s": round(run.replicas_up_at - run.started_at, 2),
        "send_s": round(run.drive_ended_at - run.drive_started_at, 2),
        "wall_s": round(end - run.drive_started_at, 2),
        "timed_out": run.timed_out,
        "errors": run.errors,
    }
    targets = [
        at_most("duplicate answers", answers["duplicates"], 0, ""),
        at_most("lost questions", answers["lost"], 0, ""),
        at_most("orphans not taken over", run.victim_unfinished_at_kill - result["kill"]["taken_over"], 0, ""),
        at_most("second placeholders after takeover", second_placeholders, 0, ""),
    ]
    result["targets"] = targets_json(targets)
    return result


def format_table(result: Mapping[str, Any]) -> str:
    answers, kill = result["answers"], result["kill"]
    params = result["parameters"]
    report = Report(f"Two replicas, one Redis: {result['questions']} questions, one replica killed (SIGKILL)")
    report.add_text("questions slack / feishu", f"{result['by_platform']['slack']} / {result['by_platform']['feishu']}")
    report.add_text("deliveries (repeats to another connection)",
                    f"{result['deliveries']} ({result['repeated_deliveries']})")
    report.add_text("answered / error replies", f"{answers['answered']} / {answers['error_replies']}")
    report.add_text("duplicates / lost", f"{answers['duplicates']} / {answers['lost']}")
    report.add_text("answered by", ", ".join(f"{k}: {v}" for k, v in sorted(result["answered_by"].items())) or "–")
    report.add_text("journal states", ", ".join(f"{k}: {v}" for k, v in sorted(result["journal_states"].items())))
    report.add_text("killed", f"{kill['victim'] or '–'} after question {params['kill_after']} "
                              f"({kill['at_s']} s into the run), lease {params['lease_s']:g} s")
    report.add_text("orphaned jobs / with a placeholder / taken over",
                    f"{kill['orphaned_jobs']} / {kill['orphans_with_placeholder']} / {kill['taken_over']}")
    report.add_text("placeholders continued / second placeholders",
                    f"{kill['placeholder_kept']} / {kill['second_placeholders']}")
    takeover, claim = kill["takeover_s"], kill["claim_s"]
    report.add("takeover (kill → survivor's first edit) median / max", takeover["median"], takeover["max"], unit="s")
    report.add("journal claim (kill → survivor owns the job) median / max", claim["median"], claim["max"], unit="s")
    report.add_text("start-up / sending / total wall time",
                    f"{result['startup_s']} s / {result['send_s']} s / {result['wall_s']} s"
                    + ("  (TIMED OUT)" if result["timed_out"] else ""))
    report.targets = [Target(**t) for t in result["targets"]]
    return report.render()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ReplicasConfig()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=defaults.events, help="questions to send (default 300)")
    parser.add_argument("--kill-after", type=int, default=None,
                        help="kill one replica right after this question (0-based; default half-way)")
    parser.add_argument("--rate", type=float, default=defaults.rate_per_s, help="questions per second (default 4)")
    parser.add_argument("--duplicates", type=float, default=defaults.duplicate_share,
                        help="share of questions delivered twice (default 0.1)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--lease", type=float, default=defaults.lease_s, help="job lease in seconds (default 2)")
    parser.add_argument("--model", default=None, help="model directory (default: a tiny random model)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="global time limit in seconds")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.events < 1 or args.rate <= 0 or args.timeout <= 60 or args.lease <= 0:
        parser.error("--events, --rate and --lease must be positive, --timeout above 60 s")
    if not 0 <= args.duplicates <= 1:
        parser.error("--duplicates is a share between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = ReplicasConfig(
        events=args.events, kill_after=args.kill_after, rate_per_s=args.rate, duplicate_share=args.duplicates,
        max_new_tokens=args.max_new_tokens, lease_s=args.lease, model=args.model, seed=args.seed,
        timeout_s=args.timeout,
    )
    result = asyncio.run(asyncio.wait_for(run_benchmark(config), config.timeout_s + 60.0))
    return emit(result, format_table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
