"""The embedded state store: one SQLite file (WAL) under the data directory.

Threading: one connection, used only from one dedicated worker thread. Every async method hands its SQL to that
thread (``loop.run_in_executor``), so the event loop never waits for the disk; calls run one after another in the
order they were made.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` (the default). Every commit is in the WAL file (the
operating system's page cache) before the call returns, so an accepted job survives ``kill -9``, a crash or a deploy
of the process. The WAL is fsync'ed only at checkpoints, so a power loss or kernel panic can lose the last few
commits (the file stays consistent). ``PEEKBOT_STORE_SYNCHRONOUS=full`` fsyncs every commit and closes that gap
too, at the price of one disk flush per accepted message.

Several processes may open the same file: writes that must hand something to exactly one of them (``claim``,
``accept``, ``take_over``, a token ``take``) run in ``BEGIN IMMEDIATE`` transactions, which take the write lock
before reading; ``busy_timeout`` makes the others wait for it instead of failing. ``mark`` with an owner is one
``UPDATE … WHERE owner = ?``: a process that lost a job's lease cannot finish it.

Schema: ``PRAGMA user_version`` is the schema version; ``MIGRATIONS`` lists the steps in order and ``open()``
applies the missing ones, each in its own transaction. A file written by a newer version is refused.

Search: page text goes into an FTS5 table (``unicode61 remove_diacritics 2``, ranked by bm25). unicode61 reads a
run of Chinese or Japanese characters as one token, so such runs are indexed as overlapping character bigrams
(plus the run's last character) and questions are cut the same way: ``预算`` finds ``第三季度预算表``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from bot.stats import percentile
from bot.store.base import (
    AnswerCache,
    AuditLog,
    AuditRecord,
    AuditSummary,
    ControlStore,
    ConversationStore,
    DedupeStore,
    DocumentIndex,
    DocumentInfo,
    Job,
    JobJournal,
    JobState,
    PageHit,
    StoredFile,
    StoredTurn,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNFINISHED = (JobState.ACCEPTED.value, JobState.RUNNING.value)
_FINISHED = (JobState.ANSWERED.value, JobState.FAILED.value)
LATENCY_OUTCOMES = ("answered",)
"""Outcomes whose latency goes into the summary's mean and p95 (refusals and cache hits would hide slow answers)."""


class StoreSchemaError(RuntimeError):
    """The state file cannot be used by this version (written by a newer one, or SQLite lacks FTS5)."""


# --- schema -------------------------------------------------------------------------------------------------------

Migration = tuple[str, tuple[str, ...]]

