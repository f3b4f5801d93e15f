"""Answering one question: gather its images and documents, ask the engine, stream the reply."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.engine import Engine, GenerationRequest
from bot.errors import InputError, UserFacingError
from bot.settings import Settings
from bot.types import Adapter, FileRef, IncomingMessage, ReplyHandle
from bot.usage import note_engine_usage

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "What does this show? Point out anything that looks wrong, such as errors or warnings."


@dataclass(slots=True)
class GatheredInput:
    images: list = field(default_factory=list)  # PIL images, ready for the engine
    notes: list[str] = field(default_factory=list)  # user-facing remarks (pages read, tiles, skipped files)


async def gather_inputs(message: IncomingMessage, adapter: Adapter, settings: Settings) -> GatheredInput:
    """Fetch and decode the message's own files (errors go to the user) and its context files (best effort)."""
    from inference.images import load_attachment  # PIL/pypdfium2 only; imported lazily to keep start-up light

    limit = settings.images.max_images_per_question
    gathered = GatheredInput()

    async def load(file: FileRef) -> list:
        data = await adapter.fetch(file)
        attachment = await asyncio.to_thread(
            load_attachment,
            data,
            name=file.name,
            mime_type=file.mime_type,
            images=settings.images,
            max_pixels=settings.engine.max_pixels,
            min_pixels=settings.engine.min_pixels,
        )
        gathered.notes.extend(attachment.notes)
        return [prepared.image for prepared in attachment.images]

    for file in message.files:  # the user's own uploads: any problem is reported to them
        gathered.images.extend(await load(file))
    for file in message.context_files:  # earlier images in the thread: skip what cannot be read
        if len(gathered.images) >= limit:
            break
        try:
            gathered.images.extend(await load(file))
        except UserFacingError as exc:
            logger.info("skipped a context file: %s", exc)
    if len(gathered.images) > limit:
        gathered.notes.append(f"I looked at the first {limit} of {len(gathered.images)} images.")
        # Keep the newest images (the user's own uploads come first, so keep from the start).
        del gathered.images[limit:]
    return gathered


def compose_final(answer: str, notes: list[str]) -> str:
    answer = answer.strip() or "(The model gave an empty answer.)"
    if not notes:
        return answer
    return answer + "\n\n" + "\n".join(f"_{note}_" for note in notes)


async def answer_question(
    message: IncomingMessage,
    reply: ReplyHandle,
    *,
    adapter: Adapter,
    engine: Engine,
    settings: Settings,
    history: list,
) -> tuple[str, str]:
    """Run one question end to end. Returns (question, answer) on success; raises UserFacingError."""
    question = message.text
    if len(question) > settings.core.max_question_chars:
        raise InputError(
            f"Your question is {len(question):,} characters long; the limit is {settings.core.max_question_chars:,}."
        )
    gathered = await gather_inputs(message, adapter, settings)
    if not question and not gathered.images:
        raise InputError("Send me a screenshot, photo or PDF with a question, or type /help.")
    question = question or DEFAULT_QUESTION
    request = GenerationRequest(
        question=question,
        images=gathered.images,
        history=history,
        system_prompt=settings.engine.system_prompt,
        max_new_tokens=settings.engine.max_new_tokens,
        timeout_s=settings.engine.request_timeout_s,
    )
    stream = engine.submit(request)
    note_engine_usage(stream.usage)
    logger.info("queued engine request %s (%d images, %d ahead)", stream.request_id, len(request.images),
                stream.queue_position)
    if stream.queue_position > 0:
        await reply.start_progress(stream.queue_position)
    answer = ""
    try:
        async for chunk in stream:
            answer += chunk
            await reply.update(answer)
    except asyncio.CancelledError:
        stream.cancel()
        raise
    final = compose_final(answer, gathered.notes)
    await reply.finish(final)
    return question, answer
