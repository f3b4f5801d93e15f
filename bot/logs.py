"""Logging set-up: plain text or JSON lines, each line tagged with platform, conversation and request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from bot.redact import redact

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
platform_var: contextvars.ContextVar[str] = contextvars.ContextVar("platform", default="-")
conversation_var: contextvars.ContextVar[str] = contextvars.ContextVar("conversation", default="-")


@contextmanager
def log_context(*, request_id: str, platform: str, conversation: str) -> Iterator[None]:
    """Tag every log line written inside the block (and tasks started from it) with these ids."""
    tokens = (
        request_id_var.set(request_id),
        platform_var.set(platform),
        conversation_var.set(conversation),
    )
    try:
        yield
    finally:
        conversation_var.reset(tokens[2])
        platform_var.reset(tokens[1])
        request_id_var.reset(tokens[0])


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.platform = platform_var.get()
        record.conversation = conversation_var.get()
        return True


class RedactingFilter(logging.Filter):
    """Masks credentials (``bot.redact``) in every record a handler writes: message, exception and stack text.

    The record is rewritten in place (message formatted once, arguments dropped), so handlers after this one and
    formatters of any kind see only the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string: the handler reports it as usual
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "platform": getattr(record, "platform", "-"),
            "conversation": getattr(record, "conversation", "-"),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


PROJECT_LOGGERS = frozenset({"bot", "adapters", "inference", "scheduler", "peekbot", "benchmarks"})
"""Top-level logger names of this project; every other logger belongs to a library."""


class _LibraryFilter(logging.Filter):
    """Lets the project's records through, and a library's only from ``level`` up."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or record.name.partition(".")[0] in PROJECT_LOGGERS


def _warning_to_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: a library's deprecation notice is for developers, so it goes to the
    log at debug level instead of the user's terminal."""
    logging.getLogger("py.warnings").debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(platform)s %(conversation)s %(request_id)s] %(message)s"


def setup_logging(level: str = "INFO", fmt: str = "text", *, library_level: str | None = None) -> None:
    """Configure the root logger once (idempotent); every line it writes passes ``RedactingFilter``.

    ``library_level`` (e.g. ``ERROR`` for ``peekbot chat``) hides libraries' records below it. Python warnings
    (``FutureWarning`` …) are logged at debug level on ``py.warnings``, never printed as they are.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if library_level is not None:
        handler.addFilter(_LibraryFilter(logging.getLevelNamesMapping()[library_level.upper()]))
    handler.addFilter(RedactingFilter())
    warnings.showwarning = _warning_to_log
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_peekbot", False):
            root.removeHandler(old)
    handler._peekbot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "urllib3", "aiohttp.access", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

