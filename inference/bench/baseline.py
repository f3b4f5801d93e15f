"""The baseline side: what a plain web wrapper does, one ``model.generate`` per request behind a lock.

Prompt building and image preprocessing are the engine's own (``PromptBuilder``), so both sides send the model the
same tokens. End-of-sequence tokens are masked so that every request generates exactly the tokens asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inference.bench.measure import BenchRequest, Probe, probe_alone, timed_request, timed_run
from inference.bench.probes import synchronize
from inference.bench.spec import WorkerSpec
from inference.bench.workload import WorkItem

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel


def _token_clock() -> Any:
    """A ``generate`` streamer that only notes when the first and the last new tokens arrive."""
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self._prompt_seen = False
            self.first: float | None = None
            self.last: float | None = None

        def put(self, value: Any) -> None:
            if not self._prompt_seen:  # generate() pushes the prompt first
                self._prompt_seen = True
                return
            synchronize(getattr(value, "device", None))  # the token exists once its kernels are done
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now

        def end(self) -> None:
            return None

    return TokenClock()


def _eos_blocker(eos_ids: Sequence[int]) -> Any:
    """A logits processor that never lets an end-of-sequence token win (its mask is built once).

    With ``max_new_tokens = T`` this makes ``generate`` produce exactly T tokens, at the cost of one
    ``masked_fill`` per step: the same work the engine's per-row minimum does, and far less than
    ``generate(min_new_tokens=…)``, which rebuilds a vocabulary-sized mask at every step.
    """
    import torch
    from transformers import LogitsProcessor

    class BlockEndOfSequence(LogitsProcessor):
        def __init__(self) -> None:
            self._mask: torch.Tensor | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
            vocab = scores.shape[-1]
            if self._mask is None or self._mask.shape[-1] != vocab or self._mask.device != scores.device:
                self._mask = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
                self._mask[[i for i in eos_ids if 0 <= i < vocab]] = True
            return scores.masked_fill(self._mask, float("-inf"))

    return BlockEndOfSequence()


def _eos_ids(loaded: LoadedModel) -> list[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(int(loaded.tokenizer.eos_token_id))
    return sorted(ids)


class BaselineServer:
    """One ``model.generate`` per request, one request at a time (a lock), as a plain web wrapper would."""

    def __init__(self, loaded: LoadedModel, settings: EngineSettings) -> None:
        from inference.prompts import PromptBuilder

        self.loaded = loaded
        self.prompts = PromptBuilder(
            loaded.tokenizer,
            loaded.image_processor,
            merge_size=loaded.merge_size,
            system_prompt=settings.system_prompt,
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
            dtype=loaded.dtype,
        )
        self._lock = asyncio.Lock()
        self._block_eos = _eos_blocker(_eos_ids(loaded))

    def generate(self, item: WorkItem, max_new_tokens: int, started: float) -> tuple[BenchRequest, Probe]:
        """Build the prompt, preprocess the image and generate exactly ``max_new_tokens`` tokens."""
        import torch
        from transformers import LogitsProcessorList

        from bot.engine import GenerationRequest

        prepared = self.prompts.prepare(GenerationRequest(question=item.question, images=[item.image]))
        device = self.loaded.device
        input_ids = torch.tensor([prepared.input_ids], dtype=torch.long, device=device)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if prepared.pixel_values is not None and prepared.image_grid_thw is not None:
            inputs["pixel_values"] = prepared.pixel_values.to(device)
            inputs["image_grid_thw"] = prepared.image_grid_thw.to(device)
            # Which tokens are image tokens: without it generate gives them 1-D text positions, not 2-D mRoPE ones.
            inputs["mm_token_type_ids"] = (input_ids == self.prompts.image_token_id).int()
        clock = _token_clock()
        with torch.inference_mode():
            output = self.loaded.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([self._block_eos]),
                streamer=clock,
            )
        synchronize(device)
        return timed_request(
            item,
            started=started,
            first=clock.first,
            last=clock.last,
            finished=time.perf_counter(),
            prompt_tokens=prepared.prompt_tokens,
            generated_tokens=int(output.shape[1] - input_ids.shape[1]),
            image_tokens=prepared.image_tokens,
        )

    async def serve(self, item: WorkItem, max_new_tokens: int) -> tuple[BenchRequest, Probe]:
        """Wait for the model lock, then generate; the latency counts the wait."""
        started = time.perf_counter()
        async with self._lock:
            return await asyncio.to_thread(self.generate, item, max_new_tokens, started)


async def run_baseline(
    loaded: LoadedModel,
    settings: EngineSettings,
    items: Sequence[WorkItem],
    spec: WorkerSpec,
    probe_item: WorkItem | None,
) -> tuple[list[BenchRequest], float, Probe | None]:
    """The timed run and the probe on the baseline server: records, wall time, probe."""
    server = BaselineServer(loaded, settings)
    records, wall = await timed_run(server.serve, items, spec.concurrency, spec.max_new_tokens)
    return records, wall, await probe_alone(server.serve, probe_item)
