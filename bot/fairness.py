"""Fair admission of questions to the engine: a fixed number of slots shared round-robin across users.

When a slot frees up, the next turn goes to the waiting user with the fewest turns running (ties: the user who
has waited longest for a turn); each user's own questions keep their order. So one user's burst of 30 questions
cannot hold back another user's single question by more than about one slot's worth of work. A user may have
at most ``max_pending_per_user`` questions waiting or running; the next one raises ``TooManyPending``. (The
application checks the same limit across replicas before it accepts a question, counting the user's unfinished
jobs in the shared journal; this check is the per-process backstop.)

How many slots: :func:`engine_slots`. With continuous batching the engine holds more questions than it has rows and
fills a row that frees at its next decoding step, choosing among them with the same rule (the asker with the fewest
rows first), so the fairness holds inside the engine too.

Use one scheduler per process, from the event loop's thread. Example::

    scheduler = FairShare(slots=engine_slots(settings.engine.max_batch_size, continuous=True),
                          max_pending_per_user=settings.access.max_pending_per_user)
    async with scheduler.turn(message.user.key):
        answer = await ask_the_engine(...)
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.errors import TooManyPending

logger = logging.getLogger(__name__)


def engine_slots(max_batch_size: int, *, continuous: bool) -> int:
    """Questions the core lets reach the engine at once.

    A static batch runs at most ``max_batch_size`` questions, so more would only wait in the engine's queue. A
    continuously batching engine admits a waiting question at its next decoding step, from those it already holds
    with their images prepared: it gets twice its batch, so a row that frees is refilled at once rather than after
    the next question has been built and its images prepared, and the engine can pick fairly among them.
    """
    rows = max(1, max_batch_size)
    return 2 * rows if continuous else rows


@dataclass(frozen=True, slots=True)
class FairnessStats:
    slots: int
    active: int
    waiting: int
    active_by_user: dict[str, int]
    waiting_by_user: dict[str, int]


class FairShare:
    """``slots`` concurrent turns, handed out fairly across users (see the module docstring)."""

    def __init__(self, slots: int, max_pending_per_user: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_pending_per_user = max_pending_per_user
        self._active = 0
        self._active_by_user: Counter[str] = Counter()
        # Users with waiters, in round-robin order; each holds its waiters' futures, oldest first.
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self.admitted = 0
        """Turns granted so far."""

    @asynccontextmanager
    async def turn(self, user_key: str) -> AsyncIterator[None]:
        """Wait for a slot, hold it for the block, release it on exit (exceptions and cancellation too).

        Raises ``TooManyPending`` at once, without queueing, when the user already has
        ``max_pending_per_user`` turns waiting or running.
        """
        await self._acquire(user_key)
        try:
            yield
        finally:
            self._release(user_key)

    def pending(self, user_key: str) -> int:
        """The user's turns waiting or running."""
        return self._active_by_user[user_key] + len(self._queues.get(user_key, ()))

    def position(self, user_key: str) -> int | None:
        """How many waiting turns go before the user's next one (0: it is next); None if the user waits for none.

        A prediction from the current state: turns that finish meanwhile may reorder it slightly.
        """
        if user_key not in self._queues:
            return None
        return self._predicted_order().index(user_key)

    def ahead_of_new_turn(self, user_key: str) -> int:
        """How many waiting turns would go before a turn the user asked for now (0: a slot is free)."""
        if self._active < self.slots:
            return 0
        order = self._predicted_order(extra_for=user_key)
        return len(order) - 1 - order[::-1].index(user_key)

    def stats(self) -> FairnessStats:
        waiting_by_user = {key: len(queue) for key, queue in self._queues.items()}
        return FairnessStats(
            slots=self.slots,
            active=self._active,
            waiting=sum(waiting_by_user.values()),
            active_by_user={key: n for key, n in self._active_by_user.items() if n},
            waiting_by_user=waiting_by_user,
        )

    async def _acquire(self, user_key: str) -> None:
        pending = self.pending(user_key)
        if self.max_pending_per_user > 0 and pending >= self.max_pending_per_user:
            logger.info("fairness: %s has %d pending turns, refusing another", user_key, pending)
            raise TooManyPending(pending, self.max_pending_per_user)
        if self._active < self.slots:  # free slot ⇒ nobody is waiting (see _dispatch)
            self._grant(user_key)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(user_key, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(user_key)  # granted just before the cancellation arrived: hand the slot on
            else:
                self._forget(user_key, waiter)
            raise

    def _grant(self, user_key: str) -> None:
        self._active += 1
        self._active_by_user[user_key] += 1
        self.admitted += 1

    def _release(self, user_key: str) -> None:
        self._active -= 1
        self._active_by_user[user_key] -= 1
        if self._active_by_user[user_key] <= 0:
            del self._active_by_user[user_key]
        self._dispatch()

    def _forget(self, user_key: str, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(user_key)
        if queue is None:
            return
        if waiter in queue:
            queue.remove(waiter)
        if not queue:
            del self._queues[user_key]

    def _dispatch(self) -> None:
        """Fill free slots from the queues, keeping the invariant: a free slot means nobody waits."""
        while self._active < self.slots and self._queues:
            user_key = self._next_user(self._active_by_user)
            queue = self._queues[user_key]
            waiter = queue.popleft()
            if queue:
                self._queues.move_to_end(user_key)
            else:
                del self._queues[user_key]
            if waiter.done():  # cancelled while queued: skip it
                continue
            waiter.set_result(None)
            self._grant(user_key)

    def _next_user(self, active_by_user: Counter[str]) -> str:
        """The queued user with the fewest running turns; ties go to the earliest in round-robin order."""
        return min(self._queues, key=lambda key: active_by_user[key])

    def _predicted_order(self, extra_for: str | None = None) -> list[str]:
        """The user of each waiting turn in the order they would be admitted if nothing finished meanwhile
        (with one more turn queued for ``extra_for`` when given)."""
        active = Counter(self._active_by_user)
        ring = OrderedDict((key, len(queue)) for key, queue in self._queues.items())
        if extra_for is not None:
            ring[extra_for] = ring.get(extra_for, 0) + 1
        order: list[str] = []
        while ring:
            user_key = min(ring, key=lambda key: active[key])
            order.append(user_key)
            active[user_key] += 1
            ring[user_key] -= 1
            if ring[user_key]:
                ring.move_to_end(user_key)
            else:
                del ring[user_key]
        return order
