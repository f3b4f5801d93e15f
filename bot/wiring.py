"""The composition root: builds the engine, the store, the media pool, the adapters and the services, and the
:class:`~bot.app.Application` that runs them.

With ``bot/cli.py`` this is the only code in ``bot/`` that imports ``adapters/``, ``inference/`` or ``scheduler/``
(``tests/ops/test_layers.py`` holds the rest of the core to that); everything else receives what it needs. The
platforms come from their plug-ins (``adapters/registry.py``), the engine from ``PEEKBOT_BACKEND``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.registry import PLATFORMS
from bot.app import Application
from bot.doctor import Check, run_checks
from bot.platforms import PlatformPlugin, setup_hint
from bot.settings import Settings
from bot.store import open_store
from inference.checks import engine_checks
from inference.factory import create_engine
from scheduler.service import MaintenanceScheduler

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.media.pool import MediaPool
    from bot.store.base import Store
    from bot.types import Adapter


def no_platform_message(platforms: Sequence[PlatformPlugin] = PLATFORMS) -> str:
    """``peekbot run``'s refusal when no platform is configured, naming every plug-in's variables."""
    return f"no platform is configured. Set {setup_hint(platforms)}. To try the bot locally: peekbot chat --demo"


def build_adapters(settings: Settings, platforms: Sequence[PlatformPlugin] = PLATFORMS) -> list[Adapter]:
    """The adapter of every configured platform (not started)."""
    return [platform.create(settings) for platform in platforms if platform.configured(settings)]


def doctor_checks(settings: Settings, platforms: Sequence[PlatformPlugin] = PLATFORMS) -> list[Check]:
    """``peekbot doctor``: the data directory, each platform's checks, the model's and the GPU's."""
    return run_checks(settings, platforms, engine_checks(settings))


def add_services(app: Application) -> MaintenanceScheduler:
    """The maintenance scheduler (handed to the application as its :attr:`~bot.app.Application.maintenance`), and
    the HTTP server unless ``PEEKBOT_HTTP_PORT`` is 0. Returns the scheduler."""
    from bot.http import StatusServer  # aiohttp's server and prometheus: only for an application that serves

    maintenance = MaintenanceScheduler(app)
    app.maintenance = maintenance
    app.services.append(maintenance)
    core = app.settings.core
    if core.http_port:
        app.services.append(StatusServer(app, host=core.http_host, port=core.http_port))
    return maintenance


def build_application(
    settings: Settings,
    *,
    engine: Engine | None = None,
    adapters: Sequence[Adapter] | None = None,
    store: Store | None = None,
    media: MediaPool | None = None,
    services: bool = True,
    resume_jobs: bool = True,
) -> Application:
    """The application with its parts: ``engine`` defaults to ``PEEKBOT_BACKEND``'s, ``adapters`` to every
    configured platform's, ``store`` to ``PEEKBOT_STORE_URL``'s, ``media`` to a pool of ``PEEKBOT_MEDIA_WORKERS``
    processes (started on the first file); ``services`` adds the maintenance scheduler and the HTTP server
    (:func:`add_services`)."""
    from bot.media.pool import MediaPool  # Pillow, pypdfium2: only for an application that answers

    app = Application(
        settings,
        engine=engine if engine is not None else create_engine(settings),
        adapters=adapters if adapters is not None else build_adapters(settings),
        store=store if store is not None else open_store(settings),
        media=media if media is not None else MediaPool(settings.images),
        resume_jobs=resume_jobs,
    )
    if services:
        add_services(app)
    return app
