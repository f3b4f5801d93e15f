"""The engine interface the core talks to. Implementations live in ``inference/``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image

answering_job: ContextVar[str | None] = ContextVar("answering_job", default=None)
"""The journal job (``platform:message_id``) the current task answers; requests made in it carry its id."""


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """An earlier turn of the conversation.

    ``images`` (user turns) is how many of the request's images were first shown with this turn: a request's images
    are its history's pictures, turn by turn, then the question's own; the model reads each picture where it was
    sent, so a follow-up's prompt begins with the earlier question's prompt (``inference.prefix_cache``).
    ``stored_at`` is when the store kept the turn (0: unknown); the engines ignore it.
    """

    role: Literal["user", "assistant"]
    text: str
    images: int = 0
    stored_at: float = field(default=0.0, compare=False)


@dataclass(slots=True)
class GenerationRequest:
    """One question: normalised RGB images (already within the pixel budget) plus text."""

    question: str
    images: list[Image] = field(default_factory=list)
    """Every picture of the prompt in order: those of the history's user turns (``ChatTurn.images`` each), then the
    question's."""
    history: list[ChatTurn] = field(default_factory=list)
    system_prompt: str | None = None
    instructions: str = ""
    """The admins' instructions for the channel asked in (``bot.instructions``): every engine adds them to the
    system prompt, after its own rules, so that they win (``inference.prompts.system_text``)."""
    max_new_tokens: int | None = None
    timeout_s: float | None = None
    min_new_tokens: int | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    job_id: str | None = field(default_factory=answering_job.get)
    """The journal job this request serves (taken from :data:`answering_job` when the request is made)."""
    user: str | None = None
    """Who asked (``platform:user``): the engine shares its batch fairly between askers."""
    image_hashes: list[str] = field(default_factory=list)
    """Content hash of each image, in order (the engine's image-embedding cache key; empty: the engine hashes the
    pixels itself)."""

    @property
    def question_images(self) -> int:
        """How many of ``images`` (the last ones) go with the question; raises ``ValueError`` when the history's
        turns claim more pictures than the request has."""
        earlier = sum(turn.images for turn in self.history)
        if earlier > len(self.images):
            raise ValueError(f"the history places {earlier} pictures but the request has {len(self.images)}")
        return len(self.images) - earlier


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    queue_wait_s: float = 0.0
    time_to_first_token_s: float | None = None
    total_s: float = 0.0


class AnswerStream(Protocol):
    """Text deltas of one answer, in order. Raises an ``EngineError`` if the request fails."""

    request_id: str
    queue_position: int
    """Requests ahead of this one when it was submitted (0: it joins the next batch)."""
    usage: Usage

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def text(self) -> str:
        """Wait for and return the whole answer."""

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the next step."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    model: str
    device: str
    ready: bool
    queue_depth: int
    queue_limit: int
    in_flight: int
    requests_by_outcome: dict[str, int]
    generated_tokens: int
    tokens_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    memory: dict[str, float] = field(default_factory=dict)
    queue_wait_p50_s: float | None = None
    queue_wait_p95_s: float | None = None
    time_to_first_token_p50_s: float | None = None
    time_to_first_token_p95_s: float | None = None
    batches: int = 0
    mean_batch_size: float = 0.0
    oom_events: int = 0
    latency_histogram: dict[str, int] = field(default_factory=dict)
    """Answered requests of the last hour by latency: cumulative counts per upper bound in seconds (``+Inf``: all)."""
    decode_steps: int = 0
    mean_step_rows: float = 0.0
    """Rows per decoding step (how full the batch ran); ``mean_batch_size`` counts the rows per running batch."""
    step_p50_s: float | None = None
    step_p95_s: float | None = None
    """Decoding steps of the last minute: the time of one step (choosing every row's token and the forward pass)."""
    prefill_unit_p95_s: dict[str, float] = field(default_factory=dict)
    """The last minute's prefill units run between steps, by kind: ``vision`` (one picture through the encoder) and
    ``text`` (one prompt chunk). A running answer's gap between two tokens is about one step plus one unit."""
    image_cache: dict[str, float] = field(default_factory=dict)
    """The image-embedding cache: ``entries``, ``bytes``, ``budget_bytes``, ``hits``, ``misses``, ``hit_rate``
    (empty where the engine keeps none)."""
    prefix_cache: dict[str, float] = field(default_factory=dict)
    """The prompt-prefix cache's figures (``inference.prefix_cache``): entries, bytes, hits, saved_tokens…"""


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What :meth:`Engine.cleanup` did."""

    skipped: str | None = None
    """Why nothing was cleaned up (e.g. the model runs on a remote server); None when the cleanup ran."""
    figures: dict[str, Any] = field(default_factory=dict)
    """``emptied_cache`` (bool), ``reason`` (why the GPU cache was emptied or kept), ``gc_collected``, and the memory
    figures ``before`` and ``after`` (``host_rss_bytes``, ``cuda_reserved_bytes`` …)."""


class Engine(Protocol):
    in_process: bool
    """True when the model runs on a worker thread of this process (restarting the process heals a hung worker);
    False when a remote server runs it (a restart would not bring the server back)."""

    async def start(self) -> None:
        """Load the model and warm it up."""

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake; the running batch may finish within ``timeout_s`` (None: the configured bound)."""

    def submit(self, request: GenerationRequest) -> AnswerStream:
        """Queue a request. Raises ``Busy`` at once when the queue is full."""

    def stats(self) -> EngineStats: ...

    async def ping(self, timeout_s: float) -> float:
        """A liveness check, answered by what generates: the model's worker thread between decoding steps, or the remote
        server. Returns the round trip in seconds; raises ``TimeoutError`` without an answer in time and an
        ``EngineError`` when the engine cannot be reached (not running, server down or misconfigured)."""

    async def cleanup(
        self, *, force: bool, fragmentation_threshold: float, unused_reserved_bytes: int, timeout_s: float
    ) -> CleanupReport:
        """Free memory the model no longer uses, between decoding steps: ``gc.collect()``, then the GPU cache is emptied
        when fragmentation or unused reserved bytes pass the thresholds (or ``force``). ``TimeoutError`` when the
        worker did not get to it within ``timeout_s``; an engine with nothing to clean says so in
        :attr:`CleanupReport.skipped`."""

    def running_requests(self) -> list[GenerationRequest]:
        """The requests the model is generating right now (the running batch), not those waiting for it."""

    def describe(self) -> dict[str, Any]: ...
