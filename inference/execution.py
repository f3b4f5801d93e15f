"""The worker's running batch, request by request: admission, prefill units between steps, joining, the decoding
step with per-row streaming, leaving, and the out-of-memory ladder.

:meth:`BatchRunner.tick` is one round of the worker loop (between two rounds the engine serves liveness pings,
memory cleanup and other worker tasks):

1. **Admit**: ``inference.scheduling.Scheduler`` picks the waiting requests that join now (policy, budget, fairness).
   While rows decode, only requests whose inputs are already prepared are considered, so the running rows never wait
   for image preprocessing; an idle worker prepares the first requests itself.
2. **Prefill**: the admitted requests' prefill units (``inference.prefill``: one image through the vision encoder or
   the image-embedding cache, or one text chunk; a prompt that starts with a cached one, ``inference.prefix_cache``,
   prefills only the rest), as many as the scheduler allows before the next step; a finished
   prefill joins the batch (``inference.batch``).
3. **Step**: every row's next token (``inference.tokens``), its text streamed (``inference.jobs``), finished,
   cancelled and expired rows leave, then one forward on the new tokens.

An out-of-memory error anywhere walks ``inference.oom``'s ladder; any other error fails only the request it hit (a
prefill) or the rows of the batch (a step).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from bot.errors import EngineError, EngineUnavailable, OutOfMemory
from bot.i18n import note
from inference import oom
from inference.batch import RunningBatch
from inference.decode import CACHE_GROWTH
from inference.image_cache import image_key, nbytes, picture_hash
from inference.jobs import EngineJob, JobQueue, Outbox, RowText
from inference.prefill import DecodeRow, ImageFeatures, ModelParts, RowPrefill, encode_row_image
from inference.sampling import GREEDY, SamplingSettings, request_seed
from inference.scheduling import Scheduler
from inference.tokens import TokenChooser

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.image_cache import ImageEmbeddingCache
    from inference.loader import LoadedModel
    from inference.prefix_cache import PromptPrefixCache
    from inference.prompts import PreparedPrompt, PromptBuilder
    from inference.stats import EngineCounters

logger = logging.getLogger(__name__)

STREAM_INTERVAL_S = 0.03
"""New text reaches the streams at most this often (and whenever a row ends): each delivery wakes the event
loop, which on a small CPU takes a core from the model's threads at every decoding step."""


Finish = Callable[..., bool]
"""``(job, outcome, error, outbox=None) -> settled``: the engine settles a job (its stream ends)."""


