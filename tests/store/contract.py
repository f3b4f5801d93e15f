"""Behaviour every ``bot.store.base.Store`` must have.

Plain async test functions taking a fixture named ``store`` (an opened, empty store). A test module defines that
fixture and imports these with ``from tests.store.contract import *  # noqa: F403``. Timing-dependent checks use
short real TTLs and leases (a few hundred milliseconds), so they hold for stores that keep time themselves.
"""

from __future__ import annotations

import asyncio
import time

from bot.store.base import DocumentInfo, Job, JobState, Rating, Store
from bot.store.codec import decode_message, encode_file, encode_message
from bot.types import ChatType, ConversationKey, FileRef, ImageSegment, IncomingMessage, TextSegment, User

__all__ = [
    "test_a_stalled_owner_can_neither_finish_nor_overwrite_a_job_taken_over",
    "test_accept_a_duplicate_id_is_refused_and_keeps_the_first",
    "test_accept_mark_and_get_keep_every_field",
    "test_cache_returns_answers_until_their_ttl",
    "test_claim_after_ttl_is_new_again",
    "test_claim_twice_is_a_duplicate",
    "test_concurrent_take_over_never_hands_a_job_twice",
    "test_concurrent_token_takes_never_exceed_the_burst",
    "test_controls_hold_values_until_changed_or_expired",
    "test_expire_jobs_deletes_finished_jobs_and_keeps_unfinished",
    "test_files_are_idempotent_per_hash_and_newest_win_the_limit",
    "test_include_live_takes_every_unfinished_job",
    "test_instructions_are_kept_per_channel_until_cleared",
    "test_pending_counts_a_users_unfinished_jobs",
    "test_ratings_expire_by_age",
    "test_ratings_keep_one_per_person_per_answer",
    "test_renew_answers_which_jobs_are_still_ours",
    "test_renew_keeps_a_job_from_being_taken",
    "test_reset_clears_one_conversation_only",
    "test_take_over_returns_only_expired_unfinished_jobs",
    "test_token_bucket_refuses_past_the_burst_and_refills",
    "test_turns_come_oldest_first_within_the_limit",
]

SHORT_S = 0.2
"""A TTL or lease that runs out during the test."""
PAST_SHORT_S = 0.45
"""How long to sleep so a ``SHORT_S`` TTL or lease has surely run out."""
LONG_S = 60.0

CONVERSATION = str(ConversationKey("slack", "T1", "C1", "1700000000.000100"))
OTHER_CONVERSATION = str(ConversationKey("feishu", "tenant", "oc_9"))


def _message(event_id: str = "Ev1", text: str = "what does this error mean?") -> IncomingMessage:
    image = FileRef("slack", "F1", "error.png", "image/png", 2048, {"url": "https://files.example/F1"})
    return IncomingMessage(
        event_id=event_id,
        message_id=f"C1:{event_id}",
        conversation=ConversationKey("slack", "T1", "C1", "1700000000.000100"),
        user=User("slack", "U1", "Ada"),
        chat_type=ChatType.GROUP,
        segments=(TextSegment(text), ImageSegment(image)),
        mentions_bot=True,
        received_at=1_700_000_000.5,
    )


def _job(job_id: str, *, user: str = "slack:U1") -> Job:
    return Job(
        job_id=job_id,
        platform="slack",
        conversation=CONVERSATION,
        user=user,
        message=encode_message(_message(job_id)),
    )


async def test_claim_twice_is_a_duplicate(store: Store) -> None:
    assert await store.dedupe.claim("slack:event:Ev1", LONG_S) is True
    assert await store.dedupe.claim("slack:event:Ev1", LONG_S) is False
    assert await store.dedupe.claim("slack:event:Ev2", LONG_S) is True


async def test_claim_after_ttl_is_new_again(store: Store) -> None:
    assert await store.dedupe.claim("feishu:msg:om_1", SHORT_S)
    assert not await store.dedupe.claim("feishu:msg:om_1", SHORT_S)
    await asyncio.sleep(PAST_SHORT_S)
    assert await store.dedupe.claim("feishu:msg:om_1", LONG_S)
    assert not await store.dedupe.claim("feishu:msg:om_1", LONG_S)


