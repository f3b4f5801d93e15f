"""The embedded state store: one SQLite file (WAL) under the data directory.

Threading: one connection, used only from one dedicated worker thread (``database``); every part hands its SQL to
that thread, so the event loop never waits for the disk.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` (the default). Every commit is in the WAL file (the
operating system's page cache) before the call returns, so an accepted job survives ``kill -9``, a crash or a deploy
of the process. The WAL is fsync'ed only at checkpoints, so a power loss or kernel panic can lose the last few
commits (the file stays consistent). ``PEEKBOT_STORE_SYNCHRONOUS=full`` fsyncs every commit and closes that gap
too, at the price of one disk flush per accepted message.

Several processes may open the same file: writes that must hand something to exactly one of them (``claim``,
``accept``, ``take_over``, a token ``take``) run in ``BEGIN IMMEDIATE`` transactions.

One module per job:

* ``database``: the connection, its worker thread and transactions; ``schema``: the tables and their migrations;
* ``search``: full-text search of page text (FTS5, CJK bigrams, snippets);
* the parts of ``bot.store.base.Store``: ``jobs`` (dedupe keys, the job journal), ``conversations`` (turns, files,
  cached answers), ``documents`` (pages and transcriptions), ``audit``, ``controls`` (pause flag, token buckets),
  ``ratings`` (answers rated helpful or not), ``instructions`` (per-channel instructions);
  ``retention``: what forgetting a conversation or a document takes with it;
* ``store``: :class:`SQLiteStore`, the parts on one database.
"""

from __future__ import annotations

from bot.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, StoreSchemaError, apply_migrations
from bot.store.sqlite.search import fts_query
from bot.store.sqlite.store import SQLiteStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "StoreSchemaError", "apply_migrations", "fts_query"]
