"""Answering one question: gather its images and documents, fit the thread's context, ask the engine, stream.

What a question is sent, in order of priority: the person's own new files and question; pages chosen from long
documents (bot.library); then the thread's newest earlier images and newest earlier turns, within an estimated
token budget (``PEEKBOT_CONTEXT_TOKEN_BUDGET``). Older turns and images are left out first, and the answer says so.
File bytes and pictures live only for this request; what is reported back (``AnsweredQuestion``) is hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bot.conversations import EarlierFile
from bot.engine import ChatTurn, Engine, GenerationRequest
from bot.errors import InputError, UserFacingError
from bot.i18n import Said, lang_for, said, say
from bot.instructions import instructions_for
from bot.library import DocumentLibrary, DocumentPages, LongDocument
from bot.settings import Settings
from bot.types import Adapter, FileRef, IncomingMessage, ReplyHandle, ShowsStatus
from bot.usage import note_engine_usage

if TYPE_CHECKING:
    from bot.media.pictures import PreparedImage
    from bot.media.pool import MediaPool
    from bot.store.base import Store

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "What does this show? Point out anything that looks wrong, such as errors or warnings."
PIXELS_PER_IMAGE_TOKEN = 28 * 28
"""Qwen2.5-VL makes one token per 28×28 pixels, Qwen3-VL per 32×32: the smaller patch is the safe estimate."""
IMAGE_OVERHEAD_TOKENS = 2  # <|vision_start|> … <|vision_end|>
CHARS_PER_TOKEN = 3
TURN_OVERHEAD_TOKENS = 4  # <|im_start|>role\n … <|im_end|>\n


@dataclass(slots=True)
class GatheredInput:
    """Everything read for one question. ``images`` is filled by ``fit_context`` with what the model gets."""

    images: list = field(default_factory=list)  # PIL images, ready for the engine, in order
    notes: list[Said] = field(default_factory=list)  # user-facing remarks (pages read, tiles, skipped files)
    files_seen: list[tuple[FileRef, str]] = field(default_factory=list)
    """Each fetched file and the sha256 of its bytes (for the conversation store)."""
    image_hashes: list[str] = field(default_factory=list)
    """Content hashes of the pictures sent to the model."""
    own: list[PreparedImage] = field(default_factory=list)
    """Pictures of the message's own files."""
    context: list[PreparedImage] = field(default_factory=list)
    """Pictures of earlier files in the conversation, oldest first."""
    context_sources: list[EarlierFile] = field(default_factory=list)
    """The file each ``context`` picture came from, and when the store first kept it (``inf``: not in the store, e.g.
    a thread file the adapter found): the picture goes with the first earlier question asked at or after that time."""
    documents: list[LongDocument] = field(default_factory=list)
    """Long documents (more pages than one question carries): searched, not sent whole."""
    texts: list[str] = field(default_factory=list)
    """Text of Office and text files short enough to be sent whole, each headed by where it is from."""


@dataclass(slots=True)
class AnsweredQuestion:
    """What ``answer_question`` did, for the conversation store and the audit log (no file contents)."""

    question: str
    answer: str
    image_hashes: list[str] = field(default_factory=list)
    files_seen: list[tuple[FileRef, str]] = field(default_factory=list)
    cached: bool = False
    pages_used: list[tuple[str, list[int]]] = field(default_factory=list)
    """(document name, pages) sent with the question."""


# ---------------------------------------------------------------------------------------------- gathering


def _file_key(file: FileRef) -> tuple[str, str]:
    return (file.platform, file.file_id)


def context_files_for(
    message: IncomingMessage, conversation_files: Sequence[FileRef | EarlierFile]
) -> list[EarlierFile]:
    """Earlier files of the conversation, oldest first: the store's, then the adapter's, each once (a file the store
    does not time is ``stored_at=inf``)."""
    seen = {_file_key(f) for f in message.files}
    ordered: list[EarlierFile] = []
    stored = [f if isinstance(f, EarlierFile) else EarlierFile(f, math.inf) for f in conversation_files]
    for earlier in [*stored, *(EarlierFile(f, math.inf) for f in message.context_files)]:
        key = _file_key(earlier.file)
        if key not in seen:
            seen.add(key)
            ordered.append(earlier)
    return ordered


