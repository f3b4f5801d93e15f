"""``peekbot bench``: the batching engine against a one-request-at-a-time wrapper, on the same workload.

Two sides, each in its own process so that its peak RSS is its own:

* **baseline**: what a plain web wrapper does, one ``model.generate`` per request behind a lock, with the engine's
  own prompt building and image preprocessing;
* **engine**: ``TransformersEngine`` (max batch size defaults to the concurrency), once per scheduling policy asked
  for (``--policy static,continuous``).

Both get N requests (mixed screenshot sizes, one question each, exactly T new tokens, greedy) from C concurrent
clients. On CUDA each side also measures device copy bandwidth, the memory-bandwidth bound of one decode step,
batch-1 decode time and the time to first token of one 1080p screenshot.

One module per job:

* ``arguments``: the command-line options; ``spec``: what a side's process is told;
* ``runner``: runs each side in its own process and collects the results; ``worker``: that process;
* ``workload``: the screenshots, questions and arrival traces; ``measure``: timing requests and a side's figures;
* ``open_loop``: the open-loop run (``--arrival-rate``) and the follow-up workload (``--follow-ups``);
* ``baseline`` and ``engine_side``: the two sides; ``probes``: device figures; ``random_arch``: real-size
  architectures with random weights;
* ``summary``: ratios and each target's verdict; ``report``: the plain-text table.

Importing this package loads neither torch nor PIL (the CLI builds its parser from it on every start).
"""

from __future__ import annotations

from inference.bench.arguments import add_arguments
from inference.bench.report import format_table
from inference.bench.runner import run_bench

__all__ = ["add_arguments", "format_table", "run_bench"]
