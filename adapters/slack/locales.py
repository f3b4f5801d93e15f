"""The asker's Slack locale (``zh-CN``, ``en-US``): what language peekbot's own sentences take for them.

Slack's events carry no locale; ``users.info`` with ``include_locale=true`` returns ``user.locale`` (scope
``users:read``). It is looked up once per person and kept for ``SLACK_LOCALE_CACHE_S`` in a bounded cache; a lookup
waits at most ``SLACK_LOCALE_TIMEOUT_S``, so a slow Slack never delays the answer by more. A failure (a missing
scope, an error, a timeout) means "unknown" (``""``, remembered for at most :data:`RETRY_FAILED_AFTER_S`, so a
passing slowness does not leave a person unknown for the whole TTL): ``bot.i18n.lang_for`` then goes by the
question's own language.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

logger = logging.getLogger(__name__)

MAX_PEOPLE = 10_000
"""People whose locale is remembered at once (the least recently asked is forgotten first)."""
RETRY_FAILED_AFTER_S = 300.0
"""A lookup that failed is tried again after this long (or the TTL, if shorter)."""


class UserLocales:
    """``await locales.of(user_id)``: the person's Slack locale, or ``""`` when Slack does not say in time."""

    def __init__(
        self, web: AsyncWebClient, *, ttl_s: float, timeout_s: float, max_people: int = MAX_PEOPLE,
        retry_failed_after_s: float = RETRY_FAILED_AFTER_S,
    ) -> None:  # fmt: skip
        self._web = web
        self._ttl_s = ttl_s
        self._retry_failed_after_s = min(ttl_s, retry_failed_after_s)
        self._timeout_s = timeout_s
        self._max_people = max(1, max_people)
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def of(self, user_id: str) -> str:
        """The locale of ``user_id`` (cached); ``""`` when unknown. Never raises."""
        if not user_id or self._ttl_s <= 0:
            return ""
        known = self._known.get(user_id)
        if known is not None and known[1] > time.monotonic():
            self._known.move_to_end(user_id)
            return known[0]
        locale, answered = await self._ask(user_id)
        keep_s = self._ttl_s if answered else self._retry_failed_after_s
        self._known[user_id] = (locale, time.monotonic() + keep_s)
        self._known.move_to_end(user_id)
        while len(self._known) > self._max_people:
            self._known.popitem(last=False)
        return locale

    async def _ask(self, user_id: str) -> tuple[str, bool]:
        """The locale Slack tells (``""``: none) and whether Slack answered at all."""
        try:
            response = await asyncio.wait_for(
                self._web.users_info(user=user_id, include_locale=True), max(0.01, self._timeout_s)
            )
        except SlackApiError as exc:
            logger.info("slack: users.info gave no locale: %s", exc.response.get("error"))
            return "", False
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("slack: users.info gave no locale in time: %s", type(exc).__name__)
            return "", False
        user = response.get("user") or {}
        locale = user.get("locale") if isinstance(user, dict) else None
        return (locale if isinstance(locale, str) else ""), True
