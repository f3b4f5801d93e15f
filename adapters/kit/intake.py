"""Intake: one platform event to the core, once, then the ack.

A platform may deliver an event more than once (a retry after a missed ack, a backfill after a reconnect) and one
chat message under several event ids (Slack's ``message`` and ``app_mention``). ``Intake`` lets one copy through
per event id and per message id at a time: a copy that arrives while an earlier one is being handed to the core
waits (at most ``wait_s``) for that copy's outcome instead of calling the core again, and a key whose copy was
taken is remembered (the newest ``memory`` keys), so a later copy is acked at once. The core dedupes again by its
journal (``Application.handle``), across restarts and replicas; this keeps copies in one process from racing there.

The adapter acks by the ``Outcome`` of ``Intake.take``:

- ``TAKEN``: ack. The core journaled the question (or said it was a duplicate), an earlier copy was taken, or
  there was nothing to hand over.
- ``FAILED``: the hand-over raised (e.g. the journal could not be written). Answer with an error or not at all;
  the keys are released, so the platform's next delivery is handled afresh.
- ``PENDING``: an earlier copy was still on its way after ``wait_s``. No ack: the platform delivers it again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import StrEnum

logger = logging.getLogger(__name__)

MEMORY = 20_000
"""Keys of taken copies remembered; older ones are left to the core's journal."""


class Outcome(StrEnum):
    TAKEN = "taken"
    FAILED = "failed"
    PENDING = "pending"


class NotTaken(Exception):
    """Raised by a hand-over that refuses a copy on purpose (the adapter is stopping): ``FAILED``, no traceback."""


class _StillInFlight(Exception):
    """An earlier copy with the same key is still on its way to the core after the wait."""


class Flight:
    """One copy of an event on its way to the core. ``claim`` its event and message ids before handing it over."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.keys: list[str] = []

    async def claim(self, *keys: str) -> bool:
        """True when this copy carries ``keys`` now (empty ones are skipped); False when an earlier copy with one of
        them was taken: ack this one and hand nothing over. While an earlier copy is on its way, waits for it (at
        most ``wait_s`` per key); if that copy failed, this one tries instead."""
        for key in filter(None, keys):
            if not await self._intake._claim(self, key):
                return False
        return True


class Intake:
    """Single-flight intake for one adapter; ``wait_s`` is ``PEEKBOT_INTAKE_WAIT_S``."""

    def __init__(self, platform: str, *, wait_s: float, memory: int = MEMORY) -> None:
        self._platform = platform
        self._wait_s = wait_s
        self._memory = memory
        # A hand-written bounded LRU set: twenty lines, where a cache library would add a dependency for one use.
        self._taken: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    async def take(self, hand_over: Callable[[Flight], Awaitable[object]], *, label: str = "") -> Outcome:
        """Run ``hand_over`` for one copy of an event (it claims the copy's keys, translates, calls the core) and
        say how to answer the platform. ``label`` names the copy in the log."""
        flight = Flight(self)
        outcome = Outcome.FAILED
        try:
            await hand_over(flight)
            outcome = Outcome.TAKEN
        except _StillInFlight as exc:
            logger.info("%s: %s arrived while an earlier copy is still on its way; left unacked", self._platform, exc)
            outcome = Outcome.PENDING
        except NotTaken as exc:
            logger.info("%s: %s was not taken (%s); the platform will deliver it again", self._platform, label, exc)
        except Exception:
            logger.exception("%s: %s was not taken; the platform will deliver it again", self._platform, label)
        finally:
            self._settle(flight, taken=outcome is Outcome.TAKEN)
        return outcome

    async def _claim(self, flight: Flight, key: str) -> bool:
        while key not in flight.keys:
            if key in self._taken:
                self._taken.move_to_end(key)
                return False
            earlier = self._in_flight.get(key)
            if earlier is None:
                self._in_flight[key] = flight.outcome
                flight.keys.append(key)
                break
            try:
                await asyncio.wait_for(asyncio.shield(earlier), self._wait_s)
            except TimeoutError:
                raise _StillInFlight(key) from None
            # settled: taken (the loop finds the key remembered) or failed (this copy tries instead)
        return True

    def _settle(self, flight: Flight, *, taken: bool) -> None:
        for key in flight.keys:
            if self._in_flight.get(key) is flight.outcome:
                del self._in_flight[key]
            if taken:
                self._taken[key] = None
                self._taken.move_to_end(key)
        while len(self._taken) > self._memory:
            self._taken.popitem(last=False)
        flight.outcome.set_result(taken)
