"""Test-only launcher: ``peekbot run`` whose model worker hangs for good on a question containing :data:`MARKER`.

It stands in for a question that freezes the model (a kernel that never returns): the worker
thread blocks, after writing the file named by ``$HANG_SIGNAL_FILE`` so that the test knows. Everything else is the real
``peekbot run``. Usage: ``python -m tests.support.hang_launcher``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

MARKER = "FREEZE-THE-MODEL"


def make_generation_hang(
    runner_class: Any, signal_file: Path | None = None, release: threading.Event | None = None
) -> None:
    """Patch ``runner_class._prefill`` (the worker's batch): once a :data:`MARKER` question was admitted, the worker
    blocks until ``release`` is set (without ``release``: forever)."""
    original = runner_class._prefill

    def prefill(self: Any) -> None:
        poisoned = [job for job in self.joining if MARKER in job.request.question]
        if poisoned:
            if signal_file is not None:
                signal_file.write_text(",".join(job.request.request_id for job in poisoned))
            (release or threading.Event()).wait()
        original(self)

    runner_class._prefill = prefill


def main() -> int:
    from bot.cli import main as peekbot
    from inference.execution import BatchRunner

    signal_file = os.environ.get("HANG_SIGNAL_FILE")
    make_generation_hang(BatchRunner, Path(signal_file) if signal_file else None)
    return peekbot(["run"])


if __name__ == "__main__":
    sys.exit(main())
