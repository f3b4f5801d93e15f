"""The state store: dedupe keys, job journal, conversations, documents, audit and answer cache.

``open_store(settings)`` picks the implementation from ``PEEKBOT_STORE_URL``: unset or ``sqlite:///path`` gives the
embedded SQLite file (``state.db`` in ``PEEKBOT_DATA_DIR`` by default); ``redis://…`` gives the shared Redis store
for several replicas, which keeps its per-replica parts in that same local SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.store.base import Store

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = ["STATE_FILE", "Store", "open_store", "sqlite_path"]

STATE_FILE = "state.db"


def sqlite_path(store_url: str | None, data_dir: Path) -> Path | None:
    """The SQLite file a store URL names: ``data_dir/state.db`` for None, the path of ``sqlite:///…``.

    ``sqlite:///relative/state.db`` is relative to ``data_dir``; ``sqlite:////abs/state.db`` is absolute. Returns
    None for a URL of another kind.
    """
    if not store_url:
        return data_dir / STATE_FILE
    if not store_url.startswith("sqlite:///"):
        return None
    raw = store_url.removeprefix("sqlite:///")
    if not raw:
        return data_dir / STATE_FILE
    path = Path(raw).expanduser()
    return path if path.is_absolute() else data_dir / path


def open_store(settings: Settings) -> Store:
    """The store ``PEEKBOT_STORE_URL`` selects, not yet opened (``await store.open()``)."""
    from bot.store.sqlite import SQLiteStore

    core = settings.core
    data_dir = Path(core.data_dir).expanduser()
    url = (core.store_url or "").strip() or None
    synchronous = core.store_synchronous
    path = sqlite_path(url, data_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStore(path, synchronous=synchronous)
    assert url is not None
    if url.startswith(("redis://", "rediss://")):
        from bot.store.redis import RedisStore

        data_dir.mkdir(parents=True, exist_ok=True)
        return RedisStore(
            url,
            SQLiteStore(data_dir / STATE_FILE, synchronous=synchronous),
            finished_job_ttl_s=core.dedupe_ttl_s,  # a finished job also dedupes redeliveries of its message
            conversation_ttl_s=core.conversation_retention_days * 86400.0,
        )
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(
        f"PEEKBOT_STORE_URL must be sqlite:///path/to/state.db (three slashes) or redis://host:6379/0, "
        f"not a {scheme!r} URL"
    )
