"""Starting the bot's parts in a test: environment variables, adapters (one per simulated process), Applications.

    async def test_something(start_app: AppStarter) -> None:   # the fixture comes with tests/conftest.py
        app = await start_app({"PEEKBOT_MAX_NEW_TOKENS": "4"}, engine=lambda _: FakeEngine())
        ...                                                     # stopped when the test ends

Settings are read from the environment, as ``peekbot run`` reads them, so a test sets variables, not fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Generic, Self, TypeVar

import pytest

from bot.app import Application
from bot.engine import Engine
from bot.settings import Settings
from bot.types import Adapter, MessageHandler
from tests.support.engines import RecordingEngine
from tests.support.helpers import LocalFilesAdapter

A = TypeVar("A", bound=Adapter)


def set_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, object]) -> None:
    """Every variable of ``env`` (values as text) for the rest of the test."""
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))


def peekbot_environment(**values: object) -> dict[str, str]:
    """``PEEKBOT_*`` variables from keyword arguments: ``max_new_tokens=4`` (or ``MAX_NEW_TOKENS=4``) is
    ``PEEKBOT_MAX_NEW_TOKENS=4``."""
    return {f"PEEKBOT_{key.upper()}": str(value) for key, value in values.items()}


def tiny_bot_environment(model_dir: Path, **values: object) -> dict[str, str]:
    """``PEEKBOT_*`` variables of a bot on a tiny test model: on the CPU, no warm-up, the HTTP server (if any) on a
    free port; ``values`` as in ``peekbot_environment``."""
    return peekbot_environment(model=model_dir, device="cpu", http_port=0, warmup="false", **values)


class AdapterStarter(Generic[A]):
    """``await start(core)`` starts a new adapter made by ``create`` from the environment's settings, as the next
    process would; ``async with`` stops every one at the end."""

    def __init__(self, create: Callable[[Settings], A]) -> None:
        self._create = create
        self.started: list[A] = []

    async def __call__(self, core: MessageHandler, *, configure: Callable[[A], None] | None = None) -> A:
        adapter = self._create(Settings())
        if configure is not None:
            configure(adapter)
        await adapter.start(core)
        self.started.append(adapter)
        return adapter

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for adapter in self.started:
            await adapter.stop()


def local_files(settings: Settings) -> list[Adapter]:
    """The default adapters of ``AppStarter``: one whose files are local paths (no platform)."""
    return [LocalFilesAdapter()]


def tiny_engine(loaded: object | None = None) -> Callable[[Settings], Engine]:
    """An ``engine`` for ``AppStarter``: the real ``TransformersEngine`` (sharing ``loaded``, a model loaded once,
    when given) in a ``RecordingEngine`` that keeps every request."""

    def make(settings: Settings) -> Engine:
        from inference.transformers_engine import TransformersEngine

        return RecordingEngine(TransformersEngine(settings.engine, loaded=loaded))  # type: ignore[arg-type]

    return make


class AppStarter:
    """``await start_app(env, engine=…, adapters=…)`` sets ``env``, reads the settings and starts an ``Application``
    with the engine and adapters made from them (no services: no scheduler, no HTTP server); ``async with`` stops
    every one at the end, newest first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.started: list[Application] = []

    async def __call__(
        self,
        env: Mapping[str, object] | None = None,
        *,
        engine: Callable[[Settings], Engine],
        adapters: Callable[[Settings], Sequence[Adapter]] = local_files,
    ) -> Application:
        set_environment(self._monkeypatch, env or {})
        settings = Settings()
        made = engine(settings)
        app = Application(settings, engine=made, adapters=adapters(settings))
        await app.start()
        self.started.append(app)
        return app

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for app in reversed(self.started):
            await app.stop()


@pytest.fixture
async def start_app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AppStarter]:
    """Starts Applications for the test (see ``AppStarter``); each is stopped when the test ends."""
    async with AppStarter(monkeypatch) as starter:
        yield starter
