"""Ratings of answers ("helpful" / "not helpful" buttons under a final answer) and the core's answer-button callback.

An adapter turns a click into a ``bot.types.AnswerAction`` and awaits the application's ``answer_action``, which
comes here: ratings are recorded by :class:`Ratings`, Stop goes to ``bot.stops``. A rating is stored per answer
(``store.ratings``: job id, platform, user, rating, reason, time; never a question's or an answer's text), one per
person per answer (a second click replaces the first), only for answers that exist (the job is journaled and
answered), and rate limited per person like questions (``bot.ratelimit``, a bucket of its own). ``/stats`` shows the
share rated helpful, ``/metrics`` counts ratings (``peekbot_feedback_total``), the status page charts them per day.
A rating is not an audited action: the ratings table is its record.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.durability import recorded_final
from bot.i18n import CATALOGUE, Lang, lang_for, say
from bot.ratelimit import RateLimiter, about
from bot.store.base import Job, JobState, Rating
from bot.store.codec import CodecError, decode_message
from bot.types import AnswerAction, AnswerActionKind
from bot.withdrawals import is_tombstone, job_id_of

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)

HELPFUL = AnswerActionKind.HELPFUL.value
NOT_HELPFUL = AnswerActionKind.NOT_HELPFUL.value
RATINGS_PER_MINUTE = 20.0
"""How fast one person may rate (a bucket of their own, apart from their questions'): enough for a person, too
slow for a script to flood the store."""
RATINGS_BURST = 10
CHART_DAYS = 7
"""Days of ratings the status page charts."""
REASON = re.compile(r"[\w .,'-]{1,40}")
"""A reason is a short choice from the platform's list ("wrong", "did not read the file"), never free text: anything
else is stored as ``other``."""

THANKS_HELPFUL = CATALOGUE["rating.helpful"]["en"]
THANKS_NOT_HELPFUL = CATALOGUE["rating.not_helpful"]["en"]
THANKS_REASON = CATALOGUE["rating.reason"]["en"]
UNKNOWN_ANSWER = CATALOGUE["rating.unknown"]["en"]
NOT_AN_ANSWER = CATALOGUE["rating.not_an_answer"]["en"]
NOT_FINISHED = CATALOGUE["rating.not_finished"]["en"]

RatingListener = Callable[[str, str], None]
"""Called with (platform, rating) for each rating recorded or changed (the metrics count them)."""


def rated_too_fast(wait_s: float, lang: str = "en") -> str:
    return say("rating.too_fast", lang, wait=about(wait_s, lang))


@dataclass(frozen=True, slots=True)
class RatingDay:
    """The ratings given on one UTC day."""

    day: str  # YYYY-MM-DD
    start: float
    helpful: int
    not_helpful: int


@dataclass(frozen=True, slots=True)
class RatingSummary:
    """The ratings of the last ``days`` UTC days: how many said helpful, how many were rated, and per day."""

    days: int
    helpful: int
    rated: int
    by_day: list[RatingDay]

    def line(self, lang: str = "en") -> str:
        """``Helpful: 83 % of 41 rated (7 days).`` for ``/stats``, in ``lang``."""
        period = say("stats.one_day" if self.days == 1 else "stats.days", lang, days=self.days)
        if not self.rated:
            return say("stats.unrated", lang, period=period)
        percent = round(100 * self.helpful / self.rated)
        return say("stats.helpful", lang, percent=percent, rated=self.rated, period=period)


class Ratings:
    """The application's side of ratings (see the module docstring)."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self._limiter = RateLimiter(RATINGS_PER_MINUTE, RATINGS_BURST, buckets=app.store.controls)
        self._listeners: list[RatingListener] = []

    def subscribe(self, listener: RatingListener) -> None:
        """Call ``listener(platform, rating)`` for every rating recorded or changed from now on."""
        self._listeners.append(listener)

    async def rate(self, action: AnswerAction) -> str:
        """Record ``action``'s rating; returns the sentence for the person who clicked. Raises when the store fails."""
        job_id = job_id_of(action.platform, action.question_id)
        job = await job_of(self._app, action)
        if job is None:
            logger.info("rating for unknown job %s refused", job_id)
            return UNKNOWN_ANSWER
        lang = job_lang(job)
        final = recorded_final(job)
        being_delivered = not job.state.finished and final is not None and final[1] == "finish"
        if job.state is not JobState.ANSWERED and not being_delivered:  # buttons show as the final text goes out
            return say("rating.not_finished" if not job.state.finished else "rating.not_an_answer", lang)
        wait_s = await self._limiter.acquire(f"ratings:{action.user.key}")
        if wait_s is not None:
            return rated_too_fast(wait_s, lang)
        rating = HELPFUL if action.kind is AnswerActionKind.HELPFUL else NOT_HELPFUL
        reason = ""
        if rating == NOT_HELPFUL and action.reason.strip():
            reason = action.reason.strip().lower() if REASON.fullmatch(action.reason.strip()) else "other"
        replaced = await self._app.store.ratings.rate(
            Rating(job_id, action.platform, action.user.key, rating, reason, time.time())
        )
        if replaced != rating:
            for listener in self._listeners:
                listener(action.platform, rating)
        logger.info(
            "job %s rated %s (%s)",
            job_id,
            rating,
            "first" if replaced is None else ("again" if replaced == rating else "changed"),
        )
        if rating == HELPFUL:
            return say("rating.helpful", lang)
        return say("rating.reason" if reason else "rating.not_helpful", lang)

    async def summary(self, days: int, *, now: float | None = None) -> RatingSummary:
        """The ratings of the last ``days`` UTC days (today included), per day and in all."""
        now = time.time() if now is None else now
        first_day = (int(now // 86400) - days + 1) * 86400
        counts = {first_day + i * 86400: [0, 0] for i in range(days)}
        for rating in await self._app.store.ratings.ratings(first_day):
            day = counts.get(int(rating.created_at // 86400) * 86400)
            if day is not None:
                day[0 if rating.rating == HELPFUL else 1] += 1
        by_day = [
            RatingDay(time.strftime("%Y-%m-%d", time.gmtime(start)), float(start), helpful, not_helpful)
            for start, (helpful, not_helpful) in counts.items()
        ]
        helpful = sum(day.helpful for day in by_day)
        return RatingSummary(days, helpful, helpful + sum(day.not_helpful for day in by_day), by_day)

    async def recent_days(self) -> list[RatingDay]:
        """The last :data:`CHART_DAYS` days' ratings for the status page; empty when the store fails (logged)."""
        try:
            return (await self.summary(CHART_DAYS)).by_day
        except Exception:
            logger.warning("could not read the ratings for the status page", exc_info=True)
            return []


async def job_of(app: Application, action: AnswerAction) -> Job | None:
    """The journaled question ``action`` is about; None when unknown, expired, or withdrawn before it arrived."""
    if not action.question_id:
        return None
    job = await app.store.jobs.get(job_id_of(action.platform, action.question_id))
    return None if job is None or is_tombstone(job) else job


def job_lang(job: Job) -> Lang:
    """The language of what peekbot tells someone about ``job``'s answer: that of its question (``bot.i18n``)."""
    try:
        return lang_for(decode_message(job.message))
    except CodecError:
        return "en"


async def answer_action(app: Application, action: AnswerAction) -> str:
    """The core's answer-button callback (``bot.types.AnswerActionHandler``): a rating or a Stop."""
    if action.kind is AnswerActionKind.STOP:
        return await app.stops.request(action)
    return await app.ratings.rate(action)
