"""Two replicas, one Redis: every event is answered exactly once, also when one replica is killed mid-answer.

Two real `peekbot run` processes (own data directory and instance id each, the same ``redis-server``) hold one
Socket Mode connection to the loopback fake Slack and one long connection to the fake Feishu each. The fake
Slack spreads envelopes over the open connections at random and the fake Feishu runs in cluster mode, so
each replica gets some of the events; duplicate deliveries are sent to the *other* connection on purpose.
What counts is what a person sees on the fakes: one answer per question, no second placeholder.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the Redis client is not installed (pip install -e '.[dev]')")

from benchmarks.faults_common import count_answers
from benchmarks.replicas import (
    JournalView,
    Question,
    Replica,
    Takeover,
    ask_feishu,
    ask_slack,
    count_placeholders,
    feishu_card,
    outcomes,
    placeholder_of,
    replica_env,
    slack_placeholder,
    wait_answered,
    wait_for_replicas,
    watch_takeovers,
)
from bot.store.base import JobState
from sandbox.slack_server import FakeSlack
from tests.support.fake_feishu import FakeFeishu
from tests.support.redis_server import RedisServer, require_redis_server

pytestmark = pytest.mark.timeout(170)
logger = logging.getLogger(__name__)

LEASE_S = 2.0
START_TIMEOUT_S = 90.0


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server per test: both fakes number their messages from 1, so tests must not share keys."""
    binary = require_redis_server()
    with RedisServer(tmp_path / "redis", binary=binary) as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout_s=2.0, spread=True, seed=7) as server:
        yield server


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(ack_timeout_s=2.0, cluster=True, seed=7) as server:
        yield server


ReplicaFactory = Callable[[int], list[Replica]]


@pytest.fixture
def start_replicas(
    tmp_path: Path, tiny_qwen3_dir: Path, redis: RedisServer, slack: FakeSlack, feishu: FakeFeishu
) -> Iterator[ReplicaFactory]:
    started: list[Replica] = []

    def start(max_new_tokens: int) -> list[Replica]:
        replicas = []
        for name in ("replica-a", "replica-b"):
            env = replica_env(
                name,
                data_dir=tmp_path / name,
                model_dir=tiny_qwen3_dir,
                redis_url=redis.url,
                slack=slack,
                feishu=feishu,
                max_new_tokens=max_new_tokens,
                lease_s=LEASE_S,
            )
            replicas.append(Replica(name, env, tmp_path / f"{name}.log"))
        started.extend(replicas)
        return replicas

    yield start
    for replica in started:
        replica.close()


@pytest.fixture
async def journal(redis: RedisServer, tmp_path: Path) -> AsyncIterator[JournalView]:
    async with JournalView(redis.url, tmp_path / "observer") as view:
        yield view


async def test_two_replicas_answer_every_event_exactly_once(
    start_replicas: ReplicaFactory, slack: FakeSlack, feishu: FakeFeishu, journal: JournalView
) -> None:
    replicas = start_replicas(8)
    await wait_for_replicas(slack, feishu, 2, START_TIMEOUT_S, replicas)
    rng = random.Random(11)
    questions: list[Question] = []
    for i in range(20):
        questions.append(await ask_slack(
            slack, f"question {i}: what does this error mean?", channel=f"C0TEAM{i % 4}", user=f"U0USER{i % 5}",
            duplicate=i % 5 == 1, mention_pair=i % 5 == 3, rng=rng,
        ))
        questions.append(await ask_feishu(feishu, f"问题 {i}: 这是什么?", user=f"ou_user{i % 5}",
                                          duplicate=i % 5 == 2, rng=rng))
    await wait_answered(slack, feishu, questions, 120, replicas)
    await asyncio.sleep(1.5)  # a late second answer would show up now

    counts = count_answers(outcomes(slack, feishu, questions))
    assert counts["lost"] == 0, counts["lost_ids"]
    assert counts["duplicates"] == 0, counts["duplicate_ids"]
    assert counts["answered"] == len(questions), counts
    for question in questions:
        assert count_placeholders(slack, feishu, question) == 1, question.job_id

    # The duplicates did reach both replicas: every repeated Slack event went to two connections.
    for question in questions:
        if question.platform == "slack" and question.deliveries > 1:
            connections = {d.connection for e in question.event_ids for d in slack.deliveries_of(e)}
            assert len(connections) == 2, (question.job_id, connections)
    jobs = await journal.jobs(questions)
    assert all(job is not None and job.state is JobState.ANSWERED for job in jobs.values()), jobs
    owners = {job.owner for job in jobs.values() if job is not None}
    assert owners == {"replica-a", "replica-b"}, "both replicas should have answered some questions"
    assert all(replica.alive for replica in replicas)


