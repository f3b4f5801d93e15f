"""Files are opened in a small pool of worker processes: a bomb or a native hang ends a worker, never the bot.

Pillow and PDFium run on untrusted bytes. In the bot's own process a decompression bomb could take all memory (the
kernel would kill the whole bot, and the journal would replay the question) and a slow PDF would hold a thread of
the default executor and the process-wide PDFium lock. Here each file is opened by a worker process that is
limited in address space (``RLIMIT_AS``, ``PEEKBOT_MEDIA_MEMORY_LIMIT_MB``), CPU time (``RLIMIT_CPU``) and
wall-clock time (``PEEKBOT_MEDIA_TIME_LIMIT_S``), runs at a lower CPU priority than the bot, and is replaced when
it dies. The person who sent the file gets a sentence (``FileTooExpensive``) and the file's hash is remembered, so
the same file in a thread's context is refused at once instead of costing a worker again.

The pool is its own lane: ``PEEKBOT_MEDIA_WORKERS`` processes, a queue of its own (never the default executor),
and at most workers − 1 tasks per owner (the person asking) at once, so one person's files cannot take every
worker. Workers start from a forkserver that preloads ``bot.media.worker`` (Pillow, pypdfium2): never a fork of the
bot, whose memory (the model, torch) the children would otherwise share and count in their RSS.

Pebble's ``ProcessPool`` does the process work: per-task timeouts that kill the worker, cancellation of a running
task (also when the question is cancelled), replacement of dead workers with the task failed as
``ProcessExpired``, an initializer for the limits and a choice of start method. ``concurrent.futures``'
``ProcessPoolExecutor`` has no per-task timeout and breaks as a whole when one worker dies; loky reuses a
long-lived executor without per-task kills.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import hashlib
import logging
import multiprocessing
import signal
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from pebble import ProcessExpired, ProcessPool

from bot.errors import InputError
from bot.i18n import note
from bot.media import worker
from bot.media.files import load_attachment, read_document
from bot.media.parts import DocumentText
from bot.media.pdf import pdf_page_count, pdf_page_texts, render_pdf_pages
from bot.media.pictures import Attachment, PixelBudget, PreparedImage
from bot.media.sniff import sniff_kind
from bot.media.wording import clean_name, named
from bot.settings import ImageSettings

logger = logging.getLogger(__name__)

WORKER_NICENESS = 10
"""Workers yield the CPU to the bot (the model, the event loop) when both want it."""
REMEMBERED_FILES = 512
"""Hashes of files that were too expensive to open, kept so the same file is refused at once."""
START_TIMEOUT_S = 60.0

Cause = Literal["memory", "time", "crash"]


class FileTooExpensive(InputError):
    """Opening the file took more memory or time than a worker may use, or ended the worker."""

    kind = "file_too_expensive"


def _too_expensive(what: str, name: str, cause: Cause, settings: ImageSettings) -> FileTooExpensive:
    if cause == "memory":
        why = note("media.why_memory", limit=settings.media_memory_limit_mb)
    elif cause == "time":
        why = note("media.why_time", limit=settings.media_time_limit_s)
    else:
        why = note("media.why_crash")
    return FileTooExpensive(
        key="media.too_expensive", detail=f"media worker: {cause}", what=note(f"kind.{what.lower()}"),
        named=named(clean_name(name)), why=why,
    )


def _cause_of(exc: ProcessExpired) -> Cause:
    if exc.exitcode == -signal.SIGXCPU:
        return "time"
    return "crash"


def _context() -> multiprocessing.context.BaseContext:
    """forkserver (workers never copy the bot's memory), preloading the worker's imports once."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bot.media.worker"])
    return context


class _Lanes:
    """At most ``per_owner`` tasks of one owner run or wait for a worker at once."""

    def __init__(self, per_owner: int) -> None:
        self.per_owner = max(1, per_owner)
        self._lanes: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, owner: str) -> AsyncIterator[None]:
        semaphore, users = self._lanes.get(owner) or (asyncio.Semaphore(self.per_owner), 0)
        self._lanes[owner] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._lanes[owner]
            if users <= 1:
                del self._lanes[owner]
            else:
                self._lanes[owner] = (semaphore, users - 1)


