"""Slack's section of the configuration (``SLACK_*`` variables, or the same keys in the TOML file)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bot.settings import SettingsSection, comma_list


class SlackSettings(SettingsSection):
    """``SLACK_*``: the Slack app's tokens, its Socket Mode connection and how answers are posted."""

    model_config = SettingsConfigDict(env_prefix="SLACK_", extra="ignore", case_sensitive=False)

    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    file_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["files.slack.com"])
    """Hosts the bot token may be sent to (over https) to download files, besides ``api_url``'s own host and port.
    Add ``files.slack-gov.com`` style hosts for GovSlack; a file stored anywhere else is refused with a reply."""
    # Socket Mode connection and watchdog.
    ping_interval_s: float = 10.0
    """slack_sdk's WebSocket ping interval; no traffic or pong for ``stale_after_pings`` × this ⇒ reconnect."""
    stale_after_pings: float = 3.0
    watchdog_interval_s: float = 5.0
    auth_check_interval_s: float = 60.0
    """How often the watchdog calls ``auth.test`` as a health ping; 0 turns it off."""
    connect_timeout_s: float = 15.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    startup_attempts: int = 5
    # Replies.
    command: str = "/peekbot"
    update_interval_s: float = 1.0
    """At most one ``chat.update`` per message in this many seconds while an answer streams."""
    first_words_after_s: float = 0.3
    """The answer's first words go this soon after the placeholder, not a whole ``update_interval_s`` later."""
    max_message_chars: int = 3900
    progress_reaction: str = "eyes"
    rate_limit_retries: int = 8
    rest_timeout_s: float = 30.0
    download_timeout_s: float = 60.0
    thread_memory: int = 10_000
    """Threads remembered as answered, so follow-ups there need no new mention."""
    locale_cache_s: float = 3600.0
    """How long a person's Slack locale (``users.info``, scope ``users:read``) is remembered; 0: never looked up
    (peekbot's own sentences then follow the question's language)."""
    locale_timeout_s: float = 1.0
    """The longest a question waits for ``users.info`` to tell the asker's locale (then: unknown)."""
    # Slack's AI-app surfaces.
    native_streaming: bool = True
    """Stream answers with ``chat.startStream``/``appendStream``/``stopStream`` where the workspace allows it (else,
    and when false, by editing the placeholder with ``chat.update``)."""
    answer_buttons: bool = True
    """A Stop button while an answer streams and 👍/👎 rating buttons on every final answer."""
    suggested_prompts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["What does this error mean?", "Transcribe this screenshot", "Summarise this PDF"]
    )
    """Prompts offered when someone opens the bot's DM (comma-separated, at most four; empty: none)."""
    shortcut_callback_id: str = "ask_peekbot"
    """The callback id of the "Ask peekbot about this" message shortcut (as in deploy/slack/manifest.yml)."""
    shortcut_question: str = "What is this about?"
    """The question the message shortcut asks about the message it was used on."""

    _split_file_hosts = field_validator("file_hosts", mode="before")(comma_list)
    _split_prompts = field_validator("suggested_prompts", mode="before")(comma_list)

    @property
    def configured(self) -> bool:
        return self.bot_token is not None and self.app_token is not None
