"""One way to call a platform's API: rate limits waited out, brief failures retried, everything else raised at once.

A platform describes its errors with a ``Classify`` function (``Verdict`` of ``Failure`` kinds) and ``call`` does
the rest:

- ``RATE_LIMITED``: wait the platform's ``Retry-After`` (``retry_after_s``), or the backoff when it named none, and
  try again;
- ``RETRYABLE`` (network errors, 5xx): back off and try again, at most ``transient_attempts`` attempts in all;
- ``PERMANENT`` and ``GONE`` (the message or object is not there any more): raise at once.

The backoff doubles after every wait (``backoff_s`` up to ``max_backoff_s``) and is jittered (a random part of up to
``jitter`` of it is left out), so replicas that failed together do not retry in step. ``retries`` bounds the
retries of any kind; ``max_wait_s`` bounds the time spent waiting in all: a wait that would pass it is not started,
and the last error is raised instead. The caller sees the platform's own exception, unchanged.

Hand-written on purpose: retry libraries (tenacity, backoff) need the same classification and budget written as
callbacks, and neither reads a wait from the error; the loop below is shorter than that configuration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

__all__ = ["Classify", "Failure", "RetryPolicy", "Verdict", "call", "retry_after"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Failure(StrEnum):
    """What a failed call means for trying it again."""

    RATE_LIMITED = "rate_limited"
    """Too many calls: wait (``Verdict.retry_after_s``, else the backoff) and try again."""
    RETRYABLE = "retryable"
    """A network error or a server error (5xx): back off and try again, a few times."""
    PERMANENT = "permanent"
    """Trying again will not help (a bad request, no permission)."""
    GONE = "gone"
    """The thing the call was about does not exist any more (a deleted message): do something else instead."""


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Failure
    retry_after_s: float | None = None
    """For ``RATE_LIMITED``: how long the platform asked to wait, when it said."""


Classify = Callable[[BaseException], Verdict]
"""A platform's reading of an exception raised by one of its calls."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one call keeps trying. The defaults wait out rate limits without bound and try three times in all
    after network or server errors."""

    max_wait_s: float = math.inf
    """Time spent waiting between attempts, in all; 0 tries once."""
    retries: int | None = None
    """Retries of any kind (None: only the other bounds apply)."""
    transient_attempts: int = 3
    """Attempts in all while the failures are ``RETRYABLE``."""
    backoff_s: float = 1.0
    """The first backoff; it doubles after every wait."""
    max_backoff_s: float = 30.0
    jitter: float = 0.5
    """Up to this part of each backoff is left out at random (0: exact backoffs)."""

    def within(self, max_wait_s: float | None) -> RetryPolicy:
        """This policy waiting at most ``max_wait_s`` in all (None: as it is)."""
        if max_wait_s is None or max_wait_s >= self.max_wait_s:
            return self
        return replace(self, max_wait_s=max(max_wait_s, 0.0))

    def backoff(self, waits: int) -> float:
        """The backoff before the next attempt, after ``waits`` waits."""
        base = min(self.backoff_s * 2.0**waits, self.max_backoff_s)
        return base * (1.0 - self.jitter * random.random())


async def call(
    attempt: Callable[[], Awaitable[T]], *, what: str, classify: Classify, policy: RetryPolicy = RetryPolicy()
) -> T:
    """``await attempt()`` until it succeeds or ``policy`` says stop; then its last exception is raised.

    ``what`` names the call in the logs (no message text, no token).
    """
    waited = 0.0
    waits = 0
    transient = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            verdict = classify(exc)
            if verdict.kind is Failure.RETRYABLE:
                transient += 1
                if transient >= policy.transient_attempts:
                    raise
            elif verdict.kind is not Failure.RATE_LIMITED:
                raise
            if policy.retries is not None and waits >= policy.retries:
                raise
            if verdict.kind is Failure.RATE_LIMITED and verdict.retry_after_s is not None:
                delay = max(verdict.retry_after_s, 0.0)
            else:
                delay = policy.backoff(waits)
            if waited + delay > policy.max_wait_s:
                raise
            if verdict.kind is Failure.RATE_LIMITED:
                logger.info("%s rate limited; retrying in %.1f s", what, delay)
            else:
                logger.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
        await asyncio.sleep(delay)
        waited += delay
        waits += 1


def retry_after(headers: Mapping[str, str] | None, *names: str, default: float | None = None) -> float | None:
    """The first of the headers ``names`` (case-insensitive) that holds a number of seconds, else ``default``."""
    if not headers:
        return default
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in names or ("retry-after",):
        value = lowered.get(name.lower())
        if value is None:
            continue
        try:
            return max(float(value), 0.0)
        except (TypeError, ValueError):
            continue
    return default
