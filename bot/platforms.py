"""The plug-in a chat platform offers the composition root (``adapters/<name>/plugin.py``).

The core defines the shape; each platform's plug-in lives beside its adapter, ``adapters/registry.py`` lists them,
and only the composition root (``bot/wiring.py``, ``bot/cli.py``) collects them: ``peekbot run`` starts every
configured one and ``peekbot doctor`` runs their checks. Adding a platform changes no file in ``bot/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.doctor import Check
    from bot.settings import Settings, SettingsSection
    from bot.types import Adapter


class PlatformPlugin(Protocol):
    """One chat platform: its settings section, whether it is set up, its doctor checks and its adapter."""

    name: str
    """The adapter's name (``slack``): ``/reconnect slack``, ``slack:U42`` in allowlists."""
    title: str
    """How people call it (``Slack``, ``Feishu/Lark``)."""
    settings_class: type[SettingsSection]
    """Its section of the configuration (loaded with ``Settings.section``)."""
    variables: tuple[str, ...]
    """The variables that must be set to use it (``SLACK_BOT_TOKEN``, ``SLACK_APP_TOKEN``)."""

    def configured(self, settings: Settings) -> bool:
        """True when its credentials are set: ``peekbot run`` then starts its adapter."""

    def checks(self, settings: Settings) -> Iterable[Check]:
        """``peekbot doctor``'s checks of its settings (nothing is contacted)."""

    def create(self, settings: Settings) -> Adapter:
        """Its adapter, not started yet."""


def setup_hint(platforms: Sequence[PlatformPlugin]) -> str:
    """What to set to use any of the platforms: ``SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Slack), or …``."""
    return ", or ".join(f"{' and '.join(p.variables)} ({p.title})" for p in platforms) or "a platform plug-in"