async def test_accept_mark_and_get_keep_every_field(store: Store) -> None:
    before = time.time()
    assert await store.jobs.accept(_job("job-1"), "replica-a", LONG_S)

    job = await store.jobs.get("job-1")
    assert job is not None
    assert (job.platform, job.conversation, job.user) == ("slack", CONVERSATION, "slack:U1")
    assert decode_message(job.message) == _message("job-1")
    assert job.state is JobState.ACCEPTED
    assert job.owner == "replica-a"
    assert job.lease_until >= before + LONG_S - 1
    assert job.created_at >= before - 1
    assert [j.job_id for j in await store.jobs.unfinished()] == ["job-1"]

    await store.jobs.mark("job-1", JobState.RUNNING, reply_state={"channel": "C1", "ts": "1700000001.000200"})
    job = await store.jobs.get("job-1")
    assert job is not None
    assert job.state is JobState.RUNNING
    assert job.reply_state == {"channel": "C1", "ts": "1700000001.000200"}

    await store.jobs.mark("job-1", JobState.FAILED, error="engine stopped")
    job = await store.jobs.get("job-1")
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.error == "engine stopped"
    assert job.reply_state == {"channel": "C1", "ts": "1700000001.000200"}, "mark without reply_state keeps it"
    assert await store.jobs.unfinished() == []
    assert await store.jobs.get("no-such-job") is None


async def test_accept_a_duplicate_id_is_refused_and_keeps_the_first(store: Store) -> None:
    assert await store.jobs.accept(_job("job-1", user="slack:U1"), "replica-a", LONG_S)
    assert not await store.jobs.accept(_job("job-1", user="slack:U2"), "replica-b", LONG_S)
    job = await store.jobs.get("job-1")
    assert job is not None
    assert (job.user, job.owner) == ("slack:U1", "replica-a")


async def test_take_over_returns_only_expired_unfinished_jobs(store: Store) -> None:
    assert await store.jobs.accept(_job("expired"), "dead-replica", SHORT_S)
    assert await store.jobs.accept(_job("live"), "live-replica", LONG_S)
    assert await store.jobs.accept(_job("done"), "dead-replica", SHORT_S)
    await store.jobs.mark("done", JobState.ANSWERED)
    assert await store.jobs.take_over("new-replica", LONG_S) == [], "nothing has expired yet"

    await asyncio.sleep(PAST_SHORT_S)
    taken = await store.jobs.take_over("new-replica", LONG_S)

    assert [job.job_id for job in taken] == ["expired"]
    assert taken[0].owner == "new-replica"
    assert taken[0].attempts == 1
    assert decode_message(taken[0].message) == _message("expired")
    stored = await store.jobs.get("expired")
    assert stored is not None
    assert (stored.owner, stored.attempts) == ("new-replica", 1)
    assert await store.jobs.take_over("third-replica", LONG_S) == [], "a fresh lease protects it again"


async def test_concurrent_take_over_never_hands_a_job_twice(store: Store) -> None:
    ids = [f"job-{i:02d}" for i in range(12)]
    for job_id in ids:
        assert await store.jobs.accept(_job(job_id), "dead-replica", SHORT_S)
    await asyncio.sleep(PAST_SHORT_S)

    first, second = await asyncio.gather(
        store.jobs.take_over("replica-a", LONG_S), store.jobs.take_over("replica-b", LONG_S)
    )

    first_ids = {job.job_id for job in first}
    second_ids = {job.job_id for job in second}
    assert not first_ids & second_ids
    assert first_ids | second_ids == set(ids)
    assert len(first) + len(second) == len(ids)
    for job in first + second:
        assert job.attempts == 1


async def test_renew_keeps_a_job_from_being_taken(store: Store) -> None:
    assert await store.jobs.accept(_job("renewed"), "replica-a", SHORT_S)
    assert await store.jobs.accept(_job("not-renewed"), "replica-a", SHORT_S)
    assert await store.jobs.accept(_job("someone-elses"), "replica-b", SHORT_S)

    await store.jobs.renew("replica-a", ["renewed", "someone-elses"], LONG_S)
    await asyncio.sleep(PAST_SHORT_S)
    taken = await store.jobs.take_over("replica-c", LONG_S)

    assert sorted(job.job_id for job in taken) == ["not-renewed", "someone-elses"]


async def test_include_live_takes_every_unfinished_job(store: Store) -> None:
    assert await store.jobs.accept(_job("live-1"), "previous-run", LONG_S)
    assert await store.jobs.accept(_job("live-2"), "previous-run", LONG_S)
    assert await store.jobs.accept(_job("answered"), "previous-run", LONG_S)
    await store.jobs.mark("answered", JobState.ANSWERED)
    assert await store.jobs.take_over("this-run", LONG_S) == []

    taken = await store.jobs.take_over("this-run", LONG_S, include_live=True)

    assert sorted(job.job_id for job in taken) == ["live-1", "live-2"]
    assert all(job.owner == "this-run" and job.attempts == 1 for job in taken)