def _streaming(slack: FakeSlack, feishu: FakeFeishu, question: Question) -> bool:
    """The reply shows part of the answer (more than the placeholder)."""
    if question.platform == "slack":
        texts = [str(m.get("text", "")) for m in slack.bot_messages(question.channel, question.ts)]
    else:
        texts = feishu.reply_texts(question.key)
    return any(len(text) > 20 and "looking at it" not in text.lower() for text in texts)


async def test_killed_replica_is_taken_over_and_each_question_answered_once(
    start_replicas: ReplicaFactory, slack: FakeSlack, feishu: FakeFeishu, journal: JournalView
) -> None:
    replicas = start_replicas(600)  # long answers, so that the kill lands mid-answer
    await wait_for_replicas(slack, feishu, 2, START_TIMEOUT_S, replicas)
    # One question of each platform on each connection: each replica answers one Slack and one Feishu question.
    questions: list[Question] = []
    for number in slack.open_connection_numbers:
        questions.append(await ask_slack(slack, "describe everything in great detail", channel="C0OPS",
                                         user=f"U0ASK{number}", connection=number))
    for number in feishu.live_connection_numbers:
        questions.append(await ask_feishu(feishu, "请详细描述一切", user=f"ou_ask{number}", connection=number))
    first_job = await journal.wait_for_job(questions[0], 30)
    victim = next(r for r in replicas if r.instance_id == first_job.owner)
    survivor = next(r for r in replicas if r is not victim)
    # Kill once the victim streams one answer and has shown a placeholder for its other question (streaming
    # too, or queued behind the first).
    mine = [q for q in questions if (await journal.wait_for_job(q, 30)).owner == victim.instance_id]
    await slack.wait_until(
        lambda: any(_streaming(slack, feishu, q) for q in mine)
        and all(placeholder_of(slack, feishu, q) is not None for q in mine),
        90,
        "a partial answer from the victim",
    )
    # ... and has journaled where those placeholders are (posting one and journaling it are two steps).
    for question in mine:
        await journal.wait_for_reply_state(question, 30)
    orphans = await journal.owned_unfinished(victim.instance_id, questions)
    assert {q.platform for q in orphans} == {"slack", "feishu"}, (
        "the victim should be busy with one question of each platform; the test proves nothing otherwise"
    )
    takeovers = [Takeover(q, placeholder_of(slack, feishu, q)) for q in orphans]
    assert all(t.placeholder is not None for t in takeovers)
    killed_at = victim.kill()

    await watch_takeovers(journal, slack, feishu, takeovers, victim.instance_id, timeout_s=30)
    for takeover in takeovers:
        assert takeover.new_owner == survivor.instance_id, takeover
        seconds = takeover.seconds(killed_at)
        assert seconds is not None, f"the survivor never edited the placeholder of {takeover.question.job_id}"
        logger.info("takeover of %s: %.2f s after the kill", takeover.question.job_id, seconds)

    after = await ask_slack(slack, "are you still there?", channel="C0OPS", user="U0LATE")
    await wait_answered(slack, feishu, [*questions, after], 120, replicas)
    await asyncio.sleep(1.0)

    counts = count_answers(outcomes(slack, feishu, [*questions, after]))
    assert counts["lost"] == 0 and counts["duplicates"] == 0, counts
    assert counts["answered"] == len(questions) + 1, counts
    for takeover in takeovers:
        question = takeover.question
        assert count_placeholders(slack, feishu, question) == 1, f"a second placeholder for {question.job_id}"
        now = slack_placeholder(slack, question) if question.platform == "slack" else feishu_card(feishu, question)
        assert now == takeover.placeholder, "the survivor should finish the dead replica's placeholder"
    jobs = await journal.jobs([*questions, after])
    assert all(job is not None and job.state is JobState.ANSWERED for job in jobs.values()), jobs
    assert {jobs[q.job_id].owner for q in orphans} == {survivor.instance_id}  # type: ignore[union-attr]
    assert survivor.alive
