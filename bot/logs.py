"""Logging set-up: plain text or JSON lines, each line tagged with platform, conversation and request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(platform)s %(conversation)s %(request_id)s] %(message)s"


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
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
