"""The in-process engine: one worker thread owns the model; asyncio callers get text streams.

Flow: ``submit`` (event loop) → bounded FIFO → worker thread forms a batch of the requests waiting
(up to ``max_batch_size`` rows and ``max_batch_tokens`` padded prompt tokens) → one greedy decode
(``inference.decode``: each prompt prefilled alone, all rows decoded together) → each step the new
tokens are decoded incrementally per row and the text goes, every few tens of milliseconds, to each
request's stream on its event loop → rows stop at EOS, their own ``max_new_tokens``, cancellation or
deadline, and leave the batch. Image preprocessing runs on a separate thread as soon as a request is
submitted, so it overlaps the batch that is running.

On ``torch.OutOfMemoryError`` the batch walks a ladder: free memory → split the batch in halves →
lower a lone request's pixel budget (halving, a few times) → fail only that request with
``OutOfMemory``. Text already streamed is never sent twice when a request is retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from bot.engine import AnswerStream, CleanupReport, EngineStats, GenerationRequest, Usage
from bot.errors import (
    Busy,
    Cancelled,
    DeadlineExceeded,
    EngineError,
    EngineUnavailable,
    OutOfMemory,
)
from inference import memory
from inference.memory import free_memory, memory_snapshot
from inference.stats import EngineCounters
from inference.streams import StreamEnd, TextStream

if TYPE_CHECKING:

    from bot.settings import EngineSettings
    from inference.decode import DecodeRow, GreedyDecoder
    from inference.loader import LoadedModel
    from inference.prompts import PreparedPrompt, PromptBuilder

logger = logging.getLogger(__name__)

T = TypeVar("T")

STREAM_INTERVAL_S = 0.03
"""New text reaches the streams at most this often (and whenever a row ends): each delivery wakes the event
loop, which on a small CPU takes a core from the model's threads at every decoding step."""

MAX_PIXEL_REDUCTIONS = 4
"""How often the OOM ladder halves a lone request's pixel budget before giving up (down to 1/16)."""

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Token ids in, text deltas out; never splits a multi-byte character.

    Decodes a small window (the last emitted text plus the new tokens) and holds back text that ends
    in U+FFFD, which is what an incomplete UTF-8 sequence decodes to.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        if len(current) <= len(before) or current.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return current[len(before) :]

    def flush(self) -> str:
        """Whatever is held back (the answer ended), replacement characters included."""
        before = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return current[len(before) :] if len(current) > len(before) else ""


class _EngineRequest:
    """Engine-side state of one request."""

    def __init__(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        *,
        max_new_tokens: int,
        min_new_tokens: int,
        timeout_s: float,
        max_pixels: int,
    ) -> None:
        self.request = request
        self.loop = loop
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.timeout_s = timeout_s
        self.max_pixels = max_pixels
        self.pixel_reductions = 0
        self.submitted_at = time.monotonic()
        self.deadline = self.submitted_at + timeout_s
        self.started_at: float | None = None
        self.first_text_at: float | None = None
        self.usage = Usage()
        self.stream: TextStream | None = None
        self.prep_future: concurrent.futures.Future[PreparedPrompt] | None = None
        self.prepared: PreparedPrompt | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sent_chars = 0
        self.done = False
        self.outcome: str | None = None


class _Outbox:
    """Stream events gathered over decoding steps, delivered with one wake-up per event loop."""

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[TextStream, str | StreamEnd]]] = {}
        self.flushed_at = time.monotonic()

    def put(self, job: _EngineRequest, item: str | StreamEnd) -> None:
        if job.stream is not None:
            self._items.setdefault(job.loop, []).append((job.stream, item))

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        items, self._items = self._items, {}
        for loop, events in items.items():
            _post(loop, events)


def _deliver_all(events: list[tuple[TextStream, str | StreamEnd]]) -> None:
    for stream, item in events:
        stream._deliver(item)


