"""Platforms plug in: the composition root starts every configured plug-in, ``peekbot doctor`` runs their checks,
and the refusal to run without one names their variables. A plug-in the core has never heard of works the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from adapters.feishu.plugin import FEISHU
from adapters.registry import PLATFORMS
from adapters.slack.plugin import SLACK
from bot.cli import main
from bot.doctor import Check, run_checks
from bot.settings import Settings, SettingsSection
from bot.types import Adapter
from bot.wiring import build_adapters, no_platform_message
from tests.support.helpers import LocalFilesAdapter

ECHO_TOKEN = "echo-s3cret-token-42"


class EchoSettings(SettingsSection):
    model_config = SettingsConfigDict(env_prefix="ECHO_", extra="ignore", case_sensitive=False)

    token: SecretStr | None = None

    @property
    def configured(self) -> bool:
        return self.token is not None


class EchoPlugin:
    """A platform defined outside ``adapters/registry.py`` and unknown to every file in ``bot/``."""

    name = "local"
    title = "Echo"
    settings_class = EchoSettings
    variables = ("ECHO_TOKEN",)

    def configured(self, settings: Settings) -> bool:
        return settings.section(EchoSettings).configured

    def checks(self, settings: Settings) -> Iterator[Check]:
        token = settings.section(EchoSettings).token
        if token is not None:
            yield Check("echo", "OK", f"token {token.get_secret_value()}")

    def create(self, settings: Settings) -> Adapter:
        return LocalFilesAdapter()


ECHO = EchoPlugin()


@pytest.fixture(autouse=True)
def no_platform_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "FEISHU_APP_ID", "FEISHU_APP_SECRET", "ECHO_TOKEN",
                     "PEEKBOT_CONFIG"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)


def test_a_plugin_unknown_to_the_core_is_configured_checked_and_started(tmp_path: Path) -> None:
    config = tmp_path / "peekbot.toml"
    config.write_text(f'ECHO_TOKEN = "{ECHO_TOKEN}"\n')  # its section reads the configuration file too
    settings = Settings(config_file=config)
    adapters = build_adapters(settings, [*PLATFORMS, ECHO])
    assert [type(adapter) for adapter in adapters] == [LocalFilesAdapter]
    checks = run_checks(settings, [*PLATFORMS, ECHO], engine=[])
    assert [(c.name, c.status) for c in checks] == [("data dir", "OK"), ("echo", "OK")]
    assert checks[-1].detail == "token ***"  # its secrets are masked like the core's


def test_without_any_platform_every_plugins_variables_are_named() -> None:
    settings = Settings()
    assert build_adapters(settings, [*PLATFORMS, ECHO]) == []
    message = no_platform_message([*PLATFORMS, ECHO])
    assert message.startswith(
        "no platform is configured. Set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Slack), or "
        "FEISHU_APP_ID and FEISHU_APP_SECRET (Feishu/Lark), or ECHO_TOKEN (Echo)."
    )
    warning = run_checks(settings, [*PLATFORMS, ECHO], engine=[])[-1]
    assert warning.status == "WARN" and "ECHO_TOKEN (Echo)" in warning.detail and "SLACK_APP_TOKEN" in warning.detail


def test_slack_and_feishu_plugins_follow_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-wrong-kind")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-A1-2")
    monkeypatch.setenv("FEISHU_APP_ID", "cli_only_the_id")
    settings = Settings()
    assert SLACK.configured(settings) and not FEISHU.configured(settings)
    assert [(c.name, c.status, c.detail) for p in (SLACK, FEISHU) for c in p.checks(settings)] == [
        ("slack", "FAIL", "SLACK_BOT_TOKEN should start with xoxb-"),
        ("feishu", "FAIL", "set both FEISHU_APP_ID and FEISHU_APP_SECRET"),
    ]
    assert [adapter.name for adapter in build_adapters(settings)] == ["slack"]


def test_a_wrong_platform_value_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLACK_PING_INTERVAL_S", "soon")
    assert main(["doctor"]) == 2
    assert "the configuration is invalid: SLACK_PING_INTERVAL_S: " in capsys.readouterr().err
