"""Documents of conversations, their pages' text (full-text indexed) and the page transcription cache."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from bot.store.base import DocumentInfo, PageHit
from bot.store.sqlite.database import SQLitePart, placeholders
from bot.store.sqlite.retention import touch, unlink_documents
from bot.store.sqlite.search import fts_query, index_text, make_snippet, query_terms


class SQLiteDocuments(SQLitePart):
    """Documents, their pages' text (full-text indexed) and the page transcription cache."""

    async def add_document(self, info: DocumentInfo) -> None:
        now = self._clock()

        def add(conn: sqlite3.Connection) -> None:
            touch(conn, info.conversation, now)
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
        await self.put_pages(document_id, [(page, text, page_hash)], source=source)

    async def put_pages(self, document_id: str, pages: Sequence[tuple[int, str, str]], *, source: str) -> None:
        """``put_page`` for many pages in one transaction (a long sheet's parts are stored at once)."""
        now = self._clock()
        indexed = [(page, text, page_hash, index_text(text)) for page, text, page_hash in pages]

        def put(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO documents (document_id) VALUES (?) ON CONFLICT DO NOTHING", (document_id,))
            for page, text, page_hash, body in indexed:
                _put_page(conn, document_id, page, text, page_hash, body, source, now)

        await self._transaction(put)

    async def indexed_pages(self, document_id: str) -> set[int]:
        rows = await self._query("SELECT page FROM pages WHERE document_id = ?", (document_id,))
        return {row[0] for row in rows}

    async def page_texts(self, document_id: str, pages: Sequence[int]) -> dict[int, str]:
        wanted = sorted(set(pages))
        texts: dict[int, str] = {}
        for start in range(0, len(wanted), 500):  # within SQLite's limit of bound parameters
            chunk = wanted[start : start + 500]
            rows = await self._query(
                f"SELECT page, text FROM pages WHERE document_id = ? AND page IN ({placeholders(len(chunk))})",
                (document_id, *chunk),
            )
            texts.update((row[0], row[1]) for row in rows)
        return texts

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
                f"WHERE pages_fts MATCH ? AND p.document_id IN ({placeholders(len(ids))}) "
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
        return await self._transaction(lambda conn: unlink_documents(conn, conversation, kept))


def _put_page(
    conn: sqlite3.Connection, document_id: str, page: int, text: str, page_hash: str, body: str, source: str,
    now: float,
) -> None:
    found = conn.execute("SELECT rowid FROM pages WHERE document_id = ? AND page = ?", (document_id, page)).fetchone()
    if found is None:
        rowid = conn.execute(
            "INSERT INTO pages (document_id, page, text, page_hash, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (document_id, page, text, page_hash, source, now),
        ).lastrowid
    else:
        rowid = found[0]
        conn.execute(
            "UPDATE pages SET text = ?, page_hash = ?, source = ?, created_at = ? WHERE rowid = ?",
            (text, page_hash, source, now, rowid),
        )
        conn.execute("DELETE FROM pages_fts WHERE rowid = ?", (rowid,))
    conn.execute("INSERT INTO pages_fts (rowid, body) VALUES (?, ?)", (rowid, body))
    if source == "transcribed":
        conn.execute(
            "INSERT INTO transcriptions (page_hash, text, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (page_hash) DO UPDATE SET text = excluded.text, created_at = excluded.created_at",
            (page_hash, text, now),
        )