async def gather_inputs(
    message: IncomingMessage,
    adapter: Adapter,
    settings: Settings,
    *,
    library: DocumentLibrary | None = None,
    conversation_files: Sequence[FileRef | EarlierFile] = (),
    media: MediaPool | None = None,
) -> GatheredInput:
    """Fetch and decode the message's own files (errors go to the user) and earlier files (best effort).

    Without a ``library`` every PDF is read as today (its first pages); with one, a PDF too long for one question
    becomes a document of the conversation. ``images`` is left empty: ``fit_context`` chooses what is sent.
    Files are opened in ``media``'s worker processes (default: ``shared_pool()``), in the lane of the person who
    asked; PDF work shares one deadline, ``pdf_time_budget_s`` from now.
    """
    from bot.media.pool import shared_pool  # PIL/pypdfium2 only; imported lazily
    from bot.media.sniff import sniff_kind

    opener = media if media is not None else shared_pool()
    owner = message.user.key
    deadline = time.monotonic() + settings.images.pdf_time_budget_s
    gathered = GatheredInput()
    hashes_read: set[str] = set()
    conversation = str(message.conversation)

    async def load(file: FileRef) -> list[PreparedImage]:
        data = await adapter.fetch(file)
        content_hash = hashlib.sha256(data).hexdigest()
        gathered.files_seen.append((file, content_hash))
        if content_hash in hashes_read:  # the same file posted twice: read it once
            return []
        hashes_read.add(content_hash)
        kind = sniff_kind(data, file.name, file.mime_type) if data else None
        if kind == "document":  # Office and text files: read as text (bot.library searches the long ones)
            return await _read_document(file, data, content_hash)
        if library is not None and kind == "pdf":
            page_count = await opener.page_count(data, name=file.name, owner=owner)
            if library.is_long(page_count):
                document = await library.open_document(
                    file, data, conversation=conversation, page_count=page_count, content_hash=content_hash,
                    owner=owner,
                )
                gathered.documents.append(document)
                return []
        attachment = await opener.open_file(
            data,
            name=file.name,
            mime_type=file.mime_type,
            images=settings.images,
            max_pixels=settings.engine.max_pixels,
            min_pixels=settings.engine.min_pixels,
            deadline=deadline,
            owner=owner,
        )
        gathered.notes.extend(attachment.notes)
        return list(attachment.images)

    async def _read_document(file: FileRef, data: bytes, content_hash: str) -> list[PreparedImage]:
        from bot.library import part_pictures, whole_text

        stored = None
        if library is not None:  # indexed whole before in this conversation: its parts are in the index
            stored = await library.stored_parts(
                data, name=file.name, conversation=conversation, content_hash=content_hash
            )
        read = stored or await opener.read_document(
            data, name=file.name, mime_type=file.mime_type, images=settings.images, deadline=deadline, owner=owner
        )
        gathered.notes.extend(read.notes)
        if library is not None and library.is_long_text(read):
            gathered.documents.append(
                await library.open_parts(file, read, conversation=conversation, content_hash=content_hash, owner=owner)
            )
            return []
        text, notes = whole_text(read, settings.images.doc_text_chars_per_question)
        gathered.texts.append(text)
        gathered.notes.extend(notes)
        blobs = [blob for part in read.parts for blob in part.pictures][: settings.images.max_images_per_question]
        return await part_pictures(opener, blobs, label=read.name or "file", settings=settings, owner=owner)

    for file in message.files:  # the user's own uploads: any problem is reported to them
        gathered.own.extend(await load(file))
    for earlier in context_files_for(message, conversation_files):  # earlier files: skip what cannot be read
        try:
            pictures = await load(earlier.file)
        except UserFacingError as exc:
            logger.info("skipped a context file: %s", exc)
            continue
        gathered.context.extend(pictures)
        gathered.context_sources.extend(earlier for _ in pictures)
    return gathered


# ---------------------------------------------------------------------------------------------- token budget


def image_tokens(width: int, height: int) -> int:
    """Estimated prompt tokens of one picture (conservative: the 28-pixel patch)."""
    return math.ceil(width * height / PIXELS_PER_IMAGE_TOKEN) + IMAGE_OVERHEAD_TOKENS


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + TURN_OVERHEAD_TOKENS


