"""The kit's outbound-call helper: 429s waited out as the platform asks, brief failures retried with a jittered
backoff, everything else raised at once, and a budget on the time spent waiting."""

from __future__ import annotations

import itertools
import time

import pytest

from adapters.kit.outbound import Failure, RetryPolicy, Verdict, call, retry_after

pytestmark = pytest.mark.timeout(30)


class Refused(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.kind)
        self.verdict = verdict


def classify(error: BaseException) -> Verdict:
    return error.verdict if isinstance(error, Refused) else Verdict(Failure.PERMANENT)


class Endpoint:
    """Fails with the given verdicts in turn, then answers "ok"; notes when each attempt came."""

    def __init__(self, *failures: Verdict) -> None:
        self._failures = list(failures)
        self.attempts: list[float] = []

    async def __call__(self) -> str:
        self.attempts.append(time.monotonic())
        if self._failures:
            raise Refused(self._failures.pop(0))
        return "ok"

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.attempts)]


RATE_LIMITED = Verdict(Failure.RATE_LIMITED, retry_after_s=0.2)
EXACT = RetryPolicy(backoff_s=0.02, jitter=0.0)


async def test_a_429_waits_what_the_platform_asked_then_succeeds() -> None:
    endpoint = Endpoint(RATE_LIMITED, RATE_LIMITED)
    assert await call(endpoint, what="test post", classify=classify, policy=EXACT) == "ok"
    assert len(endpoint.attempts) == 3
    assert all(gap >= 0.19 for gap in endpoint.gaps())


async def test_a_429_without_retry_after_backs_off_doubling() -> None:
    endpoint = Endpoint(*[Verdict(Failure.RATE_LIMITED)] * 3)
    assert await call(endpoint, what="test post", classify=classify, policy=EXACT) == "ok"
    first, second, third = endpoint.gaps()
    assert first >= 0.018 and second >= 0.038 and third >= 0.078


async def test_a_wait_past_the_budget_is_not_started() -> None:
    endpoint = Endpoint(Verdict(Failure.RATE_LIMITED, retry_after_s=30.0))
    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        await call(endpoint, what="test edit", classify=classify, policy=EXACT.within(1.0))
    assert refused.value.verdict.kind is Failure.RATE_LIMITED  # the platform's own error, unchanged
    assert time.monotonic() - started < 0.5 and len(endpoint.attempts) == 1


async def test_no_wait_at_all_means_one_attempt() -> None:
    endpoint = Endpoint(Verdict(Failure.RATE_LIMITED, retry_after_s=0.01))
    with pytest.raises(Refused):
        await call(endpoint, what="test edit", classify=classify, policy=EXACT.within(0.0))
    assert len(endpoint.attempts) == 1


async def test_network_and_server_errors_are_tried_three_times_in_all() -> None:
    endpoint = Endpoint(*[Verdict(Failure.RETRYABLE)] * 5)
    with pytest.raises(Refused):
        await call(endpoint, what="test post", classify=classify, policy=EXACT)
    assert len(endpoint.attempts) == 3
    recovering = Endpoint(Verdict(Failure.RETRYABLE), Verdict(Failure.RETRYABLE))
    assert await call(recovering, what="test post", classify=classify, policy=EXACT) == "ok"


@pytest.mark.parametrize("kind", [Failure.PERMANENT, Failure.GONE])
async def test_permanent_and_gone_are_raised_at_once(kind: Failure) -> None:
    endpoint = Endpoint(Verdict(kind))
    with pytest.raises(Refused):
        await call(endpoint, what="test edit", classify=classify, policy=EXACT)
    assert len(endpoint.attempts) == 1


async def test_retries_bound_every_kind_together() -> None:
    endpoint = Endpoint(*[Verdict(Failure.RATE_LIMITED, retry_after_s=0.0)] * 2, Verdict(Failure.RETRYABLE))
    with pytest.raises(Refused):
        await call(endpoint, what="test post", classify=classify, policy=RetryPolicy(retries=2, jitter=0.0))
    assert len(endpoint.attempts) == 3


def test_backoff_is_jittered_below_the_doubling_and_capped() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=30.0, jitter=0.5)
    samples = [policy.backoff(2) for _ in range(200)]
    assert all(2.0 <= s <= 4.0 for s in samples) and len(set(samples)) > 100  # spread, so replicas drift apart
    assert all(15.0 <= policy.backoff(10) <= 30.0 for _ in range(50))
    assert RetryPolicy(backoff_s=1.0, jitter=0.0).backoff(3) == 8.0


def test_retry_after_reads_the_first_usable_header_in_any_case() -> None:
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert (
        retry_after({"x-ogw-ratelimit-reset": "0.5", "retry-after": "9"}, "X-Ogw-Ratelimit-Reset", "Retry-After") == 0.5
    )
    assert retry_after({"retry-after": "soon"}, "retry-after", default=1.0) == 1.0
    assert retry_after({"Retry-After": "-4"}) == 0.0
    assert retry_after(None, default=2.0) == 2.0
