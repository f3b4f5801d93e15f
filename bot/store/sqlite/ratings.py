"""Ratings of answers: one row per person per answer (job id, platform, user, rating, reason, time), no content."""

from __future__ import annotations

import sqlite3

from bot.store.base import Rating
from bot.store.sqlite.database import SQLitePart


class SQLiteRatings(SQLitePart):
    """One row per (job, user); a later rating replaces the earlier one and takes its time."""

    async def rate(self, rating: Rating) -> str | None:
        created_at = rating.created_at or self._clock()

        def rate(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT rating FROM ratings WHERE job_id = ? AND user = ?", (rating.job_id, rating.user)
            ).fetchone()
            conn.execute(
                "INSERT INTO ratings (job_id, user, platform, rating, reason, created_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (job_id, user) DO UPDATE SET platform = excluded.platform, rating = excluded.rating, "
                "reason = excluded.reason, created_at = excluded.created_at",
                (rating.job_id, rating.user, rating.platform, rating.rating, rating.reason, created_at),
            )
            return None if row is None else str(row[0])

        return await self._transaction(rate)

    async def ratings(self, since: float) -> list[Rating]:
        rows = await self._query(
            "SELECT job_id, platform, user, rating, reason, created_at FROM ratings WHERE created_at >= ? "
            "ORDER BY created_at, job_id, user",
            (since,),
        )
        return [Rating(*row) for row in rows]

    async def expire_ratings(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return await self._transaction(
            lambda conn: conn.execute("DELETE FROM ratings WHERE created_at < ?", (cutoff,)).rowcount
        )