def _post(loop: asyncio.AbstractEventLoop, events: list[tuple[TextStream, str | StreamEnd]]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
        loop.call_soon_threadsafe(_deliver_all, events)


class _Row:
    """One request inside one generate attempt."""

    __slots__ = ("decoder", "finished", "job", "text_chars", "token_ids")

    def __init__(self, job: _EngineRequest, decoder: IncrementalDecoder) -> None:
        self.job = job
        self.decoder = decoder
        self.finished = False
        self.text_chars = 0
        self.token_ids: list[int] = []


def _decode_row(prepared: PreparedPrompt, min_new_tokens: int) -> DecodeRow:
    from inference.decode import DecodeRow

    return DecodeRow(
        input_ids=prepared.input_ids,
        pixel_values=prepared.pixel_values,
        image_grid_thw=prepared.image_grid_thw,
        min_new_tokens=min_new_tokens,
    )


class TransformersEngine:
    """``bot.engine.Engine`` backed by a transformers model on this process's GPU (or CPU)."""

    in_process = True

    def __init__(self, settings: EngineSettings, *, loaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self._loaded = loaded
        self._owns_model = loaded is None
        self._prompts: PromptBuilder | None = None
        self._counters = EngineCounters()
        self._cond = threading.Condition()
        self._pending: deque[_EngineRequest] = deque()
        self._running: list[_EngineRequest] = []
        self._tasks: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._prep_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._decoder: GreedyDecoder | None = None

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
        from inference.decode import GreedyDecoder
        from inference.prompts import PromptBuilder

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
        self._eos_ids = frozenset(eos_ids)
        # Greedy decoding (deterministic answers, and what batching is verified against); the checkpoint's
        # repetition penalty is kept, its sampling settings are not.
        self._decoder = GreedyDecoder(
            loaded.model,
            device=loaded.device,
            eos_ids=sorted(eos_ids),
            repetition_penalty=source.repetition_penalty or 1.0,
        )

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, let the running batch finish (bounded), fail what is left with ``EngineUnavailable``."""
        bound = self.settings.stop_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if self._thread is None:
                return
            self._accepting = False
            self._stopping = True
            waiting = list(self._pending)
            tasks, self._tasks = self._tasks, []
            self._cond.notify_all()
        for job in waiting:
            self._finish(job, "unavailable", EngineUnavailable("the bot is shutting down"))
        for _, future in tasks:
            self._fail_task(future)
        await self._shutdown_thread(bound)
        if self._owns_model and self._loaded is not None:
            device = self._loaded.device
            self._loaded = None
            self._prompts = None
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
                with self._cond:
                    running = list(self._running)
                for job in running:
                    self._finish(job, "unavailable", EngineUnavailable("the bot is shutting down"))
                await asyncio.to_thread(thread.join, max(bound, 5.0))
                if thread.is_alive():
                    logger.error("the engine worker did not stop; leaving it behind (daemon thread)")
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=False, cancel_futures=True)
            self._prep_pool = None
        self._thread = None

    async def __aenter__(self) -> TransformersEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -------------------------------------------------------------- async side

    def submit(self, request: GenerationRequest) -> AnswerStream:
        """Queue ``request``; raises ``Busy`` at once when ``queue_limit`` requests are already waiting."""
        if not self._accepting or self._prep_pool is None:
            raise EngineUnavailable("the model is not running" if not self._stopping else "the bot is shutting down")
        loop = asyncio.get_running_loop()
        settings = self.settings
        max_new = max(1, request.max_new_tokens or settings.max_new_tokens)
        min_new = min(max(0, request.min_new_tokens or 0), max_new)
        timeout = request.timeout_s if request.timeout_s is not None else settings.request_timeout_s
        job = _EngineRequest(
            request,
            loop,
            max_new_tokens=max_new,
            min_new_tokens=min_new,
            timeout_s=timeout,
            max_pixels=settings.max_pixels,
        )
        with self._cond:
            depth = len(self._pending)
            if depth >= settings.queue_limit:
                self._counters.outcome("busy")
                logger.info("request %s rejected: %d waiting (limit %d)", request.request_id, depth,
                            settings.queue_limit)
                raise Busy(depth, settings.queue_limit)
            job.stream = TextStream(request.request_id, depth, job.usage, lambda: self._cancel(job))
            job.timer = loop.call_later(max(0.0, timeout), self._expire, job)
            job.prep_future = self._prep_pool.submit(self._prepare, job)
            self._pending.append(job)
            self._cond.notify_all()
        return job.stream

    def _cancel(self, job: _EngineRequest) -> None:
        if self._finish(job, "cancelled", Cancelled()):
            logger.info("request %s cancelled", job.request.request_id)

    def _expire(self, job: _EngineRequest) -> None:
        if self._finish(job, "timeout", DeadlineExceeded(job.timeout_s)):
            logger.info("request %s exceeded its %.1f s deadline", job.request.request_id, job.timeout_s)

    async def run_on_worker(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run ``fn`` on the worker thread between batches; ``TimeoutError`` if it has not finished in time."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._thread is None or self._stopping:
                raise EngineUnavailable("the model is not running")
            self._tasks.append((fn, future))
            self._cond.notify_all()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the engine worker did not run the task within {timeout_s:.1f} s") from None

    async def ping(self, timeout_s: float) -> float:
        """A no-op on the worker thread between batches: the round trip in seconds (``TimeoutError`` past
        ``timeout_s``: the worker is generating a long batch, or hangs)."""
        started = time.monotonic()
        await self.run_on_worker(time.monotonic, timeout_s)
        return time.monotonic() - started

    async def cleanup(
        self, *, force: bool, fragmentation_threshold: float, unused_reserved_bytes: int, timeout_s: float
    ) -> CleanupReport:
        """``inference.memory.cleanup`` on the worker thread, between batches."""
        loaded = self._loaded
        if loaded is None:
            return CleanupReport(skipped="the model is not loaded")
        figures = await self.run_on_worker(
            partial(memory.cleanup, loaded.device, fragmentation_threshold=fragmentation_threshold,
                    unused_reserved_bytes=unused_reserved_bytes, force=force),
            timeout_s,
        )
        return CleanupReport(figures=figures)

    def stats(self) -> EngineStats:
        snapshot = self._counters.snapshot()
        with self._cond:
            depth = len(self._pending)
            in_flight = sum(1 for job in self._running if not job.done)
        loaded = self._loaded
        return EngineStats(
            model=loaded.name if loaded else self.settings.model,
            device=str(loaded.device) if loaded else self.settings.device,
            ready=self.ready,
            queue_depth=depth,
            queue_limit=self.settings.queue_limit,
            in_flight=in_flight,
            requests_by_outcome=snapshot.requests_by_outcome,
            generated_tokens=snapshot.generated_tokens,
            tokens_per_s=snapshot.tokens_per_s,
            latency_p50_s=snapshot.latency_p50_s,
            latency_p95_s=snapshot.latency_p95_s,
            memory=memory_snapshot(loaded.device if loaded else None),
            queue_wait_p50_s=snapshot.queue_wait_p50_s,
            queue_wait_p95_s=snapshot.queue_wait_p95_s,
            time_to_first_token_p50_s=snapshot.ttft_p50_s,
            time_to_first_token_p95_s=snapshot.ttft_p95_s,
            batches=snapshot.batches,
            mean_batch_size=snapshot.mean_batch_size,
            oom_events=snapshot.oom_events,
            latency_histogram=snapshot.latency_histogram,
        )

    def running_requests(self) -> list[GenerationRequest]:
        """The requests of the batch the worker is generating (what a hung worker is stuck on)."""
        with self._cond:
            return [job.request for job in self._running if not job.done]

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
            "queue_limit": settings.queue_limit,
            "max_new_tokens": settings.max_new_tokens,
            "request_timeout_s": settings.request_timeout_s,
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
                left = [*self._pending, *self._running]
                tasks, self._tasks = self._tasks, []
            for job in left:
                self._finish(job, "unavailable", EngineUnavailable("the model worker stopped"))
            for _, future in tasks:
                self._fail_task(future)

    def _serve(self) -> None:
        """The worker loop: run queued tasks, then the next batch; return once stopping and drained."""
        while True:
            with self._cond:
                idle = not (self._tasks or self._pending or self._stopping)
                while not (self._tasks or self._pending or self._stopping):
                    self._cond.wait()
                tasks, self._tasks = self._tasks, []
                exit_now = self._stopping and not self._pending and not tasks
            if tasks:
                for fn, future in tasks:
                    self._run_task(fn, future)
                continue
            if exit_now:
                return
            if idle and self.settings.batch_window_s > 0:
                time.sleep(self.settings.batch_window_s)
            try:
                batch = self._take_batch()
                if batch:
                    self._run_batch(batch)
            except Exception as exc:  # a bug must not take the worker (and every later request) down
                logger.exception("the engine worker hit an unexpected error")
                with self._cond:
                    running = list(self._running)
                for job in running:
                    self._finish(job, "failed", EngineError(
                        "Sorry, something went wrong while I was answering. Please try again.", detail=repr(exc)))
            finally:
                with self._cond:
                    self._running = []

    @staticmethod
    def _fail_task(future: concurrent.futures.Future[Any]) -> None:
        if future.set_running_or_notify_cancel():
            future.set_exception(EngineUnavailable("the model is not running"))

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

        assert self._loaded is not None and self._prompts is not None
        started = time.perf_counter()
        side = self._loaded.patch_size * self._loaded.merge_size * 2
        request = GenerationRequest(question="Hi", images=[Image.new("RGB", (side, side), "white")])
        prepared = self._prompts.prepare(request)
        assert self._decoder is not None
        self._decoder.decode([_decode_row(prepared, 0)], 2, lambda tokens, step: [False])
        logger.info("engine warm-up took %.2f s", time.perf_counter() - started)

    def _prepare(self, job: _EngineRequest) -> PreparedPrompt | None:
        """Runs on the preprocessing thread right after submit."""
        if job.done or self._prompts is None:
            return None
        return self._prompts.prepare(job.request, max_pixels=job.max_pixels)

    def _take_batch(self) -> list[_EngineRequest]:
        """The waiting requests, oldest first, that fit ``max_batch_size`` and ``max_batch_tokens``."""
        settings = self.settings
        with self._cond:
            candidates = [job for job in self._pending if not job.done][: settings.max_batch_size]
        self._prepare_newest_here(candidates)
        selected: list[_EngineRequest] = []
        longest = 0
        now = time.monotonic()
        for job in candidates:
            if job.done:
                continue
            if now >= job.deadline:
                self._expire(job)
                continue
            prepared = self._await_preparation(job)
            if prepared is None:
                continue
            length = max(longest, prepared.prompt_tokens)
            if selected and (len(selected) + 1) * length > settings.max_batch_tokens:
                break
            selected.append(job)
            longest = length
        with self._cond:
            batch = [job for job in selected if not job.done]
            for job in batch:
                self._pending.remove(job)
            self._running = list(batch)
        for job in selected:
            if job.done:
                job.prepared = None
        started = time.monotonic()
        for job in batch:
            job.started_at = started
            job.usage.queue_wait_s = started - job.submitted_at
            job.usage.prompt_tokens = job.prepared.prompt_tokens if job.prepared else 0
            self._counters.queue_wait(job.usage.queue_wait_s)
        return batch

    def _prepare_newest_here(self, jobs: list[_EngineRequest]) -> None:
        """Prepare on this thread, newest first, the requests whose preprocessing has not started.

        The worker would only wait for them; meanwhile the preprocessing thread works through the oldest, so a
        burst of questions is prepared on two threads.
        """
        for job in reversed(jobs):
            future = job.prep_future
            if job.done or job.prepared is not None or future is None:
                continue
            if future.running() or future.done():
                return  # the preprocessing thread got this far (it takes them oldest first)
            self._await_preparation(job)

    def _await_preparation(self, job: _EngineRequest) -> PreparedPrompt | None:
        if job.prepared is not None:
            return job.prepared
        assert job.prep_future is not None
        try:
            if job.prep_future.cancel():  # not started yet: prepare it here instead of waiting idle
                job.prepared = self._prepare(job)
            else:
                job.prepared = job.prep_future.result()
        except concurrent.futures.CancelledError:
            return None
        except Exception as exc:
            logger.warning("request %s: preparing the inputs failed: %s", job.request.request_id, exc)
            self._finish(job, "failed", EngineError(
                "Sorry, I could not prepare the images of this question for the model.", detail=str(exc)))
            return None
        if job.prepared is None and not job.done:  # prepared after a stop began
            self._finish(job, "unavailable", EngineUnavailable("the bot is shutting down"))
        return job.prepared

    def _run_batch(self, jobs: list[_EngineRequest]) -> None:
        """Generate for ``jobs``, walking the OOM ladder when memory runs out."""
        self._counters.batch(len(jobs))
        try:
            self._walk_oom_ladder(jobs)
        finally:
            for job in jobs:
                job.prepared = None

    def _walk_oom_ladder(self, jobs: list[_EngineRequest]) -> None:
        work: list[list[_EngineRequest]] = [jobs]
        while work:
            batch = [job for job in work.pop() if not job.done]
            if not batch or self._generate_or_report_oom(batch):
                continue
            self._counters.oom()
            free_memory(self._loaded.device if self._loaded else None)
            ids = ", ".join(job.request.request_id for job in batch)
            if len(batch) > 1:
                middle = len(batch) // 2
                logger.warning("out of GPU memory with %d requests (%s); splitting the batch", len(batch), ids)
                work.append(batch[middle:])
                work.append(batch[:middle])
            elif self._lower_pixel_budget(batch[0]):
                logger.warning("out of GPU memory on request %s; retrying with at most %d pixels per image",
                               ids, batch[0].max_pixels)
                work.append(batch)
            else:
                logger.error("out of GPU memory on request %s even at the smallest pixel budget", ids)
                self._finish(batch[0], "oom", OutOfMemory())

    def _generate_or_report_oom(self, jobs: list[_EngineRequest]) -> bool:
        """``False`` when generation ran out of memory (the caller retries); every other outcome is final."""
        import torch

        try:
            self._generate(jobs)
        except torch.OutOfMemoryError:
            pass  # handled by the caller, outside this frame, so the failed attempt's tensors can be freed
        except Exception as exc:
            logger.exception("generation failed for %d requests", len(jobs))
            for job in jobs:
                self._finish(job, "failed", EngineError(
                    "Sorry, something went wrong while I was answering. Please try again.", detail=repr(exc)))
            return True
        else:
            return True
        return False

    def _lower_pixel_budget(self, job: _EngineRequest) -> bool:
        """Halve the largest image's pixel count for ``job`` and re-prepare; ``False`` when nothing is left to cut."""
        loaded, prompts = self._loaded, self._prompts
        prepared = job.prepared
        if loaded is None or prompts is None or prepared is None or prepared.image_grid_thw is None:
            return False
        if job.pixel_reductions >= MAX_PIXEL_REDUCTIONS:
            return False
        patch = loaded.patch_size
        largest = int((prepared.image_grid_thw[:, 1] * prepared.image_grid_thw[:, 2]).max()) * patch * patch
        budget = min(job.max_pixels, largest) // 2
        factor = loaded.patch_size * loaded.merge_size
        if budget < max(self.settings.min_pixels, 4 * factor * factor):
            return False
        try:
            smaller = prompts.prepare(job.request, max_pixels=budget)
        except Exception as exc:
            logger.warning("request %s: re-preparing at a lower pixel budget failed: %s", job.request.request_id, exc)
            return False
        assert smaller.image_grid_thw is not None
        if int((smaller.image_grid_thw[:, 1] * smaller.image_grid_thw[:, 2]).max()) * patch * patch >= largest:
            return False  # the minimum size is reached: nothing left to cut
        job.prepared = smaller
        job.max_pixels = budget
        job.pixel_reductions += 1
        job.usage.prompt_tokens = job.prepared.prompt_tokens
        return True

    def _generate(self, jobs: list[_EngineRequest]) -> None:
        assert self._loaded is not None and self._prompts is not None and self._decoder is not None
        inputs = []
        for job in jobs:
            assert job.prepared is not None
            inputs.append(_decode_row(job.prepared, job.min_new_tokens))
        rows = [_Row(job, IncrementalDecoder(self._prompts.decode)) for job in jobs]
        logger.debug("batch of %d, %d prompt tokens", len(jobs), sum(len(row.input_ids) for row in inputs))
        outbox = _Outbox()
        try:
            self._decoder.decode(
                inputs,
                max(job.max_new_tokens for job in jobs),
                lambda tokens, step: self._advance(rows, tokens, step, outbox),
            )
            for row in rows:
                if not row.finished:
                    row.finished = True
                    self._complete(row, outbox)
        finally:
            outbox.flush()  # text counted as sent must reach the streams, also when this attempt failed

    def _advance(self, rows: list[_Row], tokens: list[int], step: int, outbox: _Outbox) -> list[bool]:
        """One decoding step for every row: stream the new text, decide which rows are finished."""
        now = time.monotonic()
        produced = 0
        ended = False
        for row, token in zip(rows, tokens, strict=True):
            if row.finished:
                continue
            job = row.job
            if job.done:
                row.finished = True
                continue
            if now >= job.deadline:
                row.finished = True
                self._expire(job)
                continue
            if token in self._eos_ids:
                row.finished = ended = True
                self._complete(row, outbox)
                continue
            row.token_ids.append(token)
            produced += 1
            self._emit(row, row.decoder.push(token), outbox, now)
            if step >= job.max_new_tokens:
                row.finished = ended = True
                self._complete(row, outbox)
        self._counters.tokens(produced)
        if ended or now - outbox.flushed_at >= STREAM_INTERVAL_S:
            outbox.flush()
        return [row.finished for row in rows]

    def _emit(self, row: _Row, text: str, outbox: _Outbox, now: float) -> None:
        """Send the part of ``text`` not yet sent to the consumer (a retry repeats what was already sent)."""
        if not text:
            return
        job = row.job
        start = row.text_chars
        row.text_chars += len(text)
        if row.text_chars <= job.sent_chars:
            return
        piece = text[max(0, job.sent_chars - start) :]
        job.sent_chars += len(piece)
        if job.first_text_at is None:
            job.first_text_at = now
            job.usage.time_to_first_token_s = now - job.submitted_at
        outbox.put(job, piece)

    def _complete(self, row: _Row, outbox: _Outbox) -> None:
        job = row.job
        self._emit(row, row.decoder.flush(), outbox, time.monotonic())
        job.usage.generated_tokens = len(row.token_ids)
        if job.stream is not None:
            job.stream.token_ids = list(row.token_ids)
        self._finish(job, "answered", None, outbox)

    # ------------------------------------------------------------- both sides

    def _finish(
        self, job: _EngineRequest, outcome: str, error: BaseException | None, outbox: _Outbox | None = None
    ) -> bool:
        """Settle ``job`` once (thread-safe); later calls are ignored. Returns whether this call settled it."""
        with self._cond:
            if job.done:
                return False
            job.done = True
            job.outcome = outcome
            with contextlib.suppress(ValueError):
                self._pending.remove(job)
            running = job in self._running
            self._cond.notify_all()
        now = time.monotonic()
        job.usage.total_s = now - job.submitted_at
        self._counters.outcome(outcome)
        if outcome == "answered":
            self._counters.answered(job.usage.total_s, job.usage.time_to_first_token_s)
        if job.prep_future is not None:
            job.prep_future.cancel()
        if not running:  # the worker drops a running request's inputs itself, after its batch
            job.prepared = None
        if outbox is not None:
            outbox.put(job, StreamEnd(error))
        elif job.stream is not None:
            _post(job.loop, [(job.stream, StreamEnd(error))])
        if job.timer is not None:
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(job.timer.cancel)
        return True
