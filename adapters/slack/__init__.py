"""Slack adapter: Socket Mode (slack-bolt), threaded replies with throttled edits, a watchdog that reconnects.

The adapter's classes load the Slack SDK on first use, so that ``adapters.slack.plugin`` (settings, doctor checks)
costs no SDK import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from adapters.slack.adapter import SlackAdapter
    from adapters.slack.connection import SlackStartupError

__all__ = ["SlackAdapter", "SlackStartupError"]
__getattr__ = lazy_exports(
    __name__, {"SlackAdapter": "adapters.slack.adapter", "SlackStartupError": "adapters.slack.connection"}
)
