"""The background services every application runs besides its adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.types import Service

if TYPE_CHECKING:
    from bot.app import Application


def default_services(app: Application) -> list[Service]:
    """Services started with the application (the scheduler and the HTTP status server join here)."""
    return []
