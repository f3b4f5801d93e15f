"""Test-only launcher: ``peekbot run`` whose model worker hangs for good on a question containing :data:`MARKER`.

It stands in for a question that freezes the model (a kernel that never returns): generation blocks on the worker
thread, after writing the file named by ``$HANG_SIGNAL_FILE`` so that the test knows. Everything else is the real
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
    engine_class: Any, signal_file: Path | None = None, release: threading.Event | None = None
) -> None:
    """Patch ``engine_class._generate``: a batch with a :data:`MARKER` question blocks until ``release`` is set."""
    original = engine_class._generate

    def generate(self: Any, jobs: list[Any]) -> None:
        if any(MARKER in job.request.question for job in jobs):
            if signal_file is not None:
                signal_file.write_text(",".join(job.request.request_id for job in jobs))
            (release or threading.Event()).wait()  # without ``release``: forever
        original(self, jobs)

    engine_class._generate = generate


def main() -> int:
    from bot.cli import main as peekbot
    from inference.transformers_engine import TransformersEngine

    signal_file = os.environ.get("HANG_SIGNAL_FILE")
    make_generation_hang(TransformersEngine, Path(signal_file) if signal_file else None)
    return peekbot(["run"])


if __name__ == "__main__":
    sys.exit(main())
