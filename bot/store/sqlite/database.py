"""The one connection to the state file and the one worker thread that uses it, shared by every store part.

Every async method hands its SQL to that thread (``loop.run_in_executor``), so the event loop never waits for the
disk; calls run one after another in the order they were made. Writes that must hand something to exactly one
process run in ``BEGIN IMMEDIATE`` transactions (:meth:`Database.transaction`), which take the write lock before
reading; ``busy_timeout`` makes other processes wait for it instead of failing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from bot.store.sqlite.schema import StoreSchemaError, apply_migrations

log = logging.getLogger(__name__)

T = TypeVar("T")


def placeholders(count: int) -> str:
    """``?,?,…`` for an ``IN (…)`` list of ``count`` values."""
    return ",".join("?" * count)


class Database:
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


class SQLitePart:
    """One part of the store; all parts share the database."""

    def __init__(self, database: Database) -> None:
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
