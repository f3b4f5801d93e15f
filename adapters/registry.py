"""The chat platforms ``peekbot run`` knows: one plug-in per platform (``adapters/<name>/plugin.py``).

A list in code rather than Python entry points (a ``peekbot.platforms`` group in ``pyproject.toml``): every
platform ships in this repository, so a list is enough; it works the same from a checkout, an installed package and
the container image, where entry points would need ``pip install`` to have refreshed the package metadata (a stale
``*.egg-info`` silently drops a new platform); and the layer test follows these imports like any others. A new
platform adds its folder and one line here; no file in ``bot/`` changes.

The console adapter is not listed: it is the terminal of ``peekbot chat``, not a platform that ``peekbot run``
connects to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.feishu.plugin import FEISHU
from adapters.slack.plugin import SLACK

if TYPE_CHECKING:
    from bot.platforms import PlatformPlugin
    from bot.settings import Settings, SettingsSection

PLATFORMS: tuple[PlatformPlugin, ...] = (SLACK, FEISHU)


def platform_sections(settings: Settings) -> list[SettingsSection]:
    """Every platform's settings section, loaded now: a wrong value fails here (pydantic's ``ValidationError``),
    and their secrets are then known to ``bot.redact.secret_values``."""
    return [settings.section(platform.settings_class) for platform in PLATFORMS]
