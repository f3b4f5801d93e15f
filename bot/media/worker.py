"""What runs inside a media worker process (see ``bot.media.pool``): its limits, and results that travel back.

Each worker is limited once when it starts (address space, a lower CPU priority, SIGTERM kills at once even inside
native code) and again for every task (a CPU-time limit counted from the task's start). A task's result, or the
sentence of a ``UserFacingError`` it raised, goes back pickled; running out of memory inside Python is reported as
such. This module is the forkserver's preload: it imports Pillow and pypdfium2, never torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import resource
import signal
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bot.errors
import bot.media.files
from bot.errors import InputError, UserFacingError


@dataclass(frozen=True)
class PortableError:
    """A ``UserFacingError`` raised in a worker, by class name, sentence and catalogue key (``text(lang)`` works)."""

    kind: str
    user_message: str
    detail: str
    key: str = ""
    values: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, exc: UserFacingError) -> PortableError:
        return cls(type(exc).__name__, exc.user_message, str(exc), exc.key, tuple(exc.values.items()))

    def rebuild(self) -> UserFacingError:
        """The same error in this process; unknown classes become ``InputError``."""
        error_class = getattr(bot.errors, self.kind, None)
        if not (isinstance(error_class, type) and issubclass(error_class, InputError)):
            error_class = InputError
        return error_class(self.user_message, detail=self.detail, key=self.key, **dict(self.values))


@dataclass(frozen=True)
class Outcome:
    """What a task gave: a value, the user's sentence of a refusal, or that the worker ran out of memory."""

    value: Any = None
    error: PortableError | None = None
    out_of_memory: bool = False


def init_worker(memory_limit_bytes: int, niceness: int) -> None:
    """Runs once in each new worker: a stop kills it at once, its address space is capped, it yields the CPU.

    Warnings (Pillow's about odd metadata in hostile files) are dropped: the parent reports what matters.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    warnings.simplefilter("ignore")
    if memory_limit_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_limit_bytes if hard == resource.RLIM_INFINITY else min(memory_limit_bytes, hard)
        # A system without address-space limits (macOS) refuses it: the decode budget still holds.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if niceness > 0:
        os.nice(niceness)


def _limit_cpu(seconds: float) -> None:
    """SIGXCPU (which ends the process) after ``seconds`` more of CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def run_task(task: Callable[..., Any], cpu_limit_s: float, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Outcome:
    """Run one task within ``cpu_limit_s`` of CPU time; the C heap is handed back to the system afterwards."""
    _limit_cpu(cpu_limit_s)
    try:
        return Outcome(value=task(*args, **kwargs))
    except UserFacingError as exc:
        return Outcome(error=PortableError.of(exc))
    except MemoryError:
        return Outcome(out_of_memory=True)
    finally:
        trim = _malloc_trim()
        if trim is not None:
            trim(0)


def ping() -> int:
    """A task that does nothing: starts the workers and shows they answer."""
    return os.getpid()
