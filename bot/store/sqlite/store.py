"""The whole ``bot.store.base.Store`` in one SQLite file: the parts, sharing one connection and worker thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from bot.store.base import (
    AnswerCache,
    AuditLog,
    ControlStore,
    ConversationStore,
    DedupeStore,
    DocumentIndex,
    InstructionStore,
    JobJournal,
    RatingStore,
)
from bot.store.sqlite.audit import SQLiteAudit
from bot.store.sqlite.controls import SQLiteControls
from bot.store.sqlite.conversations import SQLiteAnswerCache, SQLiteConversations
from bot.store.sqlite.database import Database
from bot.store.sqlite.documents import SQLiteDocuments
from bot.store.sqlite.instructions import SQLiteInstructions
from bot.store.sqlite.jobs import SQLiteDedupe, SQLiteJournal
from bot.store.sqlite.ratings import SQLiteRatings
from bot.store.sqlite.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)


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
        self._database = Database(self.path, synchronous, busy_timeout_s, clock)
        self.dedupe: DedupeStore = SQLiteDedupe(self._database)
        self.jobs: JobJournal = SQLiteJournal(self._database)
        self.conversations: ConversationStore = SQLiteConversations(self._database)
        self.documents: DocumentIndex = SQLiteDocuments(self._database)
        self.audit: AuditLog = SQLiteAudit(self._database)
        self.cache: AnswerCache = SQLiteAnswerCache(self._database)
        self.controls: ControlStore = SQLiteControls(self._database)
        self.instructions: InstructionStore = SQLiteInstructions(self._database)
        self.ratings: RatingStore = SQLiteRatings(self._database)

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
