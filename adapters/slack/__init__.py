"""Slack adapter: Socket Mode (slack-bolt), threaded replies with throttled edits, a watchdog that reconnects."""

from adapters.slack.adapter import SlackAdapter
from adapters.slack.connection import SlackStartupError

__all__ = ["SlackAdapter", "SlackStartupError"]
