"""The options of ``peekbot bench`` (and ``python -m inference.bench``) and their checks.

Importing this module loads neither torch nor PIL: the CLI builds its parser from it on every start.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.bench.random_arch import REAL_ARCHS
from inference.bench.spec import MIN_OPEN_REQUESTS, POLICIES, SIDES, WORKER_TIMEOUT_S


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse turns the error into a usage message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def arrival_rate(text: str) -> float | str:
    """An argparse type: ``auto`` or a positive number of requests per second."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a number of requests per second") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0 requests per second")
    return value


def policy_list(text: str) -> tuple[str, ...]:
    """An argparse type: scheduling policies, comma-separated (each once, static first so ``auto`` can use it)."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"use {', '.join(POLICIES)} or both, comma-separated (got {text!r})")
    return tuple(name for name in POLICIES if name in names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``peekbot bench``."""
    parser.add_argument("--concurrency", "-c", type=at_least_one, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", "-n", type=at_least_one, default=32, help="requests in total (default 32)")
    parser.add_argument(
        "--max-new-tokens", "-t", type=at_least_one, default=128, help="new tokens per request, exactly (default 128)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="HF model id or local dir (default: a tiny random model, built once)")
    source.add_argument(
        "--random-arch",
        choices=sorted(REAL_ARCHS),
        help="a real-size architecture with random bf16 weights built on the device (no download)",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: PEEKBOT_DEVICE, else auto)")
    parser.add_argument(
        "--max-batch-size", type=at_least_one, default=None,
        help="engine max batch size (default: the product's, or C if larger)",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="engine max prompt tokens per batch (default: settings)"
    )
    parser.add_argument("--max-pixels", type=int, default=None, help="pixel budget per image (default: settings)")
    parser.add_argument("--mode", choices=("both", *SIDES), default="both", help="which sides to run")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the result here")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument(
        "--threads",
        type=at_least_one,
        default=None,
        help="torch intra-op CPU threads in each side (default: PEEKBOT_CPU_THREADS, else torch's own)",
    )
    parser.add_argument(
        "--extras",
        choices=("auto", "on", "off"),
        default="auto",
        help="bandwidth / decode / 1080p TTFT probes: auto = only on CUDA",
    )
    parser.add_argument(
        "--policy",
        type=policy_list,
        default=None,
        help="engine scheduling policies to run, e.g. static,continuous (each on the same workload and arrival "
        "trace; default: PEEKBOT_SCHEDULING)",
    )
    parser.add_argument(
        "--arrival-rate",
        type=arrival_rate,
        default=None,
        help="also an open-loop run of the engine: Poisson arrivals at R requests/s (seeded), or auto = 70%% of the "
        "static policy's measured closed-loop capacity (the static policy then runs first even when --policy omits it)",
    )
    parser.add_argument(
        "--open-requests",
        type=at_least_one,
        default=MIN_OPEN_REQUESTS,
        help=f"requests in the open-loop run (default {MIN_OPEN_REQUESTS})",
    )
    parser.add_argument(
        "--follow-ups",
        type=int,
        default=0,
        help="also the follow-up workload: this many images, each asked about twice in one conversation (default 0)",
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=WORKER_TIMEOUT_S, help="seconds one side may take (default 6 h)"
    )


def validate(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first option out of range (for a namespace not built by the parser)."""
    for name in ("concurrency", "requests", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "follow_ups", 0) < 0:
        raise ValueError("--follow-ups must be 0 or more")
    for name in ("max_batch_size", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")


def engine_rows(args: argparse.Namespace) -> int:
    """The engine's row limit for a run: ``--max-batch-size``, else the product's default (``PEEKBOT_MAX_BATCH_SIZE``
    unset), or the concurrency if that is larger, so the closed loop never queues inside the engine."""
    from bot.settings import EngineSettings

    default = int(EngineSettings.model_fields["max_batch_size"].default)
    return args.max_batch_size or max(args.concurrency, default)
