"""Per-user rate limit (token bucket), daily quota, and the polite sentences that explain them.

Admins are exempt from both when an ``exempt`` predicate is given (e.g. ``CoreSettings.is_admin``). With
``buckets`` (the state store's ``controls``) the buckets live in the store, so every replica takes from one bucket
per user and a restart does not refill them; ``acquire`` uses them, and falls back to this process's own bucket
while the store fails.

Example::

    limiter = RateLimiter(access.rate_limit_per_minute, access.rate_limit_burst, exempt=core.is_admin,
                          buckets=store.controls)
    quota = QuotaChecker(access.daily_quota, store.audit.count_for_user, zone(access.quota_timezone),
                         exempt=core.is_admin)
    if (wait := await limiter.acquire(user.key)) is not None:
        await reply.fail(rate_limit_reply(wait))
    elif (reset_in := await quota.check(user.key)) is not None:
        await reply.fail(quota_reply(access.daily_quota, reset_in))

``UserLimits`` runs these checks (and a cap on pending questions) in the application's order and returns the
sentence to show.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta, tzinfo
from datetime import time as day_time
from typing import Protocol

from bot.errors import TooManyPending
from bot.i18n import say

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Exempt = Callable[[str], bool]


class TokenBuckets(Protocol):
    """Shared token buckets (``bot.store.base.ControlStore.take``)."""

    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per user key: ``burst`` questions at once, refilled at ``per_minute`` per minute.

    ``per_minute <= 0`` turns it off. Memory stays bounded: buckets that have refilled completely are
    forgotten (a fresh bucket is full, so nothing changes for the user), and at most ``max_users`` buckets
    are kept (the least recently used go first). ``buckets``: shared buckets for ``acquire`` (see the module).
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Clock = time.monotonic,
        *,
        exempt: Exempt | None = None,
        max_users: int = 100_000,
        buckets: TokenBuckets | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.burst = max(int(burst), 1)
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._exempt = exempt
        self._max_users = max(max_users, 1)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._shared = buckets

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def __len__(self) -> int:
        """Users currently remembered."""
        return len(self._buckets)

    def try_acquire(self, user_key: str) -> float | None:
        """Take one token: None when allowed, else the seconds until the next token."""
        if not self.enabled or (self._exempt is not None and self._exempt(user_key)):
            return None
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.pop(user_key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        self._buckets[user_key] = bucket  # most recently used last
        while len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = (1.0 - bucket.tokens) / self._rate
        logger.info("rate limit: %s must wait %.1f s", user_key, wait)
        return wait

    async def acquire(self, user_key: str) -> float | None:
        """Take one token from the user's shared bucket: None when allowed, else the seconds until the next token.

        Without shared buckets, or while the store fails, this process's own bucket decides (``try_acquire``).
        """
        if self._shared is None or not self.enabled or (self._exempt is not None and self._exempt(user_key)):
            return self.try_acquire(user_key)
        try:
            wait = await self._shared.take(f"rate:{user_key}", self._rate, self.burst)
        except Exception:
            logger.warning("rate limit: the shared bucket of %s failed; using this process's", user_key, exc_info=True)
            return self.try_acquire(user_key)
        if wait <= 0:
            return None
        logger.info("rate limit: %s must wait %.1f s", user_key, wait)
        return wait

    def _forget_idle(self, now: float) -> None:
        refill_s = self.burst / self._rate
        while self._buckets:
            bucket = next(iter(self._buckets.values()))
            if now - bucket.updated < refill_s:
                break
            self._buckets.popitem(last=False)


CountSince = Callable[[str, float], Awaitable[int]]


@dataclass(eq=False, slots=True)
class QuotaChecker:
    """At most ``daily_quota`` questions per user per local day (midnight in ``tz``; None: server time).

    ``count(user_key, since)`` returns the user's questions since an epoch time: the audit log's
    ``count_for_user``. ``daily_quota <= 0`` turns it off. If the count fails, the question is let through
    (the quota is a soft limit; an outage of the store must not silence the bot) and a warning is logged.
    """

    daily_quota: int
    count: CountSince
    tz: tzinfo | None = None
    _: KW_ONLY
    clock: Clock = time.time
    exempt: Exempt | None = None

    @property
    def enabled(self) -> bool:
        return self.daily_quota > 0

    async def check(self, user_key: str, *, pending: int = 0) -> float | None:
        """None when the user may ask, else the seconds until the quota resets (local midnight).

        ``pending`` counts the user's accepted but unanswered questions, which the audit log cannot see yet.
        """
        if not self.enabled or (self.exempt is not None and self.exempt(user_key)):
            return None
        now = self.clock()
        start, end = self.day_bounds(now)
        try:
            used = await self.count(user_key, start)
        except Exception:
            logger.warning("daily quota: could not count questions of %s; letting this one through", user_key,
                           exc_info=True)
            return None
        if used + pending < self.daily_quota:
            return None
        logger.info("daily quota: %s used %d (+%d pending) of %d", user_key, used, pending, self.daily_quota)
        return max(end - now, 0.0)

    def day_bounds(self, now: float) -> tuple[float, float]:
        """Epoch times of the local midnights that start and end the day containing ``now``."""
        # Without a zone the datetimes are naive: the server's local time, DST included.
        today = datetime.fromtimestamp(now, self.tz).date()
        start = datetime.combine(today, day_time.min, tzinfo=self.tz)
        end = datetime.combine(today + timedelta(days=1), day_time.min, tzinfo=self.tz)
        return start.timestamp(), end.timestamp()


@dataclass(eq=False, slots=True)
class UserLimits:
    """The per-user limits in the order a question meets them: the rate limit, the questions already pending
    (``max_pending``; 0: no cap), then the daily quota. A command meets the rate limit only."""

    rate_limiter: RateLimiter
    quota: QuotaChecker
    max_pending: int
    pending: Callable[[str], Awaitable[int]]
    """The user's accepted but unanswered questions (on every replica)."""

    async def refusal(self, user_key: str, *, command: bool = False, lang: str = "en") -> str | None:
        """None when ``user_key`` may ask now, else the sentence (in ``lang``) that tells them why not."""
        wait_s = await self.rate_limiter.acquire(user_key)
        if wait_s is not None:
            return rate_limit_reply(wait_s, lang)
        if command:
            return None
        pending = await self.pending(user_key)
        if self.max_pending > 0 and pending >= self.max_pending:
            logger.info("%s has %d questions pending, refusing another", user_key, pending)
            return TooManyPending(pending, self.max_pending).text(lang)
        quota_wait_s = await self.quota.check(user_key, pending=pending)
        if quota_wait_s is not None:
            return quota_reply(self.quota.daily_quota, quota_wait_s, lang)
        return None


