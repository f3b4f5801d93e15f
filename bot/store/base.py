"""The state store's interface: dedupe keys, the job journal, conversations, documents, audit, cache, controls,
ratings and per-channel instructions.

One embedded SQLite file (``bot.store.sqlite``) implements all of it; a shared store for several replicas
(``bot.store.redis``) implements the parts replicas must agree on (dedupe, jobs, conversations, cache, controls,
ratings, instructions) and keeps the rest in the local SQLite file. Every method is async; implementations never
block the event loop.
Nothing here stores image bytes or file contents: only hashes, page text and message metadata.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

logger = logging.getLogger(__name__)


class JobState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    ANSWERED = "answered"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.ANSWERED, JobState.FAILED)


@dataclass(slots=True)
class Job:
    """One accepted question (or command) in the journal.

    ``message`` is the serialised ``IncomingMessage`` (bot.store.codec), enough to answer it again after a
    restart: files are fetched again from the platform. ``reply_state`` is what the adapter needs to keep
    editing the same reply (e.g. the placeholder's id); it is opaque to the core.
    """

    job_id: str
    platform: str
    conversation: str
    user: str
    message: str
    state: JobState = JobState.ACCEPTED
    reply_state: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    owner: str = ""
    lease_until: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str = ""


class DedupeStore(Protocol):
    async def claim(self, key: str, ttl_s: float) -> bool:
        """Atomically remember ``key`` for ``ttl_s``; False when it was already there (a duplicate)."""

    async def expire_keys(self) -> int:
        """Forget expired keys; returns how many."""


class JobJournal(Protocol):
    async def accept(self, job: Job, owner: str, lease_s: float) -> bool:
        """Insert a new job leased to ``owner``; False when a job with that id exists (a duplicate)."""

    async def mark(
        self,
        job_id: str,
        state: JobState,
        *,
        owner: str | None = None,
        reply_state: dict[str, str] | None = None,
        error: str = "",
    ) -> bool:
        """Move a job to ``state`` (running / answered / failed); ``reply_state`` replaces the stored one.

        With ``owner`` it happens only while the job is unfinished and leased to ``owner``, atomically (a process
        that lost its lease to another cannot finish the job, nor overwrite the new owner's reply state).
        Returns whether the job was changed.
        """

    async def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend ``owner``'s leases on unfinished jobs; returns the ids still ours (unfinished and owned by us).

        A job missing from the answer was taken over by another process (or finished, or expired): its owner
        must leave its reply alone.
        """

    async def take_over(self, owner: str, lease_s: float, *, include_live: bool = False) -> list[Job]:
        """Claim unfinished jobs whose lease ran out (all unfinished jobs when ``include_live``).

        Each returned job is now leased to ``owner`` with ``attempts`` incremented. A job is handed to one
        caller only, even with several processes calling at once.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def unfinished(self) -> list[Job]: ...

    async def pending_for(self, user: str) -> int:
        """How many unfinished jobs (accepted or running, on any replica) ``user`` has."""

    async def expire_jobs(self, older_than_s: float) -> int:
        """Delete finished jobs older than ``older_than_s``; returns how many."""


@dataclass(frozen=True, slots=True)
class StoredTurn:
    role: str  # "user" | "assistant"
    text: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file seen in a conversation: the serialised FileRef (bot.store.codec) and its content hash."""

    file_ref: str
    content_hash: str
    created_at: float


class ConversationStore(Protocol):
    async def add_turn(self, conversation: str, role: str, text: str, *, message_id: str = "") -> None:
        """Append a turn; ``message_id`` names the chat message it belongs to (a question and its answer share it)."""

    async def turns(self, conversation: str, limit: int) -> list[StoredTurn]:
        """The last ``limit`` turns, oldest first."""

    async def add_file(self, conversation: str, file_ref: str, content_hash: str) -> None:
        """Remember a file posted in the conversation (idempotent per content hash)."""

    async def files(self, conversation: str, limit: int) -> list[StoredFile]:
        """The newest ``limit`` files, oldest first."""

    async def reset(self, conversation: str) -> bool:
        """Forget turns, files, documents and cached answers of the conversation; True if there was any."""

    async def forget_message(self, conversation: str, message_id: str) -> int:
        """A message was deleted: forget its turns (the question and the answer to it) and the conversation's cached
        answers. Returns how many turns went."""

    async def forget_files(self, scope: str, withdrawn: Callable[[str], bool]) -> list[str]:
        """Files were deleted: forget the files ``withdrawn(file_ref)`` picks, with the documents made from them and
        the cached answers, in the conversation ``scope`` and every conversation under it (``scope`` + ``:``…);
        an empty ``scope`` means everywhere. Returns the conversations that had such files."""

    async def expire_conversations(self, older_than_s: float) -> int:
        """Delete conversations idle for longer than ``older_than_s``; returns how many."""


@dataclass(frozen=True, slots=True)
class PageHit:
    document_id: str
    page: int  # 1-based
    score: float
    snippet: str = ""


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    document_id: str  # the content hash of the file
    conversation: str
    name: str
    page_count: int
    file_ref: str
    indexed_pages: int = 0


class DocumentIndex(Protocol):
    async def add_document(self, info: DocumentInfo) -> None:
        """Register a document in a conversation (idempotent)."""

    async def documents(self, conversation: str) -> list[DocumentInfo]: ...

    async def put_page(self, document_id: str, page: int, text: str, *, page_hash: str, source: str) -> None:
        """Store a page's searchable text; ``source`` is ``text-layer``, ``transcribed`` or ``extracted`` (a part of
        an Office or text file: slide, sheet block, section, page of text, numbered like pages)."""

    async def put_pages(self, document_id: str, pages: Sequence[tuple[int, str, str]], *, source: str) -> None:
        """``put_page`` for many ``(page, text, page_hash)`` at once, in one transaction."""

    async def indexed_pages(self, document_id: str) -> set[int]: ...

    async def page_texts(self, document_id: str, pages: Sequence[int]) -> dict[int, str]:
        """The stored text of those of ``pages`` that are indexed."""

    async def transcription(self, page_hash: str) -> str | None:
        """A cached model transcription of a page image with this content hash, from any document."""

    async def search(self, document_ids: Sequence[str], query: str, limit: int) -> list[PageHit]:
        """Full-text search (SQLite FTS5, bm25) over the pages of the given documents, best first."""

    async def forget_documents(self, conversation: str, keep: Collection[str]) -> int:
        """Unlink the conversation's documents except those whose id is in ``keep`` (the content hashes of the files
        it still has; image sets are never kept), then delete the documents, page text and transcriptions no
        conversation uses any more. Returns how many documents were unlinked."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One question's outcome. No content: lengths and hashes only."""

    job_id: str
    platform: str
    user: str
    conversation: str
    image_hashes: tuple[str, ...]
    question_chars: int
    answer_chars: int
    latency_s: float
    outcome: str  # answered | failed | refused | cached | rate_limited …
    created_at: float

    @classmethod
    def event(cls, *, job_id: str, platform: str, user: str, conversation: str, outcome: str) -> AuditRecord:
        """A record of something that is not an answer (a withdrawal, a change of a channel's instructions): who,
        where, what and now; no hashes, no lengths."""
        return cls(job_id, platform, user, conversation, (), 0, 0, 0.0, outcome, time.time())


ADMIN_EVENTS = ("instructions_set", "instructions_cleared")
"""Audit outcomes that record an admin's change, not a question: left out of the question counts."""


@dataclass(frozen=True, slots=True)
class AuditSummary:
    since: float
    questions: int
    by_outcome: dict[str, int]
    by_platform: dict[str, int]
    top_users: list[tuple[str, int]]
    mean_latency_s: float | None
    p95_latency_s: float | None


class AuditLog(Protocol):
    async def record(self, record: AuditRecord) -> None: ...

    async def summary(self, since: float, top: int = 5) -> AuditSummary: ...

    async def count_for_user(self, user: str, since: float, outcomes: Sequence[str] = ("answered", "cached")) -> int:
        """Questions of ``user`` since ``since`` (daily quota)."""

    async def expire_audit(self, older_than_s: float) -> int: ...


async def keep_audit(audit: AuditLog, record: AuditRecord) -> None:
    """Write ``record``; a store failure is logged, never raised: auditing never fails what it records."""
    try:
        await audit.record(record)
    except Exception:
        logger.exception("could not write the audit record (%s)", record.outcome)


@dataclass(frozen=True, slots=True)
class Rating:
    """One person's rating of one answer. No content: the job, who, the rating, the reason chosen, when."""

    job_id: str
    platform: str
    user: str
    rating: str  # helpful | not_helpful
    reason: str = ""
    created_at: float = 0.0


class RatingStore(Protocol):
    """Ratings of answers: one per person per answer, a later one replaces the earlier."""

    async def rate(self, rating: Rating) -> str | None:
        """Record ``rating``, replacing the same user's earlier rating of the same job; returns the rating it
        replaced (None for a first rating)."""

    async def ratings(self, since: float) -> list[Rating]:
        """Ratings given (or last changed) since ``since``, oldest first."""

    async def expire_ratings(self, older_than_s: float) -> int:
        """Delete ratings older than ``older_than_s``; returns how many."""


class AnswerCache(Protocol):
    async def get_answer(self, conversation: str, key: str) -> str | None: ...

    async def put_answer(self, conversation: str, key: str, answer: str, ttl_s: float) -> None: ...


class ControlStore(Protocol):
    """Small shared values that every replica obeys (the pause flag) and per-user token buckets (rate limits)."""

    async def get(self, name: str) -> str | None:
        """The value stored under ``name``; None when unset or expired."""

    async def put(self, name: str, value: str | None, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``name`` (for ``ttl_s``, or until changed); None deletes it."""

    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float:
        """Take one token from the bucket (created full: ``burst`` tokens, refilled at ``rate_per_s``), atomically.

        Returns 0.0 when a token was taken, else the seconds until the next one (nothing is taken then). The store
        keeps time itself, so replicas on different hosts share one bucket per name.
        """


@dataclass(frozen=True, slots=True)
class ChannelInstructions:
    """The instructions an admin gave for one channel or chat: added to the system prompt of every question there."""

    channel: str
    """The conversation key without its thread (``platform:workspace:channel``)."""
    text: str
    set_by: str
    """Who set them (``platform:user``)."""
    set_at: float


class InstructionStore(Protocol):
    """Per-channel instructions, kept until an admin clears them (not forgotten with a channel's conversations)."""

    async def get_instructions(self, channel: str) -> ChannelInstructions | None: ...

    async def set_instructions(self, channel: str, text: str, set_by: str) -> ChannelInstructions:
        """Store ``text`` for ``channel`` (replacing what was there), stamped with the store's clock."""

    async def clear_instructions(self, channel: str) -> bool:
        """Remove the channel's instructions; True when there were some."""


class Store(Protocol):
    """The whole store: one object per process, opened at start and closed at stop."""

    dedupe: DedupeStore
    jobs: JobJournal
    conversations: ConversationStore
    documents: DocumentIndex
    audit: AuditLog
    cache: AnswerCache
    controls: ControlStore
    instructions: InstructionStore
    ratings: RatingStore

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the state lives, for ``status`` and logs (never a password)."""
