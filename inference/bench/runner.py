"""Runs each side of the benchmark in a fresh interpreter, so that its peak RSS is its own, and collects the result.

The side's process is ``python -m inference.bench.worker``: it needs only the installed ``inference`` and ``bot``
packages (a checkout, a wheel or the container image alike), never ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from inference.bench.arguments import engine_rows, validate
from inference.bench.spec import MIN_OPEN_REQUESTS, SIDES, WORKER_TIMEOUT_S, WorkerSpec
from inference.bench.summary import summarise

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the ``inference`` package: the checkout, or site-packages when installed."""
PASSED_ON = "random_arch device concurrency requests max_new_tokens max_batch_tokens max_pixels seed extras threads"
"""The options each side's :class:`WorkerSpec` takes as they are (``max_batch_size`` defaults to the concurrency)."""


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sides ``args.mode`` names, each in a subprocess; return the JSON-able result (also to ``--json``).

    With ``--policy`` the engine side runs once per policy (static first), all on the same workload and the same
    arrival trace: ``auto`` is resolved by the static run and handed on to the others as a number.
    """
    validate(args)
    model = None if args.random_arch else (args.model or str(default_tiny_model()))
    sides = list(SIDES) if args.mode == "both" else [args.mode]
    results: dict[str, dict[str, Any]] = {}
    common = {name: getattr(args, name) for name in PASSED_ON.split()}
    common["open_requests"] = getattr(args, "open_requests", MIN_OPEN_REQUESTS)
    rate = getattr(args, "arrival_rate", None)
    if rate is not None and "engine" not in sides:
        logger.warning("bench: --arrival-rate measures the engine; --mode baseline runs no open loop")
    for side in sides:
        policies = engine_policies(getattr(args, "policy", None), rate) if side == "engine" else (None,)
        for policy in policies:
            name = side_name(side, policy, policies)
            spec = WorkerSpec(
                side=side,
                model=model,
                max_batch_size=engine_rows(args),
                policy=policy,
                arrival_rate=rate if side == "engine" else None,
                follow_ups=getattr(args, "follow_ups", 0) if name == "engine" else 0,
                **common,
            )
            logger.info("bench: running %s (%d requests, %d clients)", name, args.requests, args.concurrency)
            results[name] = run_worker(spec, timeout_s=args.worker_timeout)
            opened = results[name].get("open_loop")
            if rate == "auto" and opened:
                rate = opened["arrival_rate_per_s"]  # the same trace for every later policy
    result = summarise(results, args)
    if args.json_path is not None:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        logger.info("bench: wrote %s", args.json_path)
    return result


def engine_policies(policies: tuple[str, ...] | None, rate: float | str | None) -> tuple[str | None, ...]:
    """The policies the engine runs with, in order (None: the configured one). ``auto`` needs the static policy's
    capacity, so static runs first, added when ``--policy`` left it out."""
    if rate == "auto" and "static" not in (policies or ()):
        logger.info("bench: --arrival-rate auto: the static policy runs first to measure its capacity")
        from bot.settings import EngineSettings

        return ("static", *(policies or (EngineSettings().scheduling,)))
    return policies or (None,)


def side_name(side: str, policy: str | None, policies: tuple[str | None, ...]) -> str:
    """``baseline``; ``engine`` for the main policy (continuous when it runs, else the last one);
    ``engine_<policy>`` for the others."""
    if side != "engine" or policy is None:
        return side
    main = "continuous" if "continuous" in policies else policies[-1]
    return "engine" if policy == main else f"engine_{policy}"


def default_tiny_model() -> Path:
    """A tiny random Qwen3-VL checkpoint under the data dir, built on first use."""
    from bot.settings import CoreSettings
    from inference.tiny import build_tiny_model

    directory = CoreSettings().data_dir / "tiny-model" / "qwen3_vl"
    if not (directory / "config.json").exists():
        logger.info("bench: building a tiny random model in %s", directory)
        build_tiny_model(directory, "qwen3_vl")
    return directory


def worker_command(spec_path: Path, out_path: Path) -> list[str]:
    """The side's command line. ``-P``: the caller's directory cannot shadow the packages (a stray ``bot/``)."""
    return [sys.executable, "-P", "-m", "inference.bench.worker", "--spec", str(spec_path), "--out", str(out_path)]


def run_worker(spec: WorkerSpec, *, timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run one side in a fresh interpreter (its log goes to our stderr) and return its JSON result.

    The worker keeps the caller's working directory, so a relative ``--model`` path means the same to it.
    """
    with tempfile.TemporaryDirectory(prefix="peekbot-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(worker_command(spec_path, out_path), env=env, stdout=subprocess.DEVNULL)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"the {spec.side} benchmark worker took longer than {timeout_s:.0f} s") from None
        except BaseException:
            process.kill()
            process.wait()
            raise
        if code != 0 or not out_path.exists():
            raise RuntimeError(f"the {spec.side} benchmark worker exited with code {code} (its log is above)")
        return json.loads(out_path.read_text(encoding="utf-8"))
