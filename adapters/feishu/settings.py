"""Feishu/Lark's section of the configuration (``FEISHU_*`` variables, or the same keys in the TOML file)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from bot.settings import SettingsSection


class FeishuSettings(SettingsSection):
    """``FEISHU_*``: the Feishu/Lark app's credentials, its long connection and how answers are posted."""

    model_config = SettingsConfigDict(env_prefix="FEISHU_", extra="ignore", case_sensitive=False)

    app_id: str | None = None
    app_secret: SecretStr | None = None
    domain: str = "https://open.feishu.cn"
    # Long connection. Unset overrides follow the server's ClientConfig (PingInterval, ReconnectInterval …).
    ping_interval_s: float | None = None
    pong_timeout_s: float = 10.0
    """No pong within this time after a ping ⇒ the connection is stale and is replaced."""
    discovery_timeout_s: float = 10.0
    connect_timeout_s: float = 15.0
    """How long start-up waits for the first connection (retrying continues in the background)."""
    reconnect_initial_s: float = 1.0
    """First reconnect delay; doubles per failed attempt up to ``reconnect_max_s`` (default ReconnectInterval)."""
    reconnect_max_s: float | None = None
    reconnect_jitter_s: float | None = None
    """Cap of the random jitter added to each delay (default ReconnectNonce)."""
    reconnect_count: int | None = None
    """Failed attempts in a row before giving up (default ReconnectCount; -1: never)."""
    fragment_ttl_s: float = 10.0
    # REST and replies.
    rest_timeout_s: float = 20.0
    context_lookup_timeout_s: float = 1.0
    """Time allowed to read the message a question replies to before the event is handed to the core."""
    update_interval_s: float = 0.5
    """Minimum time between edits of an answer card (edits are coalesced; the newest text wins)."""
    first_words_after_s: float = 0.3
    """The answer's first words go this soon after the card was posted (Feishu's own floor between edits holds)."""
    rate_limit_backoff_s: float = 1.0
    rate_limit_max_wait_s: float = 120.0
    """How long one REST call may wait out rate limits before it fails."""
    max_reply_chars: int = 8000
    """Longer answers are split into several messages."""
    streaming_cards: bool = True
    """Stream answers through CardKit; False (or CardKit refused) edits an interactive card instead."""
    action_answer_wait_s: float = 2.5
    """How long a press on an answer's button (Stop, 👍/👎) may take before its toast says "working on it" and the
    press is finished in the background (Feishu wants the answer within 3 s)."""
    reply_in_thread: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.app_id) and self.app_secret is not None