def zone(name: str) -> tzinfo | None:
    """The IANA zone named (``AccessSettings.quota_timezone``), or None for the server's local time."""
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def about(seconds: float, lang: str = "en") -> str:
    """A rough human duration, never shorter than the real one below an hour: ``40 seconds``, ``a minute``,
    ``5 minutes``, ``3 hours`` (in ``lang``, ``bot.i18n``)."""
    whole = max(math.ceil(seconds), 1)
    if whole == 1:
        return say("time.a_second", lang)
    if whole < 10:
        return say("time.seconds", lang, n=whole)
    if whole < 60:
        rounded = math.ceil(whole / 5) * 5
        return say("time.a_minute", lang) if rounded == 60 else say("time.seconds", lang, n=rounded)
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return say("time.a_minute", lang) if minutes == 1 else say("time.minutes", lang, n=minutes)
    hours = max(round(whole / 3600), 1)
    return say("time.an_hour", lang) if hours == 1 else say("time.hours", lang, n=hours)


def rate_limit_reply(wait_s: float, lang: str = "en") -> str:
    return say("limit.rate", lang, wait=about(wait_s, lang))


def quota_reply(daily_quota: int, reset_in_s: float, lang: str = "en") -> str:
    key = "limit.quota_one" if daily_quota == 1 else "limit.quota_many"
    return say(key, lang, quota=daily_quota, wait=about(reset_in_s, lang))