async def test_expire_jobs_deletes_finished_jobs_and_keeps_unfinished(store: Store) -> None:
    for job_id in ("answered", "failed", "running", "accepted"):
        assert await store.jobs.accept(_job(job_id), "replica-a", LONG_S)
    await store.jobs.mark("answered", JobState.ANSWERED)
    await store.jobs.mark("failed", JobState.FAILED, error="boom")
    await store.jobs.mark("running", JobState.RUNNING)
    assert await store.jobs.expire_jobs(LONG_S) == 0, "nothing is that old"
    await asyncio.sleep(PAST_SHORT_S)

    assert await store.jobs.expire_jobs(SHORT_S) == 2

    assert await store.jobs.get("answered") is None
    assert await store.jobs.get("failed") is None
    assert sorted(job.job_id for job in await store.jobs.unfinished()) == ["accepted", "running"]


async def test_turns_come_oldest_first_within_the_limit(store: Store) -> None:
    for i in range(5):
        await store.conversations.add_turn(CONVERSATION, "user" if i % 2 == 0 else "assistant", f"turn {i}")
    await store.conversations.add_turn(OTHER_CONVERSATION, "user", "elsewhere")

    last_three = await store.conversations.turns(CONVERSATION, 3)
    assert [(t.role, t.text) for t in last_three] == [("user", "turn 2"), ("assistant", "turn 3"), ("user", "turn 4")]
    assert [t.text for t in await store.conversations.turns(CONVERSATION, 50)] == [f"turn {i}" for i in range(5)]
    assert [t.text for t in await store.conversations.turns(OTHER_CONVERSATION, 50)] == ["elsewhere"]
    assert await store.conversations.turns("slack:T1:C-never", 5) == []


async def test_files_are_idempotent_per_hash_and_newest_win_the_limit(store: Store) -> None:
    refs = [encode_file(FileRef("slack", f"F{i}", f"shot-{i}.png", "image/png")) for i in range(4)]
    await store.conversations.add_file(CONVERSATION, refs[0], "hash-0")
    await store.conversations.add_file(CONVERSATION, refs[0], "hash-0")
    await store.conversations.add_file(CONVERSATION, refs[1], "hash-0")  # same content posted again
    assert [(f.file_ref, f.content_hash) for f in await store.conversations.files(CONVERSATION, 10)] == [
        (refs[0], "hash-0")
    ]

    for i in (1, 2, 3):
        await store.conversations.add_file(CONVERSATION, refs[i], f"hash-{i}")
    newest = await store.conversations.files(CONVERSATION, 2)
    assert [f.content_hash for f in newest] == ["hash-2", "hash-3"]
    assert await store.conversations.files(OTHER_CONVERSATION, 10) == []


async def test_reset_clears_one_conversation_only(store: Store) -> None:
    for conversation in (CONVERSATION, OTHER_CONVERSATION):
        await store.conversations.add_turn(conversation, "user", "hello")
        await store.conversations.add_file(conversation, encode_file(FileRef("slack", "F1")), "hash-1")
        await store.cache.put_answer(conversation, "question-key", "cached answer", LONG_S)
        await store.documents.add_document(
            DocumentInfo(f"doc-{conversation}", conversation, "report.pdf", 3, encode_file(FileRef("slack", "F2")))
        )

    assert await store.conversations.reset(CONVERSATION) is True

    assert await store.conversations.turns(CONVERSATION, 10) == []
    assert await store.conversations.files(CONVERSATION, 10) == []
    assert await store.cache.get_answer(CONVERSATION, "question-key") is None
    assert await store.documents.documents(CONVERSATION) == []
    assert await store.conversations.reset(CONVERSATION) is False, "nothing left to forget"
    assert [t.text for t in await store.conversations.turns(OTHER_CONVERSATION, 10)] == ["hello"]
    assert len(await store.conversations.files(OTHER_CONVERSATION, 10)) == 1
    assert await store.cache.get_answer(OTHER_CONVERSATION, "question-key") == "cached answer"
    assert [d.document_id for d in await store.documents.documents(OTHER_CONVERSATION)] == [f"doc-{OTHER_CONVERSATION}"]