def _prepared_tokens(prepared: PreparedImage) -> int:
    return image_tokens(prepared.image.width, prepared.image.height)


def _exchanges(history: Sequence[ChatTurn]) -> list[list[ChatTurn]]:
    """Turns grouped so each group starts at a question: dropped together, no answer without its question."""
    groups: list[list[ChatTurn]] = []
    for turn in history:
        if turn.role == "user" or not groups:
            groups.append([turn])
        else:
            groups[-1].append(turn)
    return groups


@dataclass(slots=True)
class ContextFit:
    context: list[PreparedImage]
    """Earlier pictures kept, oldest first."""
    history: list[ChatTurn]
    dropped_images: int
    dropped_turns: int

    def note(self, lang: str = "en") -> str | None:
        """What was left out, in ``lang``; None when nothing was."""
        parts = []
        if self.dropped_images:
            key = "context.images_one" if self.dropped_images == 1 else "context.images_many"
            parts.append(say(key, lang, n=self.dropped_images))
        if self.dropped_turns:
            key = "context.messages_one" if self.dropped_turns == 1 else "context.messages_many"
            parts.append(say(key, lang, n=self.dropped_turns))
        if not parts:
            return None
        return say("context.left_out", lang, parts=say("context.and", lang).join(parts))


def fit_context(
    *,
    fixed_tokens: int,
    context: Sequence[PreparedImage],
    history: Sequence[ChatTurn],
    budget_tokens: int,
    image_slots: int,
) -> ContextFit:
    """Keep the newest earlier pictures and turns that fit next to what must be sent (``fixed_tokens``).

    Pictures and exchanges are taken newest first, one of each in turn; a kind stops at its first item that
    does not fit, so what is left out is always the oldest.
    """
    remaining = budget_tokens - fixed_tokens
    exchanges = _exchanges(history)
    kept_images: list[PreparedImage] = []
    kept_exchanges: list[list[ChatTurn]] = []
    image_index, exchange_index = len(context) - 1, len(exchanges) - 1
    images_open, turns_open = True, True
    while (images_open and image_index >= 0) or (turns_open and exchange_index >= 0):
        if images_open and image_index >= 0:
            cost = _prepared_tokens(context[image_index])
            if len(kept_images) < image_slots and cost <= remaining:
                kept_images.append(context[image_index])
                remaining -= cost
                image_index -= 1
            else:
                images_open = False
        if turns_open and exchange_index >= 0:
            cost = sum(text_tokens(turn.text) for turn in exchanges[exchange_index])
            if cost <= remaining:
                kept_exchanges.append(exchanges[exchange_index])
                remaining -= cost
                exchange_index -= 1
            else:
                turns_open = False
    kept_images.reverse()
    kept_exchanges.reverse()
    kept_history = [turn for exchange in kept_exchanges for turn in exchange]
    return ContextFit(
        context=kept_images,
        history=kept_history,
        dropped_images=len(context) - len(kept_images),
        dropped_turns=len(history) - len(kept_history),
    )


def place_pictures(
    history: Sequence[ChatTurn], pictures: Sequence[PreparedImage], stored_at: Sequence[float]
) -> tuple[list[ChatTurn], list[PreparedImage], list[PreparedImage]]:
    """Put each earlier picture back in the user turn that first showed it to the model: the first turn of
    ``history`` stored at or after its file (``stored_at``, per picture). Returns the turns with their picture
    counts (``ChatTurn.images``), the pictures so placed in prompt order, and the rest (they go with the question).

    The prompt then reads as the conversation happened, and a follow-up's prompt begins with the earlier question's
    whole prompt, so the engine reuses that prompt's keys and values (``inference.prefix_cache``).
    """
    user_turns = [index for index, turn in enumerate(history) if turn.role == "user"]
    placed: dict[int, list[PreparedImage]] = {}
    with_question: list[PreparedImage] = []
    for picture, at in zip(pictures, stored_at, strict=True):
        turn = next((index for index in user_turns if history[index].stored_at >= at), None)
        if turn is None:
            with_question.append(picture)
        else:
            placed.setdefault(turn, []).append(picture)
    turns = [
        replace(turn, images=len(placed[index])) if index in placed else turn
        for index, turn in enumerate(history)
    ]
    return turns, [picture for index in sorted(placed) for picture in placed[index]], with_question


