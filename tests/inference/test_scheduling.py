"""The admission policy on its own: when requests join, under which budget, and fairly between askers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from inference.scheduling import Scheduler, fairness_key

_order = itertools.count()


@dataclass
class Job:
    fairness_key: str
    prompt_tokens: int | None = 100
    sequence: int = field(default_factory=lambda: next(_order))


def scheduler(policy="continuous", rows=4, tokens=10_000, chunk=256) -> Scheduler:
    return Scheduler(policy, max_batch_size=rows, max_batch_tokens=tokens, prefill_chunk_tokens=chunk)


def test_continuous_fills_free_rows_while_others_decode_and_static_waits_for_an_empty_batch():
    running = [Job("a"), Job("b")]
    waiting = [Job("c"), Job("d"), Job("e")]
    assert scheduler("continuous").admit(waiting, running, batch_length=180) == waiting[:2]
    assert scheduler("static").admit(waiting, running, batch_length=180) == []
    assert scheduler("static").admit(waiting, [], batch_length=0) == waiting


def test_a_flood_from_one_asker_does_not_hold_back_another():
    running = [Job("flood"), Job("flood")]
    flood = [Job("flood") for _ in range(6)]
    single = Job("single")
    chosen = scheduler(rows=4).admit([*flood, single], running, batch_length=120)
    assert chosen[0] is single, "the asker with no rows gets the next free row, though they asked last"
    assert chosen[1] is flood[0] and len(chosen) == 2

    two_askers = [Job("x"), Job("x"), Job("x"), Job("y"), Job("y")]
    order = [job.fairness_key for job in scheduler(rows=5).admit(two_askers, [], batch_length=0)]
    assert order == ["x", "y", "x", "y", "x"], "rows alternate between askers, each asker's own oldest first"


def test_token_budget_counts_padded_cache_positions_and_a_lone_request_always_runs():
    policy = scheduler(rows=8, tokens=1000)
    waiting = [Job("a", 300), Job("b", 300), Job("c", 300), Job("d", 300)]
    assert len(policy.admit(waiting, [], batch_length=0)) == 3  # 3 × 300 fits, 4 × 300 does not
    assert policy.admit(waiting, [Job("z")], batch_length=450) == waiting[:1]  # 2 × 450 fits, 3 × 450 does not
    assert policy.admit([Job("huge", 5000)], [], batch_length=0)[0].prompt_tokens == 5000
    assert policy.admit([Job("huge", 5000)], [Job("z")], batch_length=10) == []


def test_requests_still_being_prepared_wait():
    unprepared, ready = Job("a", None), Job("b", 50)
    assert scheduler().admit([unprepared, ready], [Job("c")], batch_length=60) == [ready]


def test_after_running_out_of_memory_the_batch_is_capped_until_it_drains():
    policy = scheduler(rows=8)
    policy.cap_rows(2)
    waiting = [Job(str(n)) for n in range(5)]
    assert policy.admit(waiting, [Job("r")], batch_length=100) == waiting[:1]
    assert policy.row_limit == 2
    policy.drained()
    assert policy.row_limit == 8 and len(policy.admit(waiting, [], batch_length=0)) == 5


def test_prefill_runs_one_unit_per_step_while_rows_decode():
    policy = scheduler(chunk=64)
    assert policy.prefill_units(decoding_rows=3) == 1
    assert policy.prefill_units(decoding_rows=0) is None, "nobody waits for a token: prefill back to back"
    assert policy.chunk_tokens == 64 and scheduler(chunk=0).chunk_tokens is None
    with pytest.raises(ValueError, match="scheduling"):
        Scheduler("eager", max_batch_size=1, max_batch_tokens=1, prefill_chunk_tokens=1)  # type: ignore[arg-type]


def test_fairness_key_is_the_asker_else_the_job_else_the_request():
    assert fairness_key("slack:U1", "slack:m1", "r1") == "slack:U1"
    assert fairness_key(None, "slack:m1", "r1") == "job:slack:m1"
    assert fairness_key(None, None, "r1") == "request:r1"