class MediaPool:
    """Worker processes that open files. Started on first use; ``close()`` stops them (the owner calls it).

    The ``Application`` owns one and hands it to whoever opens files; ``shared_pool()`` serves callers without one.
    ``settings`` gives the pool's own limits (workers, memory and time per file); each call passes the reader's
    settings. Every method raises what the reader raises (an ``InputError`` with its sentence) or
    ``FileTooExpensive``.
    """

    def __init__(self, settings: ImageSettings, *, niceness: int = WORKER_NICENESS) -> None:
        self.settings = settings
        self.niceness = niceness
        self._pool: ProcessPool | None = None
        self._control: concurrent.futures.ThreadPoolExecutor | None = None
        self._state = threading.Lock()
        self._lanes = _Lanes(max(1, settings.media_workers) - 1)
        self._refused: OrderedDict[str, FileTooExpensive] = OrderedDict()
        self._in_flight: dict[concurrent.futures.Future[Any], ProcessPool] = {}
        self.workers_lost = 0
        """Workers ended by a file (killed at a limit or crashed) since the start."""

    # -- opening files ------------------------------------------------------------------------------------
    async def open_file(
        self,
        data: bytes,
        *,
        name: str = "",
        mime_type: str = "",
        images: ImageSettings,
        max_pixels: int,
        min_pixels: int,
        factor: int = 1,
        deadline: float | None = None,
        owner: str = "",
    ) -> Attachment:
        """``bot.media.files.load_attachment`` in a worker; ``owner`` (who asked) picks the lane."""
        kind = sniff_kind(data, name, mime_type)
        what = "PDF" if kind == "pdf" else "image" if kind == "image" else "file"
        kwargs = dict(
            name=name,
            mime_type=mime_type,
            images=images,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            factor=factor,
            deadline=deadline,
        )
        return await self._run(load_attachment, (data,), kwargs, data=data, what=what, name=name, owner=owner)

    async def read_document(
        self,
        data: bytes,
        *,
        name: str = "",
        mime_type: str = "",
        images: ImageSettings,
        deadline: float | None = None,
        owner: str = "",
    ) -> DocumentText:
        """``bot.media.files.read_document`` (Office and text files) in a worker."""
        kwargs = {"name": name, "mime_type": mime_type, "images": images, "deadline": deadline}
        return await self._run(read_document, (data,), kwargs, data=data, what="file", name=name, owner=owner)

    async def page_count(self, data: bytes, *, name: str = "", owner: str = "") -> int:
        """``bot.media.pdf.pdf_page_count`` in a worker."""
        return await self._run(pdf_page_count, (data,), {"name": name}, data=data, what="PDF", name=name, owner=owner)

    async def page_texts(
        self,
        data: bytes,
        pages: Sequence[int],
        *,
        name: str = "",
        settings: ImageSettings,
        deadline: float | None = None,
        owner: str = "",
    ) -> dict[int, str]:
        """``bot.media.pdf.pdf_page_texts`` in a worker: the pages read before the deadline."""
        kwargs = {"name": name, "settings": settings, "deadline": deadline}
        return await self._run(
            pdf_page_texts, (data, list(pages)), kwargs, data=data, what="PDF", name=name, owner=owner
        )

    async def render_pages(
        self,
        data: bytes,
        pages: Sequence[int],
        *,
        name: str,
        settings: ImageSettings,
        budget: PixelBudget,
        source_sha: str,
        deadline: float | None = None,
        owner: str = "",
    ) -> list[PreparedImage]:
        """``bot.media.pdf.render_pdf_pages`` in a worker."""
        kwargs = dict(name=name, settings=settings, budget=budget, source_sha=source_sha, deadline=deadline)
        return await self._run(
            render_pdf_pages, (data, list(pages)), kwargs, data=data, what="PDF", name=name, owner=owner
        )

    # -- the pool -----------------------------------------------------------------------------------------
    async def _run(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        data: bytes,
        what: str,
        name: str,
        owner: str,
    ) -> Any:
        content_hash = hashlib.sha256(data).hexdigest()
        refused = self._refused.get(content_hash)
        if refused is not None:
            raise _too_expensive_again(refused)
        async with self._lanes.slot(owner):
            limit = max(0.1, self.settings.media_time_limit_s)
            for attempt in (1, 2):
                pool = await self._started()
                future = pool.schedule(worker.run_task, args=(task, limit, args, kwargs), timeout=limit)
                self._in_flight[future] = pool
                try:
                    outcome: worker.Outcome = await asyncio.wrap_future(future)
                except TimeoutError:
                    raise self._refuse(content_hash, what, name, "time") from None
                except ProcessExpired as exc:
                    logger.warning("a media worker ended (exit code %s) while opening a %s", exc.exitcode, what)
                    raise self._refuse(content_hash, what, name, _cause_of(exc)) from None
                except BrokenProcessPool:
                    # Pebble gives up on the whole pool when a worker dies between tasks: start a new one and
                    # try once more (the file was not necessarily the cause).
                    if attempt == 2:
                        raise
                    logger.warning("the media worker pool broke; starting a new one")
                    await self._restart(pool)
                    continue
                finally:
                    self._in_flight.pop(future, None)
                if outcome.out_of_memory:
                    raise self._refuse(content_hash, what, name, "memory")
                if outcome.error is not None:
                    raise outcome.error.rebuild()
                return outcome.value
        raise AssertionError("unreachable")

    def _refuse(self, content_hash: str, what: str, name: str, cause: Cause) -> FileTooExpensive:
        self.workers_lost += cause != "memory"
        error = _too_expensive(what, name, cause, self.settings)
        self._refused[content_hash] = error
        self._refused.move_to_end(content_hash)
        while len(self._refused) > REMEMBERED_FILES:
            self._refused.popitem(last=False)
        logger.info("refused a %s as too expensive to open (%s) hash=%s", what, cause, content_hash[:12])
        return error

    async def _started(self) -> ProcessPool:
        pool = self._pool
        if pool is not None and pool.active:
            return pool
        return await asyncio.get_running_loop().run_in_executor(self._control_thread(), self._start_blocking)

    async def _restart(self, broken: ProcessPool) -> None:
        """Stop ``broken`` (unless another caller already replaced it); the next use starts a new pool."""
        await asyncio.get_running_loop().run_in_executor(self._control_thread(), self._stop_blocking, broken)

    def _control_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """One thread of the pool's own that starts and stops it (both block for a moment)."""
        with self._state:
            if self._control is None:
                self._control = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="media-pool")
            return self._control

    def _start_blocking(self) -> ProcessPool:
        with self._state:
            if self._pool is not None and self._pool.active:
                return self._pool
        self._stop_blocking()
        settings = self.settings
        pool = ProcessPool(
            max_workers=max(1, settings.media_workers),
            initializer=worker.init_worker,
            initargs=(max(0, settings.media_memory_limit_mb) * 1024 * 1024, self.niceness),
            context=_context(),
        )
        pool.schedule(worker.ping).result(timeout=START_TIMEOUT_S)
        with self._state:
            self._pool = pool
        logger.info(
            "media workers started: %d, %d MB and %.0f s per file",
            settings.media_workers,
            settings.media_memory_limit_mb,
            settings.media_time_limit_s,
        )
        return pool

    def _stop_blocking(self, only: ProcessPool | None = None) -> None:
        with self._state:
            if only is not None and self._pool is not only:
                return
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            for future, owner in list(self._in_flight.items()):  # a stopped pool never settles its tasks
                if owner is pool:
                    future.cancel()
            try:
                pool.join(timeout=10)
            except Exception:
                logger.exception("stopping the media workers failed")

    async def close(self) -> None:
        """Stop the workers (tasks still running are ended); a later use starts new ones."""
        control = self._control
        if control is None:
            return
        await asyncio.get_running_loop().run_in_executor(control, self._stop_blocking)
        with self._state:
            self._control = None
        control.shutdown(wait=False)

    def close_now(self) -> None:
        """``close`` for code without an event loop (the process is exiting)."""
        self._stop_blocking()
        with self._state:
            control, self._control = self._control, None
        if control is not None:
            control.shutdown(wait=False)

    @property
    def running(self) -> bool:
        pool = self._pool
        return pool is not None and pool.active


def _too_expensive_again(refused: FileTooExpensive) -> FileTooExpensive:
    return FileTooExpensive(detail=f"{refused} (remembered)", key=refused.key, **refused.values)


_shared: MediaPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> MediaPool:
    """The process-wide pool for code that runs without an ``Application`` (tests, scripts); stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MediaPool(ImageSettings())
            atexit.register(_shared.close_now)
        return _shared