MIGRATIONS: tuple[Migration, ...] = (
    (
        "dedupe keys and the job journal",
        (
            "CREATE TABLE dedupe_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX dedupe_keys_expiry ON dedupe_keys (expires_at)",
            """CREATE TABLE jobs (
                job_id TEXT PRIMARY KEY,
                platform TEXT NOT NULL,
                conversation TEXT NOT NULL,
                user TEXT NOT NULL,
                message TEXT NOT NULL,
                state TEXT NOT NULL,
                reply_state TEXT NOT NULL DEFAULT '{}',
                attempts INTEGER NOT NULL DEFAULT 0,
                owner TEXT NOT NULL DEFAULT '',
                lease_until REAL NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                error TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX jobs_unfinished ON jobs (lease_until) WHERE state IN ('accepted', 'running')",
            "CREATE INDEX jobs_updated ON jobs (updated_at)",
        ),
    ),
    (
        "conversations, answer cache and audit",
        (
            "CREATE TABLE conversations (conversation TEXT PRIMARY KEY, last_seen REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX conversations_last_seen ON conversations (last_seen)",
            """CREATE TABLE turns (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation TEXT NOT NULL REFERENCES conversations (conversation) ON DELETE CASCADE,
                role TEXT NOT NULL,
                text TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX turns_conversation ON turns (conversation, id)",
            """CREATE TABLE conversation_files (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation TEXT NOT NULL REFERENCES conversations (conversation) ON DELETE CASCADE,
                content_hash TEXT NOT NULL,
                file_ref TEXT NOT NULL,
                created_at REAL NOT NULL,
                UNIQUE (conversation, content_hash)
            )""",
            """CREATE TABLE answers (
                conversation TEXT NOT NULL REFERENCES conversations (conversation) ON DELETE CASCADE,
                key TEXT NOT NULL,
                answer TEXT NOT NULL,
                expires_at REAL NOT NULL,
                PRIMARY KEY (conversation, key)
            ) WITHOUT ROWID""",
            "CREATE INDEX answers_expiry ON answers (expires_at)",
            """CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                job_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                user TEXT NOT NULL,
                conversation TEXT NOT NULL,
                image_hashes TEXT NOT NULL,
                question_chars INTEGER NOT NULL,
                answer_chars INTEGER NOT NULL,
                latency_s REAL NOT NULL,
                outcome TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX audit_created ON audit (created_at)",
            "CREATE INDEX audit_user ON audit (user, created_at)",
        ),
    ),
    (
        "documents, pages, full-text search and the transcription cache",
        (
            """CREATE TABLE documents (
                document_id TEXT PRIMARY KEY,
                page_count INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID""",
            """CREATE TABLE conversation_documents (
                conversation TEXT NOT NULL REFERENCES conversations (conversation) ON DELETE CASCADE,
                document_id TEXT NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                file_ref TEXT NOT NULL,
                added_at REAL NOT NULL,
                PRIMARY KEY (conversation, document_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX conversation_documents_document ON conversation_documents (document_id)",
            """CREATE TABLE pages (
                document_id TEXT NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
                page INTEGER NOT NULL,
                text TEXT NOT NULL,
                page_hash TEXT NOT NULL,
                source TEXT NOT NULL,
                created_at REAL NOT NULL,
                UNIQUE (document_id, page)
            )""",
            "CREATE INDEX pages_hash ON pages (page_hash)",
            "CREATE VIRTUAL TABLE pages_fts USING fts5 (body, tokenize = 'unicode61 remove_diacritics 2')",
            """CREATE TRIGGER pages_fts_delete AFTER DELETE ON pages BEGIN
                DELETE FROM pages_fts WHERE rowid = old.rowid;
            END""",
            """CREATE TABLE transcriptions (
                page_hash TEXT PRIMARY KEY,
                text TEXT NOT NULL,
                created_at REAL NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    (
        "shared controls (pause flag, rate-limit buckets) and each user's unfinished jobs",
        (
            "CREATE TABLE controls (name TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL) WITHOUT ROWID",
            """CREATE TABLE token_buckets (
                name TEXT PRIMARY KEY,
                tokens REAL NOT NULL,
                updated_at REAL NOT NULL,
                full_at REAL NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX token_buckets_full ON token_buckets (full_at)",
            "CREATE INDEX jobs_user_unfinished ON jobs (user) WHERE state IN ('accepted', 'running')",
        ),
    ),
    (
        "turns name their chat message (deleted and recalled messages leave the history)",
        (
            "ALTER TABLE turns ADD COLUMN message_id TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX turns_message ON turns (conversation, message_id) WHERE message_id != ''",
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def apply_migrations(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema of ``conn`` (autocommit mode) up to ``target``; one transaction per step.

    Safe when several processes open the file at once: each step re-reads the version under the write lock.
    Returns the version reached.
    """
    if target > SCHEMA_VERSION:
        raise ValueError(f"schema version {target} is unknown (latest is {SCHEMA_VERSION})")
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"the state file has schema version {version}, newer than this peekbot understands "
                    f"({SCHEMA_VERSION}); upgrade peekbot or point PEEKBOT_DATA_DIR elsewhere"
                )
            if version >= target:
                conn.execute("COMMIT")
                return version
            title, statements = MIGRATIONS[version]
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            log.info("state store: migrated schema to v%d (%s)", version + 1, title)
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# --- text search helpers ------------------------------------------------------------------------------------------

_CJK_RUN = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
_WORD = re.compile(r"\w+")
MAX_QUERY_TERMS = 48
SNIPPET_CHARS = 160
SNIPPET_OCCURRENCES_PER_TERM = 50


def _cjk_tokens(run: str) -> list[str]:
    """Overlapping bigrams of a CJK run, plus its last character (so one-character questions find it too)."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)] + [run[-1]]


def index_text(text: str) -> str:
    """The form of page text the FTS table indexes: CJK runs become space-separated bigrams."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(_cjk_tokens(m.group())) + " ", text)


def query_terms(text: str) -> list[str]:
    """Search terms of a free-text question: words, and bigrams of CJK runs (a lone CJK character stays)."""
    terms: list[str] = []
    position = 0
    for match in _CJK_RUN.finditer(text):
        terms.extend(_WORD.findall(text[position : match.start()]))
        run = match.group()
        terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        position = match.end()
    terms.extend(_WORD.findall(text[position:]))
    unique = list(dict.fromkeys(t.casefold() for t in terms))
    return unique[:MAX_QUERY_TERMS]


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression for free text: every term quoted, ORed; None when nothing is searchable.

    Only word characters survive, so FTS5 syntax (quotes, ``*``, ``NEAR(``, ``-``, ``:``, ``^``) cannot reach the
    parser. A lone CJK character is a prefix query, so it also finds the bigrams it starts.
    """
    parts = []
    for term in query_terms(text):
        quoted = '"' + term.replace('"', '""') + '"'
        parts.append(quoted + "*" if _CJK_RUN.fullmatch(term) and len(term) == 1 else quoted)
    return " OR ".join(parts) if parts else None


def make_snippet(text: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around the tightest stretch where the most (and longest) terms occur.

    Each distinct term counts its length, so "Kestrel turbine" outweighs "the" and "is". The start of the page when
    no term occurs.
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    folded = flat.casefold()
    occurrences: list[tuple[int, int, str]] = []  # (start, end, term)
    for term in terms:
        found = folded.find(term)
        for _ in range(SNIPPET_OCCURRENCES_PER_TERM):
            if found < 0:
                break
            occurrences.append((found, found + len(term), term))
            found = folded.find(term, found + 1)
    occurrences.sort()
    # Slide a window over the occurrences; score = total length of the distinct terms inside it.
    counts: dict[str, int] = {}
    score, best_score, best_span = 0, 0, (0, 0)
    last = 0
    for first, (start, _, _) in enumerate(occurrences):
        while last < len(occurrences) and occurrences[last][1] <= start + width:
            term = occurrences[last][2]
            counts[term] = counts.get(term, 0) + 1
            score += len(term) if counts[term] == 1 else 0
            last += 1
        span = (start, max(end for _, end, _ in occurrences[first:last]))
        if score > best_score or (score == best_score and span[1] - span[0] < best_span[1] - best_span[0]):
            best_score, best_span = score, span  # the most terms, then the tightest stretch
        term = occurrences[first][2]
        counts[term] -= 1
        score -= len(term) if counts[term] == 0 else 0
    begin = 0
    if best_score:  # centre the matched stretch in the window
        begin = max(0, min((best_span[0] + best_span[1] - width) // 2, len(flat) - width))
    end = min(len(flat), begin + width)
    return ("…" if begin > 0 else "") + flat[begin:end].strip() + ("…" if end < len(flat) else "")


# --- the store ----------------------------------------------------------------------------------------------------


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        platform=row["platform"],
        conversation=row["conversation"],
        user=row["user"],
        message=row["message"],
        state=JobState(row["state"]),
        reply_state=json.loads(row["reply_state"] or "{}"),
        attempts=row["attempts"],
        owner=row["owner"],
        lease_until=row["lease_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        error=row["error"],
    )


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


class _Database:
    """The one connection and the one worker thread that uses it."""

    def __init__(
        self, path: Path, synchronous: Literal["normal", "full"], busy_timeout_s: float, clock: Callable[[], float]
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock
        self.version = 0
        self.journal_mode = "?"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peekbot-store")
        try:
            await self.run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL. Two processes opening a new file at once can make SQLite refuse the switch at once
        (``database is locked``, without calling the busy handler): retry until the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).upper()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self.journal_mode = self._enable_wal(conn)
            if self.journal_mode != "WAL":
                log.warning("state store: %s cannot use WAL (journal mode %s)", self.path, self.journal_mode)
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.synchronous == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys = ON")
            try:
                self.version = apply_migrations(conn)
            except sqlite3.OperationalError as exc:
                if "fts5" in str(exc):
                    raise StoreSchemaError(f"this Python's SQLite lacks FTS5, which the store needs: {exc}") from exc
                raise
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            await self.run(self._close_sync)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is None:
            return
        try:
            conn.execute("PRAGMA optimize")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # another process may hold the file; the WAL stays valid
            log.warning("state store: checkpoint at close failed: %s", exc)
        finally:
            conn.close()

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; only to be used on the worker thread."""
        if self._conn is None:
            raise RuntimeError("the state store is not open")
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread."""
        if self._executor is None:
            raise RuntimeError("the state store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction (write lock first) on the worker thread."""
        return await self.run(self._in_transaction, fn)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda: self.conn.execute(sql, params).fetchall())


class _SQLitePart:
    """One part of the store; all parts share the database."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def _clock(self) -> float:
        return self._database.clock()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._database.run(fn, *args)

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._database.transaction(fn)

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._database.query(sql, params)


def _touch(conn: sqlite3.Connection, conversation: str, now: float) -> None:
    """Mark a conversation active (created when new); retention counts from its last activity."""
    conn.execute(
        "INSERT INTO conversations (conversation, last_seen) VALUES (?, ?) "
        "ON CONFLICT (conversation) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)",
        (conversation, now),
    )


def _forget(conn: sqlite3.Connection, conversations: Sequence[str]) -> None:
    """Delete conversations (turns, files, documents, answers follow by cascade) and documents no one links to."""
    if not conversations:
        return
    conn.execute(
        f"DELETE FROM conversations WHERE conversation IN ({_placeholders(len(conversations))})",
        list(conversations),
    )
    conn.execute("DELETE FROM documents WHERE document_id NOT IN (SELECT document_id FROM conversation_documents)")


def _scope_condition(scope: str) -> tuple[str, tuple[str, ...]]:
    """SQL matching the conversation ``scope`` and those under it (``scope:…``); everything for an empty scope."""
    if not scope:
        return "1", ()
    # Conversations under the scope sort between "scope:" and "scope;" (";" follows ":"), so the index serves it.
    return "(conversation = ? OR (conversation >= ? AND conversation < ?))", (scope, f"{scope}:", f"{scope};")


def _unlink_documents(conn: sqlite3.Connection, conversation: str, keep: set[str]) -> int:
    """Unlink the conversation's documents not in ``keep``; delete what no conversation uses any more (documents,
    their pages and search entries, the transcriptions of those pages)."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT document_id FROM conversation_documents WHERE conversation = ?", (conversation,)
        )
        if row[0] not in keep
    ]
    if not ids:
        return 0
    conn.executemany(
        "DELETE FROM conversation_documents WHERE conversation = ? AND document_id = ?",
        [(conversation, document_id) for document_id in ids],
    )
    orphans = [
        document_id
        for document_id in ids
        if conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM conversation_documents WHERE document_id = ?)", (document_id,)
        ).fetchone()[0]
    ]
    if orphans:
        marks = _placeholders(len(orphans))
        transcribed = [
            row[0]
            for row in conn.execute(
                f"SELECT DISTINCT page_hash FROM pages WHERE source = 'transcribed' AND document_id IN ({marks})",
                orphans,
            )
        ]
        conn.execute(f"DELETE FROM documents WHERE document_id IN ({marks})", orphans)  # pages follow by cascade
        conn.executemany(
            "DELETE FROM transcriptions WHERE page_hash = ? AND NOT EXISTS (SELECT 1 FROM pages WHERE page_hash = ?)",
            [(page_hash, page_hash) for page_hash in transcribed],
        )
    return len(ids)


class _Dedupe(_SQLitePart):
    """Dedupe keys with an expiry time."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        now = self._clock()

        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO dedupe_keys (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE dedupe_keys.expires_at <= ?",
                (key, now + ttl_s, now),
            )
            return cursor.rowcount == 1

        return await self._transaction(claim)

    async def expire_keys(self) -> int:
        """Forget expired dedupe keys (and expired cached answers); returns how many keys."""
        now = self._clock()

        def expire(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM dedupe_keys WHERE expires_at <= ?", (now,)).rowcount
            conn.execute("DELETE FROM answers WHERE expires_at <= ?", (now,))
            return removed

        return await self._transaction(expire)


class _Journal(_SQLitePart):
    """The job journal: accepted questions, their state and who holds their lease."""

    async def accept(self, job: Job, owner: str, lease_s: float) -> bool:
        now = self._clock()
        row = (
            job.job_id,
            job.platform,
            job.conversation,
            job.user,
            job.message,
            JobState(job.state).value,
            json.dumps(dict(job.reply_state)),
            job.attempts,
            owner,
            now + lease_s,
            job.created_at or now,
            now,
            job.error,
        )

        def accept(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO jobs (job_id, platform, conversation, user, message, state, reply_state, attempts, "
                "owner, lease_until, created_at, updated_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (job_id) DO NOTHING",
                row,
            )
            return cursor.rowcount == 1

        return await self._transaction(accept)

    async def mark(
        self,
        job_id: str,
        state: JobState,
        *,
        owner: str | None = None,
        reply_state: dict[str, str] | None = None,
        error: str = "",
    ) -> bool:
        now = self._clock()
        encoded = json.dumps(dict(reply_state)) if reply_state is not None else None
        sql = (
            "UPDATE jobs SET state = ?, updated_at = ?, error = ?, reply_state = COALESCE(?, reply_state) "
            "WHERE job_id = ?"
        )
        params: tuple[Any, ...] = (JobState(state).value, now, error, encoded, job_id)
        if owner is not None:  # one statement: the owner check and the change cannot be separated
            sql += f" AND owner = ? AND state IN {_UNFINISHED!r}"
            params += (owner,)

        def mark(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        if await self._transaction(mark):
            return True
        if owner is None:
            log.warning("state store: mark %s on unknown job %s", JobState(state).value, job_id)
        else:
            log.info("state store: job %s is no longer %s's; not marked %s", job_id, owner, JobState(state).value)
        return False

    async def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> set[str]:
        if not job_ids:
            return set()
        ids = list(dict.fromkeys(job_ids))
        until = self._clock() + lease_s

        def renew(conn: sqlite3.Connection) -> set[str]:
            sql = f"UPDATE jobs SET lease_until = ? WHERE job_id = ? AND owner = ? AND state IN {_UNFINISHED!r}"
            return {job_id for job_id in ids if conn.execute(sql, (until, job_id, owner)).rowcount == 1}

        return await self._transaction(renew)

    async def take_over(self, owner: str, lease_s: float, *, include_live: bool = False) -> list[Job]:
        now = self._clock()
        until = now + lease_s

        def take(conn: sqlite3.Connection) -> list[Job]:
            # Under BEGIN IMMEDIATE no other process can change these rows between the SELECT and the UPDATE.
            sql = f"SELECT * FROM jobs WHERE state IN {_UNFINISHED!r}"
            params: tuple[Any, ...] = ()
            if not include_live:
                sql += " AND lease_until <= ?"
                params = (now,)
            jobs = [_job_from_row(row) for row in conn.execute(sql + " ORDER BY created_at, job_id", params)]
            conn.executemany(
                "UPDATE jobs SET owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE job_id = ?",
                [(owner, until, now, job.job_id) for job in jobs],
            )
            return [
                replace(job, owner=owner, lease_until=until, attempts=job.attempts + 1, updated_at=now) for job in jobs
            ]

        jobs = await self._transaction(take)
        if jobs:
            log.info("state store: %s took over %d unfinished job(s)", owner, len(jobs))
        return jobs

    async def get(self, job_id: str) -> Job | None:
        rows = await self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    async def unfinished(self) -> list[Job]:
        rows = await self._query(f"SELECT * FROM jobs WHERE state IN {_UNFINISHED!r} ORDER BY created_at, job_id")
        return [_job_from_row(row) for row in rows]

    async def pending_for(self, user: str) -> int:
        rows = await self._query(f"SELECT COUNT(*) FROM jobs WHERE user = ? AND state IN {_UNFINISHED!r}", (user,))
        return int(rows[0][0])

    async def expire_jobs(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return await self._transaction(
            lambda conn: (
                conn.execute(f"DELETE FROM jobs WHERE state IN {_FINISHED!r} AND updated_at < ?", (cutoff,)).rowcount
            )
        )


class _Conversations(_SQLitePart):
    """Turns and files of conversations, with their last activity for retention."""

    async def add_turn(self, conversation: str, role: str, text: str, *, message_id: str = "") -> None:
        now = self._clock()

        def add(conn: sqlite3.Connection) -> None:
            _touch(conn, conversation, now)
            conn.execute(
                "INSERT INTO turns (conversation, role, text, created_at, message_id) VALUES (?, ?, ?, ?, ?)",
                (conversation, role, text, now, message_id),
            )

        await self._transaction(add)

    async def turns(self, conversation: str, limit: int) -> list[StoredTurn]:
        if limit <= 0:
            return []
        rows = await self._query(
            "SELECT role, text, created_at FROM turns WHERE conversation = ? ORDER BY id DESC LIMIT ?",
            (conversation, limit),
        )
        return [StoredTurn(row["role"], row["text"], row["created_at"]) for row in reversed(rows)]

    async def add_file(self, conversation: str, file_ref: str, content_hash: str) -> None:
        now = self._clock()

        def add(conn: sqlite3.Connection) -> None:
            _touch(conn, conversation, now)
            conn.execute(
                "INSERT INTO conversation_files (conversation, content_hash, file_ref, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (conversation, content_hash) DO NOTHING",
                (conversation, content_hash, file_ref, now),
            )

        await self._transaction(add)

    async def files(self, conversation: str, limit: int) -> list[StoredFile]:
        if limit <= 0:
            return []
        rows = await self._query(
            "SELECT file_ref, content_hash, created_at FROM conversation_files WHERE conversation = ? "
            "ORDER BY id DESC LIMIT ?",
            (conversation, limit),
        )
        return [StoredFile(row["file_ref"], row["content_hash"], row["created_at"]) for row in reversed(rows)]

    async def reset(self, conversation: str) -> bool:
        def reset(conn: sqlite3.Connection) -> bool:
            had_any = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM turns WHERE conversation = ?1) "
                "OR EXISTS (SELECT 1 FROM conversation_files WHERE conversation = ?1) "
                "OR EXISTS (SELECT 1 FROM conversation_documents WHERE conversation = ?1) "
                "OR EXISTS (SELECT 1 FROM answers WHERE conversation = ?1)",
                (conversation,),
            ).fetchone()[0]
            _forget(conn, [conversation])
            return bool(had_any)

        return await self._transaction(reset)

    async def forget_message(self, conversation: str, message_id: str) -> int:
        if not message_id:
            return 0

        def forget(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM turns WHERE conversation = ? AND message_id = ?", (conversation, message_id)
            ).rowcount
            conn.execute("DELETE FROM answers WHERE conversation = ?", (conversation,))
            return removed

        return await self._transaction(forget)

    async def forget_files(self, scope: str, withdrawn: Callable[[str], bool]) -> list[str]:
        def forget(conn: sqlite3.Connection) -> list[str]:
            where, params = _scope_condition(scope)
            files = conn.execute(f"SELECT id, conversation, file_ref FROM conversation_files WHERE {where}", params)
            doomed = [(row["id"], row["conversation"]) for row in files if withdrawn(row["file_ref"])]
            affected = {conversation for _, conversation in doomed}
            documents = conn.execute(f"SELECT conversation, file_ref FROM conversation_documents WHERE {where}", params)
            affected.update(row["conversation"] for row in documents if withdrawn(row["file_ref"]))
            conn.executemany("DELETE FROM conversation_files WHERE id = ?", [(row_id,) for row_id, _ in doomed])
            for conversation in sorted(affected):
                keep = {
                    row[0]
                    for row in conn.execute(
                        "SELECT content_hash FROM conversation_files WHERE conversation = ?", (conversation,)
                    )
                }
                _unlink_documents(conn, conversation, keep)
                conn.execute("DELETE FROM answers WHERE conversation = ?", (conversation,))
            return sorted(affected)

        return await self._transaction(forget)

    async def expire_conversations(self, older_than_s: float) -> int:
        """Forget conversations idle for longer than ``older_than_s``, and old cached transcriptions no page uses."""
        cutoff = self._clock() - older_than_s

        def expire(conn: sqlite3.Connection) -> int:
            idle = [
                row[0] for row in conn.execute("SELECT conversation FROM conversations WHERE last_seen < ?", (cutoff,))
            ]
            _forget(conn, idle)
            conn.execute(
                "DELETE FROM transcriptions WHERE created_at < ? "
                "AND page_hash NOT IN (SELECT page_hash FROM pages WHERE source = 'transcribed')",
                (cutoff,),
            )
            return len(idle)

        return await self._transaction(expire)


class _Documents(_SQLitePart):
    """Documents, their pages' text (full-text indexed) and the page transcription cache."""

    async def add_document(self, info: DocumentInfo) -> None:
        now = self._clock()

        def add(conn: sqlite3.Connection) -> None:
            _touch(conn, info.conversation, now)
            conn.execute(
                "INSERT INTO documents (document_id, page_count) VALUES (?, ?) "
                "ON CONFLICT (document_id) DO UPDATE SET page_count = MAX(page_count, excluded.page_count)",
                (info.document_id, info.page_count),
            )
            conn.execute(
                "INSERT INTO conversation_documents (conversation, document_id, name, file_ref, added_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation, document_id) DO NOTHING",
                (info.conversation, info.document_id, info.name, info.file_ref, now),
            )

        await self._transaction(add)

    async def documents(self, conversation: str) -> list[DocumentInfo]:
        rows = await self._query(
            "SELECT cd.document_id, cd.name, cd.file_ref, d.page_count, "
            "(SELECT COUNT(*) FROM pages p WHERE p.document_id = cd.document_id) AS indexed "
            "FROM conversation_documents cd JOIN documents d ON d.document_id = cd.document_id "
            "WHERE cd.conversation = ? ORDER BY cd.added_at, cd.document_id",
            (conversation,),
        )
        return [
            DocumentInfo(
                document_id=row["document_id"],
                conversation=conversation,
                name=row["name"],
                page_count=row["page_count"],
                file_ref=row["file_ref"],
                indexed_pages=row["indexed"],
            )
            for row in rows
        ]

    async def put_page(self, document_id: str, page: int, text: str, *, page_hash: str, source: str) -> None:
        """Store (or replace) a page's text; a ``transcribed`` page also fills the transcription cache."""
        now = self._clock()
        indexed = index_text(text)

        def put(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO documents (document_id) VALUES (?) ON CONFLICT DO NOTHING", (document_id,))
            found = conn.execute(
                "SELECT rowid FROM pages WHERE document_id = ? AND page = ?", (document_id, page)
            ).fetchone()
            if found is None:
                rowid = conn.execute(
                    "INSERT INTO pages (document_id, page, text, page_hash, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (document_id, page, text, page_hash, source, now),
                ).lastrowid
            else:
                rowid = found[0]
                conn.execute(
                    "UPDATE pages SET text = ?, page_hash = ?, source = ?, created_at = ? WHERE rowid = ?",
                    (text, page_hash, source, now, rowid),
                )
                conn.execute("DELETE FROM pages_fts WHERE rowid = ?", (rowid,))
            conn.execute("INSERT INTO pages_fts (rowid, body) VALUES (?, ?)", (rowid, indexed))
            if source == "transcribed":
                conn.execute(
                    "INSERT INTO transcriptions (page_hash, text, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (page_hash) DO UPDATE SET text = excluded.text, created_at = excluded.created_at",
                    (page_hash, text, now),
                )

        await self._transaction(put)

    async def indexed_pages(self, document_id: str) -> set[int]:
        rows = await self._query("SELECT page FROM pages WHERE document_id = ?", (document_id,))
        return {row[0] for row in rows}

    async def transcription(self, page_hash: str) -> str | None:
        rows = await self._query("SELECT text FROM transcriptions WHERE page_hash = ?", (page_hash,))
        return rows[0][0] if rows else None

    async def search(self, document_ids: Sequence[str], query: str, limit: int) -> list[PageHit]:
        """Pages of ``document_ids`` matching any term of ``query``, best bm25 first, with a snippet each."""
        expression = fts_query(query)
        ids = list(dict.fromkeys(document_ids))
        if expression is None or not ids or limit <= 0:
            return []
        terms = query_terms(query)

        def search() -> list[PageHit]:
            rows = self._db.execute(
                "SELECT p.document_id, p.page, p.text, bm25(pages_fts) AS rank FROM pages_fts "
                "JOIN pages p ON p.rowid = pages_fts.rowid "
                f"WHERE pages_fts MATCH ? AND p.document_id IN ({_placeholders(len(ids))}) "
                "ORDER BY rank, p.document_id, p.page LIMIT ?",
                (expression, *ids, limit),
            )
            return [
                PageHit(row["document_id"], row["page"], -float(row["rank"]), make_snippet(row["text"], terms))
                for row in rows
            ]

        return await self._run(search)

    async def forget_documents(self, conversation: str, keep: Collection[str]) -> int:
        kept = set(keep)
        return await self._transaction(lambda conn: _unlink_documents(conn, conversation, kept))


class _Audit(_SQLitePart):
    """One record per question: no content, only lengths, hashes, latency and outcome."""

    async def record(self, record: AuditRecord) -> None:
        values = (
            record.job_id,
            record.platform,
            record.user,
            record.conversation,
            json.dumps(list(record.image_hashes)),
            record.question_chars,
            record.answer_chars,
            record.latency_s,
            record.outcome,
            record.created_at or self._clock(),
        )
        await self._transaction(
            lambda conn: conn.execute(
                "INSERT INTO audit (job_id, platform, user, conversation, image_hashes, question_chars, "
                "answer_chars, latency_s, outcome, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                values,
            )
        )

    async def summary(self, since: float, top: int = 5) -> AuditSummary:
        """Questions since ``since``: counts by outcome and platform, top users, latency of answered ones."""

        def summarise() -> AuditSummary:
            conn = self._db
            by_outcome = dict(
                conn.execute(
                    "SELECT outcome, COUNT(*) FROM audit WHERE created_at >= ? GROUP BY outcome ORDER BY 2 DESC, 1",
                    (since,),
                ).fetchall()
            )
            by_platform = dict(
                conn.execute(
                    "SELECT platform, COUNT(*) FROM audit WHERE created_at >= ? GROUP BY platform ORDER BY 2 DESC, 1",
                    (since,),
                ).fetchall()
            )
            top_users = [
                (row[0], row[1])
                for row in conn.execute(
                    "SELECT user, COUNT(*) FROM audit WHERE created_at >= ? GROUP BY user ORDER BY 2 DESC, 1 LIMIT ?",
                    (since, max(0, top)),
                )
            ]
            latencies = [
                row[0]
                for row in conn.execute(
                    "SELECT latency_s FROM audit WHERE created_at >= ? "
                    f"AND outcome IN ({_placeholders(len(LATENCY_OUTCOMES))})",
                    (since, *LATENCY_OUTCOMES),
                )
            ]
            return AuditSummary(
                since=since,
                questions=sum(by_outcome.values()),
                by_outcome=by_outcome,
                by_platform=by_platform,
                top_users=top_users,
                mean_latency_s=sum(latencies) / len(latencies) if latencies else None,
                p95_latency_s=percentile(latencies, 0.95),
            )

        return await self._run(summarise)

    async def count_for_user(self, user: str, since: float, outcomes: Sequence[str] = ("answered", "cached")) -> int:
        wanted = list(outcomes)
        if not wanted:
            return 0
        rows = await self._query(
            "SELECT COUNT(*) FROM audit WHERE user = ? AND created_at >= ? "
            f"AND outcome IN ({_placeholders(len(wanted))})",
            (user, since, *wanted),
        )
        return int(rows[0][0])

    async def expire_audit(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return await self._transaction(
            lambda conn: conn.execute("DELETE FROM audit WHERE created_at < ?", (cutoff,)).rowcount
        )


class _Cache(_SQLitePart):
    """Answers to identical questions on identical files, per conversation, with an expiry time."""

    async def get_answer(self, conversation: str, key: str) -> str | None:
        rows = await self._query(
            "SELECT answer FROM answers WHERE conversation = ? AND key = ? AND expires_at > ?",
            (conversation, key, self._clock()),
        )
        return rows[0][0] if rows else None

    async def put_answer(self, conversation: str, key: str, answer: str, ttl_s: float) -> None:
        now = self._clock()

        def put(conn: sqlite3.Connection) -> None:
            _touch(conn, conversation, now)
            conn.execute(
                "INSERT INTO answers (conversation, key, answer, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation, key) DO UPDATE SET answer = excluded.answer, "
                "expires_at = excluded.expires_at",
                (conversation, key, answer, now + ttl_s),
            )

        await self._transaction(put)


class _Controls(_SQLitePart):
    """Small shared values (the pause flag) and token buckets (rate limits), kept across restarts."""

    async def get(self, name: str) -> str | None:
        rows = await self._query(
            "SELECT value FROM controls WHERE name = ? AND (expires_at IS NULL OR expires_at > ?)",
            (name, self._clock()),
        )
        return str(rows[0][0]) if rows else None

    async def put(self, name: str, value: str | None, ttl_s: float | None = None) -> None:
        expires_at = None if ttl_s is None else self._clock() + ttl_s

        def put(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute("DELETE FROM controls WHERE name = ?", (name,))
                return
            conn.execute(
                "INSERT INTO controls (name, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (name, value, expires_at),
            )

        await self._transaction(put)

    async def take(self, bucket: str, rate_per_s: float, burst: int) -> float:
        """One token from ``bucket``; a bucket that has refilled completely is the same as none (its row goes)."""
        capacity = float(max(int(burst), 1))
        if rate_per_s <= 0:
            return 0.0
        now = self._clock()

        def take(conn: sqlite3.Connection) -> float:
            conn.execute("DELETE FROM token_buckets WHERE full_at <= ?", (now,))
            row = conn.execute("SELECT tokens, updated_at FROM token_buckets WHERE name = ?", (bucket,)).fetchone()
            tokens = capacity
            if row is not None:
                tokens = min(capacity, row[0] + max(now - row[1], 0.0) * rate_per_s)
            if tokens < 1.0:
                return (1.0 - tokens) / rate_per_s
            tokens -= 1.0
            conn.execute(
                "INSERT INTO token_buckets (name, tokens, updated_at, full_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at, "
                "full_at = excluded.full_at",
                (bucket, tokens, now, now + (capacity - tokens) / rate_per_s),
            )
            return 0.0

        return await self._transaction(take)


class SQLiteStore:
    """The whole ``bot.store.base.Store`` in one SQLite file; its parts share one connection and worker thread.

    ``SQLiteStore(path)`` does no I/O; ``await open()`` creates or migrates the file; ``await close()`` checkpoints
    the WAL and closes it. ``clock`` (seconds since the epoch) is for tests.

    ``single_process`` (default True) tells the application that no other process answers from this file, so the
    jobs left unfinished in it were this bot's own before a restart and can be resumed at once instead of after
    their leases run out. Several processes sharing one file still hand each job to one of them (``take_over``).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        single_process: bool = True,
    ) -> None:
        self.path = Path(path)
        self.single_process = single_process
        self._database = _Database(self.path, synchronous, busy_timeout_s, clock)
        self.dedupe: DedupeStore = _Dedupe(self._database)
        self.jobs: JobJournal = _Journal(self._database)
        self.conversations: ConversationStore = _Conversations(self._database)
        self.documents: DocumentIndex = _Documents(self._database)
        self.audit: AuditLog = _Audit(self._database)
        self.cache: AnswerCache = _Cache(self._database)
        self.controls: ControlStore = _Controls(self._database)

    async def open(self) -> None:
        if self._database.is_open:
            return
        await self._database.open()
        log.info("state store: %s", self.describe())

    async def close(self) -> None:
        await self._database.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (0 before ``open()``)."""
        return self._database.version

    def describe(self) -> str:
        mode = self._database.journal_mode if self._database.journal_mode != "?" else "WAL"
        return f"SQLite at {self.path} ({mode}, schema v{self._database.version or SCHEMA_VERSION})"
