"""Fair admission: one user's burst cannot starve another user; caps, cancellation and errors free slots."""

from __future__ import annotations

import asyncio
import functools

import pytest

from bot.errors import Busy, TooManyPending
from bot.fairness import FairShare, engine_slots
from tests.support.waiting import eventually

until = functools.partial(eventually, timeout=5.0, interval=0.001)
"""Let other tasks run until a condition holds."""


async def hold(scheduler: FairShare, user: str, admitted: list[str], release: asyncio.Event) -> None:
    async with scheduler.turn(user):
        admitted.append(user)
        await release.wait()


async def slot_held_by_h() -> tuple[FairShare, list[str], asyncio.Event, asyncio.Task[None]]:
    """One slot (ten questions pending per user at most), taken by user H until ``release`` is set:
    (scheduler, the users in the order admitted, release, H's task)."""
    scheduler = FairShare(slots=1, max_pending_per_user=10)
    release = asyncio.Event()
    admitted: list[str] = []
    holder = asyncio.create_task(hold(scheduler, "H", admitted, release))
    await until(lambda: admitted == ["H"])
    return scheduler, admitted, release, holder


async def test_a_burst_of_30_does_not_hold_back_another_users_single_question() -> None:
    slots = 2
    scheduler = FairShare(slots=slots, max_pending_per_user=50)
    admitted: list[tuple[str, int]] = []

    async def job(user: str, number: int) -> None:
        async with scheduler.turn(user):
            admitted.append((user, number))
            await asyncio.sleep(0.003)  # the fake "work"

    a_jobs = [asyncio.create_task(job("slack:A", n)) for n in range(30)]
    await until(lambda: len(admitted) >= 4)  # B asks shortly after A's burst, while A's questions run
    admitted_before_b = len(admitted)
    b_job = asyncio.create_task(job("slack:B", 0))
    async with asyncio.timeout(10):
        await asyncio.gather(*a_jobs, b_job)

    assert len(admitted) == 31
    b_admission = admitted.index(("slack:B", 0)) - admitted_before_b + 1
    assert b_admission <= slots + 1
    assert b_admission == 1  # B runs nothing, A holds both slots: the next free slot is B's
    a_order = [number for user, number in admitted if user == "slack:A"]
    assert a_order == list(range(30))  # each user's questions keep their order
    assert scheduler.stats().active == 0 and scheduler.stats().waiting == 0


async def test_waiting_users_take_turns_round_robin() -> None:
    scheduler, admitted, first_release, holder = await slot_held_by_h()

    done = asyncio.Event()
    done.set()
    tasks = []
    for user, count in (("A", 3), ("B", 3), ("C", 1)):
        for _ in range(count):
            tasks.append(asyncio.create_task(hold(scheduler, user, admitted, done)))
    await until(lambda: scheduler.stats().waiting == 7)
    assert scheduler.stats().waiting_by_user == {"A": 3, "B": 3, "C": 1}
    first_release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(holder, *tasks)
    assert admitted == ["H", "A", "B", "C", "A", "B", "A", "B"]


async def test_position_and_stats_describe_the_line() -> None:
    scheduler = FairShare(slots=2, max_pending_per_user=10)
    release = asyncio.Event()
    admitted: list[str] = []
    tasks = [asyncio.create_task(hold(scheduler, "A", admitted, release)) for _ in range(4)]
    await until(lambda: scheduler.stats().waiting == 2)
    tasks.append(asyncio.create_task(hold(scheduler, "B", admitted, release)))
    await until(lambda: scheduler.stats().waiting == 3)

    stats = scheduler.stats()
    assert (stats.slots, stats.active, stats.waiting) == (2, 2, 3)
    assert stats.active_by_user == {"A": 2} and stats.waiting_by_user == {"A": 2, "B": 1}
    assert scheduler.position("B") == 0  # B runs nothing, so it goes before A's third question
    assert scheduler.position("A") == 1
    assert scheduler.position("C") is None
    assert scheduler.pending("A") == 4 and scheduler.pending("B") == 1
    # Where a question asked now would wait: C runs nothing, like B, who has waited longer; A's fifth goes last.
    assert scheduler.ahead_of_new_turn("C") == 1
    assert scheduler.ahead_of_new_turn("B") == 1  # B runs fewer than A, so both of its turns go first
    assert scheduler.ahead_of_new_turn("A") == 3
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert admitted == ["A", "A", "B", "A", "A"]
    assert scheduler.position("A") is None and scheduler.admitted == 5
    assert scheduler.ahead_of_new_turn("A") == 0  # a slot is free


