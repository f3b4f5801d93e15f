"""Settings come from the environment and an optional TOML file with the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.feishu.settings import FeishuSettings
from adapters.slack.settings import SlackSettings
from bot.settings import Settings


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PEEKBOT_MODEL", "PEEKBOT_DEVICE", "SLACK_API_URL", "FEISHU_DOMAIN", "PEEKBOT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.engine.model == "Qwen/Qwen3-VL-4B-Instruct"
    assert settings.engine.device == "auto"
    slack, feishu = settings.section(SlackSettings), settings.section(FeishuSettings)
    assert slack.api_url == "https://slack.com/api/"
    assert feishu.domain == "https://open.feishu.cn"
    assert not slack.configured and not feishu.configured


def test_admins_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEEKBOT_ADMINS", "slack:U123, feishu:ou_abc,")
    core = Settings().core
    assert core.admins == ["slack:U123", "feishu:ou_abc"]
    assert core.is_admin("feishu:ou_abc") and not core.is_admin("slack:U999")


def test_toml_file_sets_the_same_keys_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "peekbot.toml"
    config.write_text(
        'PEEKBOT_MODEL = "/models/qwen"\nPEEKBOT_MAX_BATCH_SIZE = 4\nSLACK_BOT_TOKEN = "xoxb-file"\n'
        'SLACK_APP_TOKEN = "xapp-file"\nPEEKBOT_ADMINS = "slack:U1"\n'
    )
    monkeypatch.setenv("PEEKBOT_MAX_BATCH_SIZE", "16")
    monkeypatch.delenv("PEEKBOT_MODEL", raising=False)
    settings = Settings(config_file=config)
    assert settings.engine.model == "/models/qwen"
    assert settings.engine.max_batch_size == 16
    slack = settings.section(SlackSettings)  # a platform's section, read from the same file
    assert slack.configured and settings.section(SlackSettings) is slack
    assert slack.bot_token is not None and slack.bot_token.get_secret_value() == "xoxb-file"
    assert "xoxb-file" not in repr(slack)  # secrets never print
    assert settings.core.admins == ["slack:U1"]


def test_invalid_values_are_rejected_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEEKBOT_QUANTIZATION", "3bit")
    with pytest.raises(ValidationError, match="quantization"):
        Settings().engine  # noqa: B018
