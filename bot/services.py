"""The background services every application runs besides its adapters: the scheduler and the HTTP server."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.types import Service

if TYPE_CHECKING:
    from bot.app import Application
    from scheduler.service import MaintenanceScheduler

logger = logging.getLogger(__name__)


def default_services(app: Application) -> list[Service]:
    """The maintenance scheduler, and the HTTP server unless ``PEEKBOT_HTTP_PORT`` is 0."""
    from scheduler.service import MaintenanceScheduler

    maintenance = MaintenanceScheduler(app)
    services: list[Service] = [maintenance]
    core = app.settings.core
    if core.http_port:
        from bot.http import StatusServer

        services.append(StatusServer(app, host=core.http_host, port=core.http_port))
    return services


def maintenance_of(app: Application) -> MaintenanceScheduler | None:
    """The application's maintenance scheduler, if it runs one."""
    from scheduler.service import MaintenanceScheduler

    return next((s for s in app.services if isinstance(s, MaintenanceScheduler)), None)
