"""Per-channel instructions set by admins, kept until cleared."""

from __future__ import annotations

import sqlite3

from bot.store.base import ChannelInstructions
from bot.store.sqlite.database import SQLitePart


class SQLiteInstructions(SQLitePart):
    """One row per channel (``channel_instructions``); a conversation's expiry or reset leaves it alone."""

    async def get_instructions(self, channel: str) -> ChannelInstructions | None:
        rows = await self._query(
            "SELECT channel, text, set_by, set_at FROM channel_instructions WHERE channel = ?", (channel,)
        )
        if not rows:
            return None
        row = rows[0]
        return ChannelInstructions(channel=row[0], text=row[1], set_by=row[2], set_at=float(row[3]))

    async def set_instructions(self, channel: str, text: str, set_by: str) -> ChannelInstructions:
        stored = ChannelInstructions(channel=channel, text=text, set_by=set_by, set_at=self._clock())
        await self._transaction(
            lambda conn: conn.execute(
                "INSERT INTO channel_instructions (channel, text, set_by, set_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (channel) DO UPDATE SET text = excluded.text, set_by = excluded.set_by, "
                "set_at = excluded.set_at",
                (stored.channel, stored.text, stored.set_by, stored.set_at),
            )
        )
        return stored

    async def clear_instructions(self, channel: str) -> bool:
        def clear(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM channel_instructions WHERE channel = ?", (channel,)).rowcount > 0

        return await self._transaction(clear)