async def test_cache_returns_answers_until_their_ttl(store: Store) -> None:
    assert await store.cache.get_answer(CONVERSATION, "k1") is None
    await store.cache.put_answer(CONVERSATION, "k1", "short-lived", SHORT_S)
    await store.cache.put_answer(CONVERSATION, "k2", "long-lived", LONG_S)
    assert await store.cache.get_answer(CONVERSATION, "k1") == "short-lived"
    assert await store.cache.get_answer(OTHER_CONVERSATION, "k1") is None, "answers stay in their conversation"

    await asyncio.sleep(PAST_SHORT_S)

    assert await store.cache.get_answer(CONVERSATION, "k1") is None
    assert await store.cache.get_answer(CONVERSATION, "k2") == "long-lived"
    await store.cache.put_answer(CONVERSATION, "k2", "replaced", LONG_S)
    assert await store.cache.get_answer(CONVERSATION, "k2") == "replaced"


async def test_renew_answers_which_jobs_are_still_ours(store: Store) -> None:
    for job_id in ("ours", "finished", "expired"):
        assert await store.jobs.accept(_job(job_id), "replica-a", LONG_S)
    assert await store.jobs.accept(_job("theirs"), "replica-b", LONG_S)
    assert await store.jobs.mark("finished", JobState.ANSWERED, owner="replica-a")

    still_ours = await store.jobs.renew("replica-a", ["ours", "finished", "theirs", "no-such-job"], LONG_S)

    assert still_ours == {"ours"}
    assert await store.jobs.renew("replica-a", [], LONG_S) == set()


async def test_a_stalled_owner_can_neither_finish_nor_overwrite_a_job_taken_over(store: Store) -> None:
    """Replica A stalls past its lease; B takes the job over. A must learn it lost the job and change nothing."""
    assert await store.jobs.accept(_job("q1"), "replica-a", SHORT_S)
    assert await store.jobs.mark("q1", JobState.RUNNING, owner="replica-a", reply_state={"placeholder": "ts-1"})
    assert not await store.jobs.mark("q1", JobState.RUNNING, owner="replica-b"), "B does not own it yet"
    await asyncio.sleep(PAST_SHORT_S)  # A stalls: its lease runs out
    [taken] = await store.jobs.take_over("replica-b", LONG_S)
    assert (taken.owner, taken.reply_state) == ("replica-b", {"placeholder": "ts-1"})

    assert await store.jobs.renew("replica-a", ["q1"], LONG_S) == set()  # A wakes up: not ours any more
    assert not await store.jobs.mark("q1", JobState.RUNNING, owner="replica-a", reply_state={"placeholder": "A"})
    assert not await store.jobs.mark("q1", JobState.ANSWERED, owner="replica-a")
    job = await store.jobs.get("q1")
    assert job is not None
    assert (job.state, job.owner, job.reply_state) == (JobState.RUNNING, "replica-b", {"placeholder": "ts-1"})

    delivered = {"placeholder": "ts-1", "d": "1"}
    assert await store.jobs.mark("q1", JobState.RUNNING, owner="replica-b", reply_state=delivered)
    assert await store.jobs.mark("q1", JobState.ANSWERED, owner="replica-b")
    assert not await store.jobs.mark("q1", JobState.FAILED, owner="replica-b"), "a finished job is final"
    job = await store.jobs.get("q1")
    assert job is not None and job.state is JobState.ANSWERED and job.reply_state["d"] == "1"
    assert await store.jobs.unfinished() == []


async def test_pending_counts_a_users_unfinished_jobs(store: Store) -> None:
    for job_id in ("a1", "a2", "a3"):
        assert await store.jobs.accept(_job(job_id, user="slack:U1"), "replica-a", LONG_S)
    assert await store.jobs.accept(_job("b1", user="slack:U2"), "replica-b", LONG_S)
    await store.jobs.mark("a2", JobState.RUNNING)
    await store.jobs.mark("a3", JobState.ANSWERED)

    assert await store.jobs.pending_for("slack:U1") == 2
    assert await store.jobs.pending_for("slack:U2") == 1
    assert await store.jobs.pending_for("slack:U-nobody") == 0


async def test_controls_hold_values_until_changed_or_expired(store: Store) -> None:
    assert await store.controls.get("paused") is None
    await store.controls.put("paused", "1")
    assert await store.controls.get("paused") == "1"
    await store.controls.put("paused", "2")
    assert await store.controls.get("paused") == "2"
    await store.controls.put("paused", None)
    assert await store.controls.get("paused") is None
    await store.controls.put("notice", "soon", ttl_s=SHORT_S)
    assert await store.controls.get("notice") == "soon"
    await asyncio.sleep(PAST_SHORT_S)
    assert await store.controls.get("notice") is None


