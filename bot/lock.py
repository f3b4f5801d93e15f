"""One bot process per state directory: the SQLite journal hands every unfinished job to the next start."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DataDirBusy(RuntimeError):
    """Another peekbot process already runs with this state directory."""


@contextmanager
def exclusive_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on ``data_dir/peekbot.lock`` for the life of the process (released on exit or crash)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "peekbot.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise DataDirBusy(
                f"Another peekbot ({holder}) is already running with the state directory {data_dir}. "
                "Stop it first, or give this one its own PEEKBOT_DATA_DIR (several replicas share state through "
                "PEEKBOT_STORE_URL=redis://…)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)
