"""Test support for the operations tests: a platform adapter whose connection the test controls, and an
application with the real engine on the tiny model (loaded once per test process)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.app import Application
from bot.settings import Settings
from bot.types import AdapterHealth, FileRef, IncomingMessage, MessageHandler
from bot.wiring import build_application
from tests.support.helpers import RecordingReply, local_image, message, save_png
from tests.support.waiting import eventually


class ControlledAdapter:
    """Implements the adapter protocol; the test drops the connection, lets it go stale, or breaks reconnects."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handler: MessageHandler | None = None
        self.connected = False
        self.connected_since: float | None = None
        self.last_pong_age_s: float | None = None
        self.reconnects = 0
        self.reconnect_calls = 0
        self.reconnect_error: Exception | None = None

    async def start(self, handler: MessageHandler) -> None:
        self.handler = handler
        self.connect()

    async def stop(self) -> None:
        self.handler = None
        self.connected = False

    async def health(self) -> AdapterHealth:
        return AdapterHealth(connected=self.connected, connected_since=self.connected_since,
                             reconnects=self.reconnects, last_pong_age_s=self.last_pong_age_s,
                             detail="" if self.connected else "socket closed")

    async def reconnect(self) -> None:
        self.reconnect_calls += 1
        if self.reconnect_error is not None:
            raise self.reconnect_error
        self.reconnects += 1
        self.connect()

    async def fetch(self, file: FileRef) -> bytes:
        return Path(file.source["path"]).read_bytes()

    def connect(self) -> None:
        """The connection comes up (also what the adapter's own reconnect does)."""
        self.connected = True
        self.connected_since = time.time()
        self.last_pong_age_s = 0.0

    def drop(self) -> None:
        self.connected = False

    def message(self, text: str, *images: Path, **where: str) -> IncomingMessage:
        """A message on this platform with local ``images``; ``where``: user, channel, thread, event_id, message_id."""
        return message(text, *(local_image(p, platform=self.name) for p in images), platform=self.name, **where)

    async def ask(self, text: str, *images: Path, timeout: float = 60.0, **kwargs: str) -> RecordingReply:
        assert self.handler is not None, "the adapter is not started"
        reply = RecordingReply()
        assert await self.handler(self.message(text, *images, **kwargs), reply)
        await reply.wait(timeout)
        app = getattr(self.handler, "__self__", None)  # the Application whose ``handle`` we were given
        if app is not None:
            assert await app.wait_idle(timeout), "the question was answered but its bookkeeping did not finish"
        return reply


def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path, **overrides: object) -> Settings:
    """Settings for a fast test application; ``overrides`` are PEEKBOT_* variables without the prefix."""
    values: dict[str, object] = {
        "MODEL": model_dir,
        "DATA_DIR": tmp_path / "data",
        "HTTP_PORT": 0,
        "ADMINS": "slack:ADMIN,feishu:ADMIN",
        "MAX_NEW_TOKENS": 8,
        "MAX_PIXELS": 128 * 128,
        "WARMUP": "false",
        "STOP_TIMEOUT_S": 5,
        "LOG_FORMAT": "text",
    }
    values.update(overrides)
    for key, value in values.items():
        monkeypatch.setenv(f"PEEKBOT_{key}", str(value))
    monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)
    return Settings()


@functools.cache
def _loaded_model(model_dir: str):  # type: ignore[no-untyped-def]
    from bot.settings import EngineSettings
    from inference.loader import load_model

    return load_model(EngineSettings(model=model_dir, device="cpu"))


def tiny_engine(settings: Settings):  # type: ignore[no-untyped-def]
    """The real engine on the tiny checkpoint; the weights are loaded once and shared by the tests."""
    from inference.transformers_engine import TransformersEngine

    return TransformersEngine(settings.engine, loaded=_loaded_model(settings.engine.model))


@asynccontextmanager
async def running_app(settings: Settings, adapters: list[ControlledAdapter],
                      extra_services: Callable[[Application], list] | None = None) -> AsyncIterator[Application]:
    """A started application with the default services (plus ``extra_services(app)``)."""
    app = build_application(settings, engine=tiny_engine(settings), adapters=adapters)
    if extra_services is not None:
        app.services.extend(extra_services(app))
    async with app:
        yield app


def screenshot(path: Path, size: tuple[int, int] = (160, 120)) -> Path:
    return save_png(path, (40, 120, 200), size)


async def block_worker(app: Application, seconds: float) -> asyncio.Task[None]:
    """Occupy the model's worker thread for ``seconds``; returns once it is blocked, with the task that ends when the
    worker is free again."""
    blocking = threading.Event()

    def hang() -> None:
        blocking.set()
        time.sleep(seconds)

    blocker = asyncio.create_task(app.engine.run_on_worker(hang, 10))
    await eventually(blocking.is_set, what="the worker to block")
    return blocker