async def test_instructions_are_kept_per_channel_until_cleared(store: Store) -> None:
    channel, other = "slack:T1:C1", "feishu:tenant:oc_9"
    assert await store.instructions.get_instructions(channel) is None
    before = time.time()
    first = await store.instructions.set_instructions(channel, "Answer in Japanese.", "slack:U1")
    assert first.text == "Answer in Japanese." and first.set_by == "slack:U1" and first.set_at >= before - 1
    await store.instructions.set_instructions(channel, "这是支付团队。\nAnswer briefly.", "slack:U2")
    got = await store.instructions.get_instructions(channel)
    assert got is not None and (got.text, got.set_by) == ("这是支付团队。\nAnswer briefly.", "slack:U2")
    assert await store.instructions.get_instructions(other) is None, "every channel has its own"
    await store.conversations.add_turn(f"{channel}:1700000000.000100", "user", "hi")
    await store.conversations.reset(f"{channel}:1700000000.000100")
    assert await store.instructions.get_instructions(channel) is not None, "a thread's reset keeps them"
    assert await store.instructions.clear_instructions(channel) is True
    assert await store.instructions.get_instructions(channel) is None
    assert await store.instructions.clear_instructions(channel) is False


async def test_token_bucket_refuses_past_the_burst_and_refills(store: Store) -> None:
    rate = 1 / SHORT_S  # one token per SHORT_S
    assert [await store.controls.take("rate:slack:U1", rate, 2) for _ in range(2)] == [0.0, 0.0]
    wait = await store.controls.take("rate:slack:U1", rate, 2)
    assert 0 < wait <= SHORT_S + 0.01
    assert await store.controls.take("rate:slack:U2", rate, 2) == 0.0, "every user has a bucket of their own"
    await asyncio.sleep(PAST_SHORT_S)  # refilled (and never above the burst)
    assert [await store.controls.take("rate:slack:U1", rate, 2) > 0 for _ in range(3)] == [False, False, True]
    assert await store.controls.take("rate:slack:U1", 0.0, 2) == 0.0, "a rate of 0 is no limit"


async def test_concurrent_token_takes_never_exceed_the_burst(store: Store) -> None:
    waits = await asyncio.gather(*(store.controls.take("rate:slack:U9", 0.01, 3) for _ in range(12)))
    assert sum(1 for wait in waits if wait == 0.0) == 3
    assert all(wait > 0 for wait in waits if wait != 0.0)


async def test_ratings_keep_one_per_person_per_answer(store: Store) -> None:
    start = time.time()
    for job_id, user, offset in (("slack:C1:1.1", "slack:U1", 0), ("slack:C1:1.1", "slack:U2", 1),
                                 ("feishu:om_1", "feishu:ou_1", 2)):
        first = Rating(job_id, job_id.partition(":")[0], user, "helpful", created_at=start + offset)
        assert await store.ratings.rate(first) is None
    changed = Rating("slack:C1:1.1", "slack", "slack:U1", "not_helpful", "wrong", created_at=start + 3)
    assert await store.ratings.rate(changed) == "helpful", "the earlier rating is replaced, and named"
    assert await store.ratings.rate(changed) == "not_helpful", "the same click again changes nothing"

    ratings = await store.ratings.ratings(start - 1)
    assert [(r.job_id, r.user, r.rating, r.reason) for r in ratings] == [
        ("slack:C1:1.1", "slack:U2", "helpful", ""),
        ("feishu:om_1", "feishu:ou_1", "helpful", ""),
        ("slack:C1:1.1", "slack:U1", "not_helpful", "wrong"),
    ], "one per person per answer, oldest first, a changed rating at its new time"
    assert ratings[2] == changed and ratings[1].platform == "feishu"
    assert [r.user for r in await store.ratings.ratings(start + 2)] == ["feishu:ou_1", "slack:U1"]


async def test_ratings_expire_by_age(store: Store) -> None:
    now = time.time()
    await store.ratings.rate(Rating("slack:old", "slack", "slack:U1", "helpful", created_at=now - 3600))
    await store.ratings.rate(Rating("slack:new", "slack", "slack:U1", "not_helpful", created_at=now))
    assert await store.ratings.expire_ratings(60) == 1
    assert [r.job_id for r in await store.ratings.ratings(0)] == ["slack:new"]
    assert await store.ratings.expire_ratings(60) == 0