# ---------------------------------------------------------------------------------------------- answering


def compose_final(answer: str, notes: Sequence[Said], lang: str = "en") -> str:
    """The answer with the notes under it, each said in ``lang`` (a plain string note is shown as it is)."""
    answer = answer.strip() or say("answer.empty", lang)
    if not notes:
        return answer
    return answer + "\n\n" + "\n".join(f"_{said(note, lang)}_" for note in notes)


CACHE_KEY_VERSION = 5
"""Bumped whenever what goes into the answer cache key changes, so older entries are never matched."""
CACHE_SAMPLING_FIELDS = ("max_new_tokens", "min_new_tokens", "sampling")
"""What shapes the answer beyond its inputs: ``GenerationRequest`` fields, else the entry of ``Engine.describe()``
(``sampling``: greedy, or the checkpoint's temperature, top_k and top_p). Fields that do not change the answer
(``request_id``, ``timeout_s``) stay out."""
CACHE_MODEL_FIELDS = ("backend", "model", "quantization", "dtype")
"""Entries of ``Engine.describe()`` that name the model answering."""


def answer_cache_key(
    request: GenerationRequest,
    files_seen: Sequence[tuple[FileRef, str]],
    *,
    picture_hashes: Sequence[str],
    model: Mapping[str, Any],
    instructions: str = "",
    lang: str = "en",
) -> str:
    """The key of an answer: the same question in the same context gets the same key, any difference a new one.

    It covers everything the model is sent (the prompt, the thread's turns that fit the token budget, the pictures
    by ``picture_hashes`` and size, the system prompt), the files read for it by content hash in order, the model
    (``model`` is ``Engine.describe()``), the length and sampling settings, and ``instructions``: the channel's
    instructions (``bot.instructions``), so that changed instructions never serve an answer cached under the old,
    and ``lang``, the language of the notes under the answer (``bot.i18n``).
    """
    sizes = [f"{image.width}x{image.height}" for image in request.images]
    parts = {
        "v": CACHE_KEY_VERSION,
        "question": request.question,
        "history": [[turn.role, turn.text, turn.images] for turn in request.history],
        "pictures": [f"{content_hash}:{size}" for content_hash, size in zip(picture_hashes, sizes, strict=False)],
        "files": [content_hash for _, content_hash in files_seen],
        "system_prompt": request.system_prompt or "",
        "instructions": instructions,
        "lang": lang,
        "model": {name: str(model.get(name, "")) for name in CACHE_MODEL_FIELDS},
        "sampling": {name: getattr(request, name, model.get(name)) for name in CACHE_SAMPLING_FIELDS},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def reading_status(message: IncomingMessage) -> str | None:
    """The status line while a question's files are opened ("looking at the screenshot…"), None without files."""
    files = [*message.files, *message.context_files]
    lang = lang_for(message)
    if any(not f.is_image for f in files):  # a PDF, an Office or a text file
        return say("status.reading_document", lang)
    pictures = sum(1 for f in files if f.is_image)
    if not pictures:
        return None
    return say("status.looking_screenshots" if pictures > 1 else "status.looking_screenshot", lang)


def pages_status(pages: DocumentPages, lang: str = "en") -> str | None:
    """The status line while the model reads a long document's chosen pages ("reading pages 4, 9 of 12…")."""
    if not pages.pages:
        return None
    document, numbers = pages.pages[0]
    if not numbers:
        return None
    separator = say("used.separator", lang)
    listed = separator.join(document.part_label(n, lang) for n in numbers[:3])
    listed += f"{separator}…" if len(numbers) > 3 else ""
    if document.has_parts:
        return say("status.reading_of", lang, listed=listed, document=document.label)
    unit = f"unit.{document.unit}{'s' if len(numbers) > 1 else ''}"
    return say("status.reading_numbered", lang, listed=say(unit, lang, numbers=listed), total=document.page_count)


async def show_status(reply: ReplyHandle, text: str | None) -> None:
    """Show ``text`` as the reply's status line where the platform has one (``ShowsStatus``); cosmetic."""
    if not text or not isinstance(reply, ShowsStatus):
        return
    try:
        await reply.status(text)
    except Exception as exc:
        logger.debug("could not show a status line: %s", exc)


async def answer_question(
    message: IncomingMessage,
    reply: ReplyHandle,
    *,
    adapter: Adapter,
    engine: Engine,
    settings: Settings,
    history: list,
    library: DocumentLibrary | None = None,
    conversation_files: Sequence[FileRef | EarlierFile] = (),
    store: Store | None = None,
    media: MediaPool | None = None,
    engine_turn: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> AnsweredQuestion:
    """Run one question end to end; raises UserFacingError.

    ``history`` is the conversation's earlier turns, oldest first; ``conversation_files`` are files the store
    remembers from the conversation beyond the adapter's ``context_files``. With a ``store``, long documents are
    searched through ``store.documents`` (unless a ``library`` is given) and answers are cached in ``store.cache``.
    ``media`` opens the files (worker processes; default ``bot.media.pool.shared_pool()``). ``engine_turn`` (the
    core's fair share of the model) is entered once the files are open, so opening files never holds a model slot.
    """
    question = message.text
    if len(question) > settings.core.max_question_chars:
        raise InputError(key="question.too_long", length=len(question), limit=settings.core.max_question_chars)
    if library is None and store is not None:
        library = DocumentLibrary(store.documents, engine, settings, media=media)
    await show_status(reply, reading_status(message))
    gathered = await gather_inputs(
        message, adapter, settings, library=library, conversation_files=conversation_files, media=media
    )
    if not question and not gathered.own and not gathered.context and not gathered.documents and not gathered.texts:
        raise InputError(key="question.empty")
    asked = question or DEFAULT_QUESTION
    instructions = await instructions_for(store, message.conversation) if store is not None else ""
    async with engine_turn() if engine_turn is not None else contextlib.nullcontext():
        return await _answer_gathered(
            message, reply, asked, gathered, history, engine=engine, settings=settings, library=library, store=store,
            instructions=instructions,
        )


async def _answer_gathered(
    message: IncomingMessage,
    reply: ReplyHandle,
    asked: str,
    gathered: GatheredInput,
    history: Sequence[ChatTurn],
    *,
    engine: Engine,
    settings: Settings,
    library: DocumentLibrary | None,
    store: Store | None,
    instructions: str = "",
) -> AnsweredQuestion:
    """Choose pages, fit the context, answer from cache or the engine, and deliver the final text."""
    conversation = str(message.conversation)
    request, pages = await _build_request(
        message, asked, gathered, history, settings=settings, library=library, instructions=instructions
    )
    pages_used = [(said(document.label), list(numbers)) for document, numbers in pages.pages]
    caching = store is not None and gathered.files_seen and settings.core.answer_cache_ttl_s > 0
    cache_key = None
    if caching:  # keyed on what is actually sent: after the context fit and the choice of pages
        cache_key = answer_cache_key(
            request, gathered.files_seen, picture_hashes=gathered.image_hashes, model=_model_of(engine),
            instructions=request.instructions, lang=lang_for(message),
        )
        cached = await _cached_answer(store, conversation, cache_key)
        if cached is not None:
            logger.info("answered from cache (%d files)", len(gathered.files_seen))
            await reply.finish(cached)
            return AnsweredQuestion(asked, cached, files_seen=gathered.files_seen, cached=True,
                                    image_hashes=gathered.image_hashes, pages_used=pages_used)

    lang = lang_for(message)
    status = pages_status(pages, lang) or say("status.writing", lang)
    answer = await _stream_answer(request, reply, engine, status=status)
    notes = list(gathered.notes)
    used = pages.used_note(lang_for(message))
    if used:
        notes.append(used)
    final = compose_final(answer, notes, lang_for(message))
    if cache_key is not None and answer.strip():
        await _cache_answer(store, conversation, cache_key, final, settings)
    await reply.finish(final)
    return AnsweredQuestion(
        question=asked,
        answer=answer,
        image_hashes=gathered.image_hashes,
        files_seen=gathered.files_seen,
        pages_used=pages_used,
    )


async def _build_request(
    message: IncomingMessage,
    asked: str,
    gathered: GatheredInput,
    history: Sequence[ChatTurn],
    *,
    settings: Settings,
    library: DocumentLibrary | None,
    instructions: str = "",
) -> tuple[GenerationRequest, DocumentPages]:
    """Choose document pages and fit the thread's context; fills ``gathered.images``/``image_hashes``/``notes``.
    ``instructions`` are the channel's (``bot.instructions``): they travel with the request to the engine."""
    limit = max(1, settings.images.max_images_per_question)
    own = gathered.own
    if len(own) > limit:
        gathered.notes.append(say("question.first_images", lang_for(message), limit=limit, count=len(own)))
        own = own[:limit]
    pages = DocumentPages()
    if library is not None and gathered.documents:
        pages = await library.pages_for_question(
            gathered.documents, message.text, max_images=limit - len(own), lang=lang_for(message)
        )
    context = gathered.context
    slots = limit - len(own) - len(pages.images)
    if library is not None and 0 < slots < len(context):
        # More earlier images than fit: search them like a document's pages instead of keeping only the newest.
        image_set = await library.open_image_set(
            context, conversation=str(message.conversation), newest_file=gathered.context_sources[-1].file
        )
        pages.extend(
            await library.pages_for_question(
                [image_set], message.text, max_images=slots, max_pages=slots, lang=lang_for(message)
            )
        )
        context = []
    gathered.notes.extend(pages.notes)
    file_text = "\n\n".join([*gathered.texts, *pages.texts])
    fixed = (
        text_tokens(settings.engine.system_prompt or "")
        + (text_tokens(instructions) if instructions else 0)
        + text_tokens(asked)
        + sum(_prepared_tokens(p) for p in [*own, *pages.images])
        + (text_tokens(file_text) if file_text else 0)
    )
    fit = fit_context(
        fixed_tokens=fixed,
        context=context,
        history=list(history),
        budget_tokens=settings.engine.context_token_budget,
        image_slots=limit - len(own) - len(pages.images),
    )
    note = fit.note(lang_for(message))
    if note:
        gathered.notes.append(note)
    kept = gathered.context_sources[len(gathered.context) - len(fit.context):]
    kept_stored_at = [earlier.stored_at for earlier in kept]
    history_turns, shown_earlier, with_question = place_pictures(fit.history, fit.context, kept_stored_at)
    sent = [*shown_earlier, *with_question, *own, *pages.images]
    gathered.images = [p.image for p in sent]
    gathered.image_hashes = [p.sha256 for p in sent]
    prompt = asked
    line = pages.prompt_line(pictures_before=len(sent) - len(pages.images))
    if line:
        prompt = f"{asked}\n\n({line})"
    if file_text:
        prompt = f"{file_text}\n\n{prompt}"
    logger.info(
        "context for question: %d own, %d document, %d earlier pictures (%d left out), %d turns (%d left out)",
        len(own), len(pages.images), len(fit.context), fit.dropped_images, len(fit.history), fit.dropped_turns,
    )
    request = GenerationRequest(
        question=prompt,
        images=gathered.images,
        history=history_turns,
        system_prompt=settings.engine.system_prompt,
        instructions=instructions,
        max_new_tokens=settings.engine.max_new_tokens,
        timeout_s=settings.engine.request_timeout_s,
        user=message.user.key,
        image_hashes=list(gathered.image_hashes),
    )
    return request, pages


async def _stream_answer(
    request: GenerationRequest, reply: ReplyHandle, engine: Engine, *, status: str | None = None
) -> str:
    await show_status(reply, status or say("status.writing"))
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
    return answer


def _model_of(engine: Engine) -> Mapping[str, Any]:
    """What the engine says about its model (for the cache key); empty when it cannot say."""
    try:
        return engine.describe()
    except Exception:
        logger.warning("the engine could not describe its model; caching under an unnamed model")
        return {}


async def _cached_answer(store: Store, conversation: str, key: str) -> str | None:
    try:
        return await store.cache.get_answer(conversation, key)
    except Exception:
        logger.exception("answer cache lookup failed")
        return None


async def _cache_answer(store: Store, conversation: str, key: str, answer: str, settings: Settings) -> None:
    try:
        await store.cache.put_answer(conversation, key, answer, settings.core.answer_cache_ttl_s)
    except Exception:
        logger.exception("could not cache the answer")
