"""The engine's scheduling policy, in one place: which waiting requests join the running batch, when, under which
budget, in which order, and how much prefill work may run between two decoding steps. No torch here.

**When** (``PEEKBOT_SCHEDULING``):

* ``continuous`` (default): at every decoding step. A request that arrives while others are generating starts its
  prefill at once, between steps, and decodes with them from the next step after its prefill; rows leave the moment
  they finish, and their places are filled at the next step.
* ``static``: only when the batch is empty. The requests admitted together are prefilled, decode together, and
  nothing joins until the last of them has finished (the classic dynamic batch; kept for comparison).

**Budget**: at most ``max_batch_size`` rows (decoding and prefilling), and at most ``max_batch_tokens`` padded cache
positions: rows × the batch's cache length after the join (the longest row's prompt and answer so far, or the
joining prompt if longer). A request alone is always admitted, whatever its size.

**Order and fairness**: among the waiting requests whose inputs are prepared, the next to join is the one whose asker
has the fewest rows in the batch (running or prefilling), oldest first among equals. So one person's burst fills the
rows that nobody else wants, and another person's question takes the next free row. The asker is the request's
``user``, else the journal job it serves, else the request itself.

**Prefill between steps** (:meth:`Scheduler.prefill_units`): while rows are decoding, one unit of prefill runs per
step: one image through the vision encoder, or one chunk of at most ``prefill_chunk_tokens`` prompt tokens. So a
running row's inter-token latency is at most one decoding step plus one such unit. With no row decoding, the admitted
prompts are prefilled back to back (still in chunks, which bounds the activation memory).

**After an out-of-memory error** (``inference.oom``): the batch is capped at the rows that fit
(:meth:`Scheduler.cap_rows`) until it drains; then the full budget applies again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal, Protocol

Policy = Literal["continuous", "static"]


class Candidate(Protocol):
    """A request as the scheduler sees it."""

    @property
    def fairness_key(self) -> str: ...

    @property
    def sequence(self) -> int:
        """Submission order (smaller: older)."""

    @property
    def prompt_tokens(self) -> int | None:
        """Prompt length, None while its inputs are not prepared yet."""


class Scheduler:
    """The admission and prefill policy (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        prefill_chunk_tokens: int,
    ) -> None:
        if policy not in ("continuous", "static"):
            raise ValueError(f"unknown scheduling policy {policy!r}; use continuous or static")
        self.policy: Policy = policy
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.chunk_tokens: int | None = prefill_chunk_tokens if prefill_chunk_tokens > 0 else None
        """Prompt tokens per prefill chunk (None: whole prompts)."""
        self._oom_rows: int | None = None

    @property
    def row_limit(self) -> int:
        """Rows the batch may hold now (lower after an out-of-memory error, until the batch drains)."""
        return min(self.max_batch_size, self._oom_rows or self.max_batch_size)

    def admit(self, waiting: Sequence[Candidate], active: Sequence[Candidate], batch_length: int) -> list[Candidate]:
        """The waiting requests that join now, in the order they should be prefilled.

        ``waiting``: the queue (unprepared ones are skipped); ``active``: the requests decoding or prefilling;
        ``batch_length``: the running batch's cache length (0 when empty).
        """
        if self.policy == "static" and active:
            return []
        candidates = [job for job in waiting if job.prompt_tokens is not None]
        rows = len(active)
        per_user: Counter[str] = Counter(job.fairness_key for job in active)
        longest = max([batch_length, *(job.prompt_tokens or 0 for job in active)])
        chosen: list[Candidate] = []
        while candidates and rows < self.row_limit:
            job = min(candidates, key=lambda c: (per_user[c.fairness_key], c.sequence))
            length = max(longest, job.prompt_tokens or 0)
            if rows and (rows + 1) * length > self.max_batch_tokens:
                break
            candidates.remove(job)
            chosen.append(job)
            per_user[job.fairness_key] += 1
            rows += 1
            longest = length
        return chosen

    def prefill_units(self, decoding_rows: int) -> int | None:
        """Prefill units (one image, or one text chunk) allowed before the next step; None: all of them."""
        return 1 if decoding_rows else None

    def cap_rows(self, rows: int) -> None:
        """After an out-of-memory error: at most ``rows`` rows until the batch drains."""
        self._oom_rows = max(1, min(rows, self.row_limit))

    def drained(self) -> None:
        """The batch is empty: the full budget applies again."""
        self._oom_rows = None

    def describe(self) -> dict[str, object]:
        return {
            "scheduling": self.policy,
            "prefill_chunk_tokens": self.chunk_tokens or 0,
            "row_limit": self.row_limit,
        }


def fairness_key(user: str | None, job_id: str | None, request_id: str) -> str:
    """Who a request counts against: its asker, else the journal job it serves, else itself."""
    return user or (f"job:{job_id}" if job_id else f"request:{request_id}")