async def test_a_user_with_too_many_pending_questions_is_told_so() -> None:
    scheduler = FairShare(slots=2, max_pending_per_user=10)
    release = asyncio.Event()
    admitted: list[str] = []
    tasks = [asyncio.create_task(hold(scheduler, "slack:A", admitted, release)) for _ in range(10)]
    await until(lambda: scheduler.pending("slack:A") == 10)

    with pytest.raises(TooManyPending) as refused:
        async with scheduler.turn("slack:A"):
            pytest.fail("an eleventh pending question was admitted")
    assert refused.value.user_message == (
        "You already have 10 questions waiting; I'll take more once some are answered."
    )
    assert isinstance(refused.value, Busy) and refused.value.kind == "too_many_pending"
    assert scheduler.stats().waiting_by_user == {"slack:A": 8}  # the refused one was not queued

    tasks.append(asyncio.create_task(hold(scheduler, "slack:B", admitted, release)))  # others still get in line
    await until(lambda: scheduler.pending("slack:B") == 1)
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    async with asyncio.timeout(1), scheduler.turn("slack:A"):  # answered ones make room again
        assert scheduler.pending("slack:A") == 1


async def test_cancelled_waiters_leave_the_line_without_losing_a_slot() -> None:
    scheduler, admitted, release, holder = await slot_held_by_h()
    waiters = {name: asyncio.create_task(hold(scheduler, name, admitted, release)) for name in ("W1", "W2", "W3")}
    await until(lambda: scheduler.stats().waiting == 3)

    waiters["W2"].cancel()
    await until(lambda: waiters["W2"].done())
    assert scheduler.stats().waiting_by_user == {"W1": 1, "W3": 1}
    assert scheduler.pending("W2") == 0
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(holder, waiters["W1"], waiters["W3"])
    assert admitted == ["H", "W1", "W3"]
    assert waiters["W2"].cancelled()
    stats = scheduler.stats()
    assert (stats.active, stats.waiting, stats.active_by_user, stats.waiting_by_user) == (0, 0, {}, {})


async def test_a_waiter_cancelled_just_as_its_turn_came_passes_the_slot_on() -> None:
    scheduler = FairShare(slots=1, max_pending_per_user=10)
    admitted: list[str] = []
    release = asyncio.Event()
    release.set()
    first = scheduler.turn("H")
    await first.__aenter__()
    unlucky = asyncio.create_task(hold(scheduler, "U", admitted, release))
    next_in_line = asyncio.create_task(hold(scheduler, "N", admitted, release))
    await until(lambda: scheduler.stats().waiting == 2)

    await first.__aexit__(None, None, None)  # hands the slot to U's waiter at once
    assert scheduler.stats().active_by_user == {"U": 1}
    unlucky.cancel()  # before U's task could run with its slot
    async with asyncio.timeout(5):
        await next_in_line
    assert unlucky.cancelled()
    assert admitted == ["N"]
    assert scheduler.stats().active == 0 and scheduler.stats().waiting == 0


async def test_errors_and_cancellation_inside_a_turn_release_the_slot() -> None:
    scheduler = FairShare(slots=1, max_pending_per_user=10)
    with pytest.raises(RuntimeError, match="engine exploded"):
        async with scheduler.turn("A"):
            raise RuntimeError("engine exploded")
    assert scheduler.stats().active == 0

    started = asyncio.Event()

    async def long_answer() -> None:
        async with scheduler.turn("A"):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(long_answer())
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.stats().active == 0 and scheduler.pending("A") == 0
    async with asyncio.timeout(1), scheduler.turn("B"):
        assert scheduler.stats().active_by_user == {"B": 1}


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(slots=0, max_pending_per_user=10)


def test_a_continuously_batching_engine_gets_more_questions_than_rows() -> None:
    # It refills a freed row at its next step from the questions it holds, so it gets twice its batch; a static
    # batch gets one batch (more would only wait in its queue).
    assert engine_slots(8, continuous=True) == 16
    assert engine_slots(8, continuous=False) == 8
    assert engine_slots(0, continuous=True) == 2
