"""Slack adapter: Socket Mode (slack-bolt), threaded replies with throttled edits, a watchdog that reconnects.

The adapter's classes load the Slack SDK on first use, so that ``adapters.slack.plugin`` (settings, doctor checks)
costs no SDK import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.slack.adapter import SlackAdapter
    from adapters.slack.connection import SlackStartupError

__all__ = ["SlackAdapter", "SlackStartupError"]
_HOMES = {"SlackAdapter": "adapters.slack.adapter", "SlackStartupError": "adapters.slack.connection"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
