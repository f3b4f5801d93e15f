"""Small shared values (the pause flag) and token buckets (rate limits), kept across restarts."""

from __future__ import annotations

import sqlite3

from bot.store.sqlite.database import SQLitePart


class SQLiteControls(SQLitePart):
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
