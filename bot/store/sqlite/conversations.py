"""A conversation's turns and files, and the answers cached for it (all deleted with the conversation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from bot.store.base import StoredFile, StoredTurn
from bot.store.sqlite.database import SQLitePart
from bot.store.sqlite.retention import forget, scope_condition, touch, unlink_documents


class SQLiteConversations(SQLitePart):
    """Turns and files of conversations, with their last activity for retention."""

    async def add_turn(self, conversation: str, role: str, text: str, *, message_id: str = "") -> None:
        now = self._clock()

        def add(conn: sqlite3.Connection) -> None:
            touch(conn, conversation, now)
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
            touch(conn, conversation, now)
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
            forget(conn, [conversation])
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
            where, params = scope_condition(scope)
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
                unlink_documents(conn, conversation, keep)
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
            forget(conn, idle)
            conn.execute(
                "DELETE FROM transcriptions WHERE created_at < ? "
                "AND page_hash NOT IN (SELECT page_hash FROM pages WHERE source = 'transcribed')",
                (cutoff,),
            )
            return len(idle)

        return await self._transaction(expire)


class SQLiteAnswerCache(SQLitePart):
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
            touch(conn, conversation, now)
            conn.execute(
                "INSERT INTO answers (conversation, key, answer, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation, key) DO UPDATE SET answer = excluded.answer, "
                "expires_at = excluded.expires_at",
                (conversation, key, answer, now + ttl_s),
            )

        await self._transaction(put)
