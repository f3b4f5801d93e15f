"""What a conversation's activity records and what forgetting a conversation or a document takes with it.

Shared by the parts that write per-conversation rows (turns, files, documents, cached answers): retention counts
from a conversation's last activity, and deleting a conversation or unlinking a document leaves no orphans behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bot.store.sqlite.database import placeholders


def touch(conn: sqlite3.Connection, conversation: str, now: float) -> None:
    """Mark a conversation active (created when new); retention counts from its last activity."""
    conn.execute(
        "INSERT INTO conversations (conversation, last_seen) VALUES (?, ?) "
        "ON CONFLICT (conversation) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)",
        (conversation, now),
    )


def forget(conn: sqlite3.Connection, conversations: Sequence[str]) -> None:
    """Delete conversations (turns, files, documents, answers follow by cascade) and documents no one links to."""
    if not conversations:
        return
    conn.execute(
        f"DELETE FROM conversations WHERE conversation IN ({placeholders(len(conversations))})",
        list(conversations),
    )
    conn.execute("DELETE FROM documents WHERE document_id NOT IN (SELECT document_id FROM conversation_documents)")


def scope_condition(scope: str) -> tuple[str, tuple[str, ...]]:
    """SQL matching the conversation ``scope`` and those under it (``scope:…``); everything for an empty scope."""
    if not scope:
        return "1", ()
    # Conversations under the scope sort between "scope:" and "scope;" (";" follows ":"), so the index serves it.
    return "(conversation = ? OR (conversation >= ? AND conversation < ?))", (scope, f"{scope}:", f"{scope};")


def unlink_documents(conn: sqlite3.Connection, conversation: str, keep: set[str]) -> int:
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
        marks = placeholders(len(orphans))
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