class BatchRunner:
    """The worker thread's batch (see the module docstring). Only the worker thread calls it, except ``prepare``."""

    def __init__(
        self,
        *,
        loaded: LoadedModel,
        settings: EngineSettings,
        prompts: PromptBuilder,
        queue: JobQueue,
        counters: EngineCounters,
        finish: Finish,
        expire: Callable[[EngineJob], None],
        eos_ids: frozenset[int],
        repetition_penalty: float,
        image_cache: ImageEmbeddingCache | None,
        sampling: SamplingSettings = GREEDY,
        prefix_cache: PromptPrefixCache | None = None,
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.prompts = prompts
        self.queue = queue
        self.counters = counters
        self.image_cache = image_cache
        self.prefix_cache = prefix_cache
        self.eos_ids = eos_ids
        self._finish = finish
        self._expire = expire
        self.parts = ModelParts(loaded.model, loaded.device)
        chooser = TokenChooser(
            eos_ids=sorted(eos_ids), repetition_penalty=repetition_penalty, device=loaded.device, sampling=sampling
        )
        self.batch = RunningBatch(self.parts, chooser, growth=CACHE_GROWTH)
        self.scheduler = Scheduler(
            settings.scheduling,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
        )
        self.joining: list[EngineJob] = []
        """Admitted requests whose prefill runs, in order."""
        self.outbox = Outbox()

    @property
    def busy(self) -> bool:
        """Rows decoding or prefilling."""
        return bool(self.joining) or bool(self.batch)

    def active(self) -> list[EngineJob]:
        return [*self.joining, *self.batch.owners]

    # ------------------------------------------------------------------ preparation

    def prepare(self, job: EngineJob) -> PreparedPrompt | None:
        """The request's model inputs (runs on the preprocessing thread right after submit, or on the worker)."""
        if job.done:
            return None
        request = job.request
        if (self.image_cache is None and self.prefix_cache is None) or not request.images:
            return self.prompts.prepare(request, max_pixels=job.max_pixels)
        given = list(request.image_hashes)
        usable = len(given) == len(request.images) and all(given)
        job.image_hashes = given if usable else [picture_hash(image) for image in request.images]
        try:
            prepared = self.prompts.prepare(request, max_pixels=job.max_pixels, patches=False)
        except ValueError:  # the grids cannot be worked out without the processor: make the patches now
            return self.prompts.prepare(request, max_pixels=job.max_pixels)
        if self._features_kept(prepared.input_ids, self._image_keys(job, prepared)):
            return prepared  # no patches: the prefill takes the features from the caches (or makes them then)
        return self.prompts.with_patches(prepared, request.images)

    def _features_kept(self, input_ids: list[int], keys: list[Hashable] | None) -> bool:
        """Whether every picture's vision features are kept: in the image cache, or inside a kept prompt prefix."""
        if not keys:
            return False
        if self.image_cache is not None and all(self.image_cache.holds(key) for key in keys):
            return True
        return self.prefix_cache is not None and self.prefix_cache.covers_images(input_ids, keys)

    def _image_keys(self, job: EngineJob, prepared: PreparedPrompt) -> list[Hashable] | None:
        """The image-embedding cache key of each of the job's pictures (None: not cached, or no pictures)."""
        grid = prepared.image_grid_thw
        cached = self.image_cache is not None or self.prefix_cache is not None
        if not cached or grid is None or len(job.image_hashes) != len(grid):
            return None
        return [
            image_key(self.loaded.name, content_hash, image.size, row)
            for content_hash, image, row in zip(job.image_hashes, job.request.images, grid.tolist(), strict=True)
        ]

    def await_preparation(self, job: EngineJob) -> PreparedPrompt | None:
        """The job's inputs, waiting for the preprocessing thread (or preparing here if it has not started)."""
        if job.prepared is not None:
            return job.prepared
        assert job.prep_future is not None
        try:
            if job.prep_future.cancel():  # not started yet: prepare it here instead of waiting idle
                job.prepared = self.prepare(job)
            else:
                job.prepared = job.prep_future.result()
        except Exception as exc:  # CancelledError included: settled meanwhile
            if not job.done:
                logger.warning("request %s: preparing the inputs failed: %s", job.request.request_id, exc)
                self._finish(job, "failed", EngineError(key="engine.prepare_failed", detail=str(exc)))
            return None
        if job.prepared is None and not job.done:  # prepared after a stop began
            self._finish(job, "unavailable", EngineUnavailable(note("engine.shutting_down")))
        return job.prepared

    def _prepare_first(self, jobs: list[EngineJob]) -> None:
        """An idle worker prepares the first requests: newest first on this thread those the preprocessing thread has
        not started (it takes them oldest first), so a burst is prepared on two threads; then waits for the rest."""
        for job in reversed(jobs):
            future = job.prep_future
            if job.done or job.prepared is not None or future is None:
                continue
            if future.running() or future.done():
                break
            self.await_preparation(job)
        for job in jobs:
            if not job.done:
                self.await_preparation(job)

    # ------------------------------------------------------------------ one round

    def tick(self) -> None:
        """Admit, prefill, step (see the module docstring)."""
        try:
            self._drop_settled()
            self._admit()
            self._prefill()
            if self.batch:
                self._step()
        finally:
            if not self.busy or time.monotonic() - self.outbox.flushed_at >= STREAM_INTERVAL_S:
                self.outbox.flush()

    def abandon(self) -> list[EngineJob]:
        """After an unexpected error: forget the batch and the prefills; returns their jobs (for the engine to fail)."""
        jobs = self.active()
        self.joining = []
        self.batch.clear()
        self.scheduler.drained()
        self._leave(jobs)
        self.outbox.flush()
        return jobs

    def _drop_settled(self) -> None:
        now = time.monotonic()
        for job in list(self.joining):
            if not job.done and now >= job.deadline:
                self._expire(job)
            if job.done:
                self.joining.remove(job)
                self._leave([job])

    def _admit(self) -> None:
        waiting = self.queue.waiting_now()
        if not waiting or (self.scheduler.policy == "static" and self.busy):
            return
        if not self.busy:
            self._prepare_first(waiting[: self.scheduler.max_batch_size])
        else:
            for job in waiting:
                if job.prepared is None and job.prep_future is not None and job.prep_future.done():
                    self.await_preparation(job)
        now = time.monotonic()
        ready = []
        for job in waiting:
            if job.done or job.prepared is None:
                continue
            if now >= job.deadline:
                self._expire(job)
                continue
            ready.append(job)
        chosen: list[Any] = self.scheduler.admit(ready, self.active(), self.batch.length)
        for job in self.queue.take(chosen):
            if job.started_at is None:
                job.started_at = now
                job.usage.queue_wait_s = now - job.submitted_at
                self.counters.queue_wait(job.usage.queue_wait_s)
            assert job.prepared is not None
            job.usage.prompt_tokens = job.prepared.prompt_tokens
            job.prefill = self.new_prefill(self._decode_row(job))
            self.joining.append(job)

    def new_prefill(self, row: DecodeRow) -> RowPrefill:
        """The prefill of ``row``, its images through the image-embedding cache, from its longest cached prefix."""
        prefix = None
        if self.prefix_cache is not None and (row.image_grid_thw is None or row.image_keys):
            prefix = self.prefix_cache.longest(row.input_ids, row.image_keys)
        return RowPrefill(self.parts, row, images=self._image, prefix=prefix)

    def _decode_row(self, job: EngineJob) -> DecodeRow:
        prepared = job.prepared
        assert prepared is not None
        images, budget = job.request.images, prepared.max_pixels
        return DecodeRow(
            prepared.input_ids, prepared.pixel_values, prepared.image_grid_thw, job.min_new_tokens,
            self._image_keys(job, prepared),
            patches=lambda index: self.prompts.image_patches(images[index], budget),
        )

    def _image(self, row: DecodeRow, index: int) -> ImageFeatures:
        """One image's features: from the image-embedding cache, else the vision encoder (then cached)."""
        cache = self.image_cache
        key = row.image_keys[index] if cache is not None and row.image_keys else None
        if key is not None:
            cached = cache.get(key)
            if cached is not None:
                return cached
        features = encode_row_image(self.parts, row, index)
        if key is not None:
            cache.put(key, features, nbytes((features.embeds, *features.deepstack)))
        return features

    # ------------------------------------------------------------------ prefill

    def _prefill(self) -> None:
        units = self.scheduler.prefill_units(len(self.batch))
        while self.joining and (units is None or units > 0):
            job = self.joining[0]
            if job.done:
                self.joining.pop(0)
                self._leave([job])
                continue
            if units is not None:
                units -= 1
            assert job.prefill is not None
            vision = job.prefill.images_done < job.prefill.image_count
            started = time.perf_counter()
            outcome, error = _attempt(job.prefill.run_unit, self.scheduler.chunk_tokens)
            self.counters.prefill_unit("vision" if vision else "text", time.perf_counter() - started)
            if outcome == "ok" and job.prefill.done:
                outcome, error = _attempt(self._join, job)
            if outcome == "oom":
                self._prefill_out_of_memory(job)
            elif outcome == "error":
                logger.error("request %s: the prefill failed", job.request.request_id, exc_info=error)
                self.joining.remove(job)
                self._leave([job])
                self._finish(job, "failed", EngineError(key="engine.failed", detail=repr(error)))

    def _join(self, job: EngineJob) -> None:
        assert job.prefill is not None
        row = job.prefill.row
        if self.prefix_cache is not None and (row.image_grid_thw is None or row.image_keys):
            self.prefix_cache.keep(row.input_ids, row.image_keys, job.prefill.cache.layers)
        first = not self.batch
        self.batch.join(job.prefill, job, min_new_tokens=job.min_new_tokens, seed=request_seed(job.request))
        self.joining.remove(job)
        job.prefill = None
        job.text = RowText(job, self.prompts.decode)
        if first:
            self.counters.batch(0)
        self.counters.joined()

    def _prefill_out_of_memory(self, job: EngineJob) -> None:
        self.joining.remove(job)
        job.reset_attempt()
        plan = oom.plan_for_prefill(len(self.batch))
        self._free()
        if plan.requeue:
            assert plan.cap is not None
            logger.warning("out of GPU memory preparing request %s beside %d rows; it waits for the batch to shrink",
                           job.request.request_id, len(self.batch))
            self.scheduler.cap_rows(plan.cap)
            self.queue.requeue([job])
        else:
            self._shrink_or_fail(job)

    # ------------------------------------------------------------------ step

    def _step(self) -> None:
        """Choose every row's next token (from the last forward pass), stream it, let finished rows leave, then run
        the next forward pass; the step's wall time goes to the counters."""
        batch = self.batch
        started = time.perf_counter()
        rows = 0
        if batch.pending is None:
            rows = len(batch)
            tokens: list[int] = []
            outcome, error = _attempt(lambda: tokens.extend(batch.choose()))
            if outcome != "ok":
                self._step_failed(outcome, error)
                return
            finished = self._advance(tokens)
            left = [row.owner for row, done in zip(batch.rows, finished, strict=True) if done]
            batch.advance(finished)
            self._leave(left)
            if not batch:
                self.counters.step(rows, time.perf_counter() - started)
                self.scheduler.drained()
                return
        outcome, error = _attempt(batch.feed)
        if rows:
            self.counters.step(rows, time.perf_counter() - started)
        if outcome != "ok":
            self._step_failed(outcome, error)

    def _advance(self, tokens: list[int]) -> list[bool]:
        """Stream every row's new token; returns which rows are finished (ended, at their limit, settled)."""
        now = time.monotonic()
        produced = 0
        ended = False
        finished: list[bool] = []
        for row, token in zip(self.batch.rows, tokens, strict=True):
            job: EngineJob = row.owner
            done = True
            if job.done:
                pass
            elif now >= job.deadline:
                self._expire(job)
            elif token in self.eos_ids:
                ended = True
                self._complete(job)
            else:
                assert job.text is not None
                job.text.push(token, self.outbox, now)
                produced += 1
                done = row.generated + 1 >= job.max_new_tokens
                if done:
                    ended = True
                    self._complete(job)
            finished.append(done)
        self.counters.tokens(produced)
        if ended or now - self.outbox.flushed_at >= STREAM_INTERVAL_S:
            self.outbox.flush()
        return finished

    def _complete(self, job: EngineJob) -> None:
        assert job.text is not None
        job.text.complete(self.outbox)
        self._finish(job, "answered", None, self.outbox)

    def _step_failed(self, outcome: str, error: BaseException | None) -> None:
        batch = self.batch
        jobs = batch.owners
        if outcome == "error":
            logger.error("a decoding step failed for %d requests", len(jobs), exc_info=error)
            batch.clear()
            self.scheduler.drained()
            self._leave(jobs)
            for job in jobs:
                self._finish(job, "failed", EngineError(key="engine.failed", detail=repr(error)))
            return
        plan = oom.plan_for_step(len(jobs))
        self._free()
        if plan.evict:
            assert plan.cap is not None
            evicted = jobs[-plan.evict :]
            logger.warning("out of GPU memory with %d rows; %d go back to the queue", len(jobs), len(evicted))
            batch.remove(range(len(jobs) - plan.evict, len(jobs)))
            self.scheduler.cap_rows(plan.cap)
            for job in evicted:
                job.reset_attempt()
            self.queue.requeue(evicted)
            return
        batch.clear()
        self.scheduler.drained()
        jobs[0].reset_attempt()
        self._shrink_or_fail(jobs[0])

    # ------------------------------------------------------------------ the ladder's last rungs

    def _free(self) -> None:
        self.counters.oom()
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        oom.free(self.loaded.device, self.image_cache)

    def _shrink_or_fail(self, job: EngineJob) -> None:
        """A request that ran out of memory alone: try again with smaller images, or fail it."""
        request_id = job.request.request_id
        smaller = None
        if job.prepared is not None and job.pixel_reductions < oom.MAX_PIXEL_REDUCTIONS:
            smaller = oom.smaller_prompt(
                job.request, job.prepared, self.prompts, current_budget=job.max_pixels,
                min_pixels=self.settings.min_pixels, patch_size=self.loaded.patch_size,
                merge_size=self.loaded.merge_size,
            )  # fmt: skip
        if smaller is None:
            logger.error("out of GPU memory on request %s even at the smallest pixel budget", request_id)
            self._leave([job])
            self._finish(job, "oom", OutOfMemory())
            return
        job.prepared = smaller
        job.max_pixels = smaller.max_pixels
        job.pixel_reductions += 1
        job.usage.prompt_tokens = smaller.prompt_tokens
        logger.warning("out of GPU memory on request %s; retrying with at most %d pixels per image",
                       request_id, job.max_pixels)
        self.queue.requeue([job])

    def _leave(self, jobs: list[EngineJob]) -> None:
        """Jobs that are finished with the model: off the active list, inputs dropped."""
        self.queue.leave(jobs)
        for job in jobs:
            job.prepared = None
            job.reset_attempt()

    def flush(self) -> None:
        self.outbox.flush()


def _attempt(fn: Callable[..., Any], *args: Any) -> tuple[str, BaseException | None]:
    """Run ``fn``: ``("ok", None)``, ``("oom", None)`` or ``("error", exc)``. The out-of-memory error is not kept,
    so the failed attempt's tensors are freed before the ladder runs."""
    import torch

    try:
        fn(*args)
    except torch.OutOfMemoryError:
        return "oom", None
    except Exception as exc:
        return "error", exc
    return "ok", None
