"""Helpers shared by the engine tests: tiny models loaded once, engines with small limits, a pausable worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bot.engine import GenerationRequest
from bot.settings import EngineSettings

WAIT_S = 60.0


def tiny_settings(model_dir: Path | str, **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = dict(
        model=str(model_dir),
        device="cpu",
        max_batch_size=4,
        queue_limit=8,
        max_new_tokens=8,
        request_timeout_s=60.0,
        batch_window_s=0.0,
        stop_timeout_s=5.0,
        cpu_threads=1,
    )
    values.update(overrides)
    return EngineSettings(**values)


@lru_cache(maxsize=4)
def load_tiny(model_dir: str):  # -> LoadedModel
    """Each tiny checkpoint is loaded once per test session; engines share it."""
    from inference.loader import load_model

    return load_model(tiny_settings(model_dir))


def prompt_builder(loaded: Any):  # -> PromptBuilder
    """A prompt builder for a loaded tiny model: a short system prompt, images within 256² pixels."""
    from inference.prompts import PromptBuilder

    return PromptBuilder(
        loaded.tokenizer, loaded.image_processor, merge_size=loaded.merge_size, system_prompt="Be brief.",
        min_pixels=64 * 64, max_pixels=256 * 256, dtype=loaded.dtype,
    )  # fmt: skip


def eos_ids(loaded: Any) -> list[int]:
    """The end-of-sequence ids of a loaded model (its generation config's and its tokenizer's)."""
    eos = loaded.model.generation_config.eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]) | {loaded.tokenizer.eos_token_id})


@asynccontextmanager
async def running_engine(model_dir: Path | str, **overrides: Any) -> AsyncIterator[Any]:
    from inference.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_settings(model_dir, **overrides), loaded=load_tiny(str(model_dir)))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


@asynccontextmanager
async def paused(engine: Any) -> AsyncIterator[None]:
    """Hold the worker thread (between batches) so requests submitted meanwhile form one batch."""
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(WAIT_S)

    task = asyncio.create_task(engine.run_on_worker(hold, timeout_s=WAIT_S))
    assert await asyncio.to_thread(entered.wait, WAIT_S), "the worker never ran the pause task"
    try:
        yield
    finally:
        release.set()
        await asyncio.wait_for(task, WAIT_S)


def picture(width: int, height: int, seed: int) -> Image.Image:
    """A small synthetic screenshot-like image; different seeds give different content."""
    image = Image.new("RGB", (width, height), ((seed * 70) % 256, 120, (200 - seed * 45) % 256))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, width // 2, height // 2), fill=(255 - seed * 50 % 256, (seed * 90) % 256, 30))
    draw.line((0, height - 1, width - 1, 0), fill=(0, 0, 0), width=3)
    return image


def question(text: str = "What is on this screen?", *, images: int = 1, size=(96, 72), seed: int = 0,
             **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        question=text, images=[picture(*size, seed + i) for i in range(images)], **kwargs
    )


async def collect(stream: Any) -> tuple[list[str], str]:
    """All chunks of ``stream`` and its final text."""
    chunks = [chunk async for chunk in stream]
    return chunks, await stream.text()
