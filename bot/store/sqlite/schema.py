"""The schema of the state file and its migrations.

``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` lists the steps in order and
:func:`apply_migrations` applies the missing ones, each in its own transaction. A file written by a newer version is
refused. A new step goes at the end of :data:`MIGRATIONS`; a released step never changes: the upgrade test
(``tests/store/test_upgrade.py``) opens a file written by the previous release.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)


class StoreSchemaError(RuntimeError):
    """The state file cannot be used by this version (written by a newer one, or SQLite lacks FTS5)."""


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
    (
        "ratings of answers (one per person per answer, no content)",
        (
            """CREATE TABLE ratings (
                job_id TEXT NOT NULL,
                user TEXT NOT NULL,
                platform TEXT NOT NULL,
                rating TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                created_at REAL NOT NULL,
                PRIMARY KEY (job_id, user)
            ) WITHOUT ROWID""",
            "CREATE INDEX ratings_created ON ratings (created_at)",
        ),
    ),
    (
        "per-channel instructions set by admins",
        (
            """CREATE TABLE channel_instructions (
                channel TEXT PRIMARY KEY,
                text TEXT NOT NULL,
                set_by TEXT NOT NULL,
                set_at REAL NOT NULL
            ) WITHOUT ROWID""",
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
