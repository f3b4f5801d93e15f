"""Slack's plug-in: its settings section, its doctor checks and its adapter (``bot.platforms.PlatformPlugin``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from adapters.slack.settings import SlackSettings
from bot.doctor import Check

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.types import Adapter

TOKEN_PREFIXES = {"SLACK_BOT_TOKEN": "xoxb-", "SLACK_APP_TOKEN": "xapp-"}


class SlackPlugin:
    name = "slack"
    title = "Slack"
    settings_class = SlackSettings
    variables = tuple(TOKEN_PREFIXES)

    def configured(self, settings: Settings) -> bool:
        return settings.section(SlackSettings).configured

    def checks(self, settings: Settings) -> Iterator[Check]:
        slack = settings.section(SlackSettings)
        tokens = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token}
        if not slack.configured:
            if any(tokens.values()):
                yield Check("slack", "FAIL", "set both SLACK_BOT_TOKEN (xoxb-) and SLACK_APP_TOKEN (xapp-)")
            return
        bad = [
            f"{variable} should start with {TOKEN_PREFIXES[variable]}"
            for variable, token in tokens.items()
            if token is not None and not token.get_secret_value().startswith(TOKEN_PREFIXES[variable])
        ]
        yield Check("slack", "FAIL" if bad else "OK", "; ".join(bad) or f"tokens set; API {slack.api_url}")

    def create(self, settings: Settings) -> Adapter:
        from adapters.slack.adapter import SlackAdapter  # slack-bolt loads only when Slack is used

        return SlackAdapter(settings)


SLACK = SlackPlugin()
