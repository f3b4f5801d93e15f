"""The in-process engine: one worker thread owns the model; asyncio callers get text streams.

This module is the facade implementing ``bot.engine.Engine``: lifecycle, ``submit`` and the answer streams,
cancellation and deadlines, worker tasks (``ping``, ``cleanup``, ``run_on_worker``), stats. The work itself is split
by job:

* ``inference.scheduling``: the policy: which waiting requests join the running batch, when (``continuous``: at every
  decoding step; ``static``: when the batch is empty), under which budget, in which order (fair between askers);
* ``inference.execution``: the worker's rounds: admission, prefill units between steps, join, step, leave;
* ``inference.prefill`` / ``inference.batch`` / ``inference.tokens``: one prompt's chunked prefill, the running batch
  over one cache, choosing each row's next token;
* ``inference.oom``: the out-of-memory ladder (free → fewer rows → smaller images → fail that request only; text
  already streamed is never sent twice);
* ``inference.image_cache``: the vision encoder's output per image, so a follow-up about the same screenshot skips it;
* ``inference.jobs``: each request's state, the shared queue, incremental text delivery to the streams.

Flow: ``submit`` (event loop) → bounded FIFO; image preprocessing starts at once on a separate thread, overlapping
the batch that is running → the worker thread admits requests, prefills them between decoding steps and decodes all
rows together; the new text of every row goes, every few tens of milliseconds, to its request's stream on its event
loop; rows stop at EOS, their own ``max_new_tokens``, cancellation or deadline, and leave the batch at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from bot.engine import AnswerStream, CleanupReport, EngineStats, GenerationRequest
from bot.errors import (
    Busy,
    Cancelled,
    DeadlineExceeded,
    EngineError,
    EngineUnavailable,
)
from bot.i18n import note
from bot.types import StartStop
from inference import memory
from inference.jobs import EngineJob, IncrementalDecoder, JobQueue, Outbox, post
from inference.memory import free_memory, memory_snapshot
from inference.oom import MAX_PIXEL_REDUCTIONS
from inference.stats import EngineCounters
from inference.streams import StreamEnd, TextStream

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.execution import BatchRunner
    from inference.image_cache import ImageEmbeddingCache
    from inference.loader import LoadedModel
    from inference.prefix_cache import PromptPrefixCache
    from inference.prompts import PromptBuilder
    from inference.sampling import SamplingSettings

__all__ = ["MAX_PIXEL_REDUCTIONS", "IncrementalDecoder", "TransformersEngine"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TransformersEngine(StartStop):
    """``bot.engine.Engine`` backed by a transformers model on this process's GPU (or CPU); ``async with`` starts
    and stops it."""

    in_process = True

    def __init__(self, settings: EngineSettings, *, loaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self._loaded = loaded
        self._owns_model = loaded is None
        self._prompts: PromptBuilder | None = None
        self._counters = EngineCounters()
        self._queue = JobQueue()
        self._cond = self._queue.cond
        self._tasks: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._prep_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._runner: BatchRunner | None = None
        self._image_cache: ImageEmbeddingCache | None = None
        self._prefix_cache: PromptPrefixCache | None = None
        self._sampling: SamplingSettings | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the model (unless given one), start the worker thread and warm up."""
        if self._thread is not None:
            return
        from inference.loader import configure_cuda_allocator, load_model

        configure_cuda_allocator()
        if self.settings.cpu_threads:
            import torch

            torch.set_num_threads(self.settings.cpu_threads)
        if self._loaded is None:
            self._loaded = await asyncio.to_thread(load_model, self.settings)
        self._setup()
        self._stopping = False
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="peekbot-prep")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._worker_main, args=(ready,), name="peekbot-engine", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await self._shutdown_thread(0.0)
            raise
        self._accepting = True
        logger.info("engine ready: %s", self.describe())

    def _setup(self) -> None:
        from inference.execution import BatchRunner
        from inference.image_cache import ImageEmbeddingCache, default_budget
        from inference.prefix_cache import PromptPrefixCache
        from inference.prompts import PromptBuilder
        from inference.sampling import settings_from_generation_config

        loaded = self._loaded
        assert loaded is not None
        self._prompts = PromptBuilder(
            loaded.tokenizer,
            loaded.image_processor,
            merge_size=loaded.merge_size,
            system_prompt=self.settings.system_prompt,
            min_pixels=self.settings.min_pixels,
            max_pixels=self.settings.max_pixels,
            dtype=loaded.dtype,
        )
        source = loaded.model.generation_config
        eos = source.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if loaded.tokenizer.eos_token_id is not None:
            eos_ids.add(int(loaded.tokenizer.eos_token_id))
        budget = self.settings.image_cache_bytes
        if budget is None:
            budget = default_budget(loaded.device)
        self._image_cache = ImageEmbeddingCache(budget) if budget > 0 else None
        budget = self.settings.prefix_cache_bytes
        if budget is None:
            budget = default_budget(loaded.device)
        self._prefix_cache = PromptPrefixCache(budget, loaded.name) if budget > 0 else None
        # The checkpoint's repetition penalty always; its sampling settings unless PEEKBOT_SAMPLING=greedy.
        self._sampling = settings_from_generation_config(source.to_dict(), self.settings.sampling)
        logger.info("tokens: %s (%s)", self._sampling.describe(), self._sampling.reason)
        self._runner = BatchRunner(
            loaded=loaded,
            settings=self.settings,
            prompts=self._prompts,
            queue=self._queue,
            counters=self._counters,
            finish=self._finish,
            expire=self._expire,
            eos_ids=frozenset(eos_ids),
            repetition_penalty=source.repetition_penalty or 1.0,
            image_cache=self._image_cache,
            sampling=self._sampling,
            prefix_cache=self._prefix_cache,
        )

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, let the running batch finish (bounded), fail what is left with ``EngineUnavailable``."""
        bound = self.settings.stop_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if self._thread is None:
                return
            self._accepting = False
            self._stopping = True
            waiting = list(self._queue.waiting)
            tasks, self._tasks = self._tasks, []
            self._cond.notify_all()
        for job in waiting:
            self._finish(job, "unavailable", EngineUnavailable(note("engine.shutting_down")))
        for _, future in tasks:
            self._fail_task(future)
        await self._shutdown_thread(bound)
        if self._owns_model and self._loaded is not None:
            device = self._loaded.device
            self._loaded = None
            self._prompts = None
            self._runner = None
            self._image_cache = self._prefix_cache = None
            free_memory(device)
        logger.info("engine stopped")

    async def _shutdown_thread(self, bound: float) -> None:
        thread = self._thread
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            await asyncio.to_thread(thread.join, bound)
            if thread.is_alive():
                for job in self._queue.active_now():
                    self._finish(job, "unavailable", EngineUnavailable(note("engine.shutting_down")))
                await asyncio.to_thread(thread.join, max(bound, 5.0))
                if thread.is_alive():
                    logger.error("the engine worker did not stop; leaving it behind (daemon thread)")
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=False, cancel_futures=True)
            self._prep_pool = None
        self._thread = None

    # -------------------------------------------------------------- async side

    def submit(self, request: GenerationRequest) -> AnswerStream:
        """Queue ``request``; raises ``Busy`` at once when ``queue_limit`` requests are already waiting."""
        runner = self._runner
        if not self._accepting or self._prep_pool is None or runner is None:
            raise EngineUnavailable(note("error.not_running" if not self._stopping else "engine.shutting_down"))
        loop = asyncio.get_running_loop()
        settings = self.settings
        max_new = max(1, request.max_new_tokens or settings.max_new_tokens)
        min_new = min(max(0, request.min_new_tokens or 0), max_new)
        timeout = request.timeout_s if request.timeout_s is not None else settings.request_timeout_s
        job = EngineJob(
            request,
            loop,
            max_new_tokens=max_new,
            min_new_tokens=min_new,
            timeout_s=timeout,
            max_pixels=settings.max_pixels,
        )
        with self._cond:
            depth = len(self._queue.waiting)
            if depth >= settings.queue_limit:
                self._counters.outcome("busy")
                logger.info("request %s rejected: %d waiting (limit %d)", request.request_id, depth,
                            settings.queue_limit)
                raise Busy(depth, settings.queue_limit)
            job.stream = TextStream(request.request_id, depth, job.usage, lambda: self._cancel(job))
            job.timer = loop.call_later(max(0.0, timeout), self._expire, job)
            job.prep_future = self._prep_pool.submit(runner.prepare, job)
            self._queue.waiting.append(job)
            self._cond.notify_all()
        return job.stream

    def _cancel(self, job: EngineJob) -> None:
        if self._finish(job, "cancelled", Cancelled()):
            logger.info("request %s cancelled", job.request.request_id)

    def _expire(self, job: EngineJob) -> None:
        if self._finish(job, "timeout", DeadlineExceeded(job.timeout_s)):
            logger.info("request %s exceeded its %.1f s deadline", job.request.request_id, job.timeout_s)

    async def run_on_worker(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run ``fn`` on the worker thread between decoding steps; ``TimeoutError`` if it has not finished in time."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._thread is None or self._stopping:
                raise EngineUnavailable(note("error.not_running"))
            self._tasks.append((fn, future))
            self._cond.notify_all()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the engine worker did not run the task within {timeout_s:.1f} s") from None

    async def ping(self, timeout_s: float) -> float:
        """A no-op on the worker thread between decoding steps: the round trip in seconds (``TimeoutError`` past
        ``timeout_s``: the worker hangs, or one step or prefill unit takes that long)."""
        started = time.monotonic()
        await self.run_on_worker(time.monotonic, timeout_s)
        return time.monotonic() - started

    async def cleanup(
        self, *, force: bool, fragmentation_threshold: float, unused_reserved_bytes: int, timeout_s: float
    ) -> CleanupReport:
        """``inference.memory.cleanup`` on the worker thread, between decoding steps; ``force`` also drops the
        image-embedding cache (``image_cache_released_bytes``) and the prompt-prefix cache
        (``prefix_cache_released_bytes``)."""
        loaded = self._loaded
        if loaded is None:
            return CleanupReport(skipped="the model is not loaded")
        collect = partial(memory.cleanup, loaded.device, fragmentation_threshold=fragmentation_threshold,
                          unused_reserved_bytes=unused_reserved_bytes, force=force)

        def run() -> dict[str, Any]:
            cache = self._image_cache
            released = cache.clear() if force and cache is not None else 0
            prefixes = self._prefix_cache
            dropped = prefixes.clear() if force and prefixes is not None else 0
            return {**collect(), "image_cache_released_bytes": released, "prefix_cache_released_bytes": dropped}

        return CleanupReport(figures=await self.run_on_worker(run, timeout_s))

    def stats(self) -> EngineStats:
        snapshot = self._counters.snapshot()
        loaded = self._loaded
        cache = self._image_cache
        return EngineStats(
            model=loaded.name if loaded else self.settings.model,
            device=str(loaded.device) if loaded else self.settings.device,
            ready=self.ready,
            queue_depth=self._queue.depth(),
            queue_limit=self.settings.queue_limit,
            in_flight=len(self._queue.active_now()),
            memory=memory_snapshot(loaded.device if loaded else None),
            image_cache=cache.figures() if cache is not None else {},
            prefix_cache=self._prefix_cache.figures() if self._prefix_cache is not None else {},
            **snapshot.engine_fields(),
        )

    def running_requests(self) -> list[GenerationRequest]:
        """The requests the worker is prefilling or decoding (what a hung worker is stuck on)."""
        return [job.request for job in self._queue.active_now()]

    @property
    def ready(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    def describe(self) -> dict[str, Any]:
        settings = self.settings
        info: dict[str, Any] = {
            "backend": "transformers",
            "model": settings.model,
            "device": settings.device,
            "dtype": settings.dtype,
            "attn_implementation": settings.attn_implementation,
            "quantization": settings.quantization,
            "max_pixels": settings.max_pixels,
            "min_pixels": settings.min_pixels,
            "max_batch_size": settings.max_batch_size,
            "max_batch_tokens": settings.max_batch_tokens,
            "scheduling": settings.scheduling,
            "prefill_chunk_tokens": settings.prefill_chunk_tokens,
            "queue_limit": settings.queue_limit,
            "max_new_tokens": settings.max_new_tokens,
            "request_timeout_s": settings.request_timeout_s,
            "sampling": self._sampling.describe() if self._sampling is not None else settings.sampling,
            "ready": self.ready,
        }
        loaded = self._loaded
        if loaded is not None:
            info.update(
                model=loaded.name,
                device=str(loaded.device),
                dtype=str(loaded.dtype).removeprefix("torch."),
                attn_implementation=loaded.attn_implementation,
                quantization=loaded.quantization,
                patch_size=loaded.patch_size,
                merge_size=loaded.merge_size,
                image_factor=loaded.patch_size * loaded.merge_size,
            )
        if self._image_cache is not None:
            info["image_cache_bytes"] = self._image_cache.budget_bytes
        if self._prefix_cache is not None:
            info["prefix_cache_bytes"] = self._prefix_cache.budget_bytes
        return info

    # ------------------------------------------------------------ worker thread

    def _worker_main(self, ready: concurrent.futures.Future[None]) -> None:
        import torch

        try:
            with torch.inference_mode():
                if self.settings.warmup:
                    self._warm_up()
        except BaseException as exc:
            logger.exception("engine warm-up failed")
            ready.set_exception(EngineUnavailable(f"the model failed to warm up ({exc})"))
            return
        ready.set_result(None)
        try:
            with torch.inference_mode():
                self._serve()
        finally:
            with self._cond:
                self._accepting = False
                left = [*self._queue.waiting, *self._queue.active]
                tasks, self._tasks = self._tasks, []
            for job in left:
                self._finish(job, "unavailable", EngineUnavailable(note("engine.worker_stopped")))
            for _, future in tasks:
                self._fail_task(future)

    def _serve(self) -> None:
        """The worker loop: queued tasks, then one round of the batch; return once stopping and drained."""
        runner = self._runner
        assert runner is not None
        queue = self._queue
        while True:
            with self._cond:
                idle = not (self._tasks or queue.waiting or runner.busy or self._stopping)
                while not (self._tasks or queue.waiting or runner.busy or self._stopping):
                    self._cond.wait()
                tasks, self._tasks = self._tasks, []
                exit_now = self._stopping and not queue.waiting and not runner.busy and not tasks
            for fn, future in tasks:
                self._run_task(fn, future)
            if exit_now:
                return
            if idle and self.settings.batch_window_s > 0:
                time.sleep(self.settings.batch_window_s)
            try:
                runner.tick()
            except Exception as exc:  # a bug must not take the worker (and every later request) down
                logger.exception("the engine worker hit an unexpected error")
                for job in runner.abandon():
                    self._finish(job, "failed", EngineError(key="engine.failed", detail=repr(exc)))

    @staticmethod
    def _fail_task(future: concurrent.futures.Future[Any]) -> None:
        if future.set_running_or_notify_cancel():
            future.set_exception(EngineUnavailable(note("error.not_running")))

    @staticmethod
    def _run_task(fn: Callable[[], Any], future: concurrent.futures.Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    def _warm_up(self) -> None:
        """One tiny generation (with an image) so the first real request does not pay for lazy setup."""
        from PIL import Image

        from inference.prefill import DecodeRow

        assert self._loaded is not None and self._prompts is not None and self._runner is not None
        started = time.perf_counter()
        side = self._loaded.patch_size * self._loaded.merge_size * 2
        request = GenerationRequest(question="Hi", images=[Image.new("RGB", (side, side), "white")])
        prepared = self._prompts.prepare(request)
        runner = self._runner
        prefill = runner.new_prefill(DecodeRow(prepared.input_ids, prepared.pixel_values, prepared.image_grid_thw))
        prefill.run(runner.scheduler.chunk_tokens)
        batch = runner.batch
        batch.join(prefill, None)
        batch.choose()
        batch.advance([False])
        batch.feed()
        batch.clear()
        logger.info("engine warm-up took %.2f s", time.perf_counter() - started)

    # ------------------------------------------------------------- both sides

    def _finish(
        self, job: EngineJob, outcome: str, error: BaseException | None, outbox: Outbox | None = None
    ) -> bool:
        """Settle ``job`` once (thread-safe); later calls are ignored. Returns whether this call settled it."""
        if not self._queue.settle(job):
            return False
        job.outcome = outcome
        with self._cond:
            active = job in self._queue.active
        now = time.monotonic()
        job.usage.total_s = now - job.submitted_at
        self._counters.outcome(outcome)
        if outcome == "answered":
            self._counters.answered(job.usage.total_s, job.usage.time_to_first_token_s)
        if job.prep_future is not None:
            job.prep_future.cancel()
        if not active:  # the worker drops an active request's inputs itself, when it leaves the batch
            job.prepared = None
        if outbox is not None:
            outbox.put(job, StreamEnd(error))
        elif job.stream is not None:
            post(job.loop, [(job.stream, StreamEnd(error))])
        if job.timer is not None:
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(job.timer.cancel)
        return True
