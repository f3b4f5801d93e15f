"""Access control (allowlists, modes), the per-user rate limit and the daily quota, with their replies."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.access import DM_ONLY_REPLY, AccessPolicy
from bot.ratelimit import QuotaChecker, RateLimiter, about, quota_reply, rate_limit_reply, zone
from bot.settings import AccessSettings, Settings
from bot.types import ChatType, ConversationKey, IncomingMessage, MentionSegment, TextSegment, User

ADMIN = "slack:UADMIN"


def msg(
    text: str = "what does this error mean?",
    *,
    platform: str = "slack",
    workspace: str = "T1",
    channel: str = "C1",
    user: str = "U1",
    chat_type: ChatType = ChatType.GROUP,
    mentions_bot: bool = True,
    is_command: bool = False,
) -> IncomingMessage:
    segments: tuple = (TextSegment(text),)
    if mentions_bot:
        segments = (MentionSegment("UBOT", is_self=True), *segments)
    return IncomingMessage(
        event_id=f"ev-{user}-{channel}",
        message_id=f"{channel}:1.0",
        conversation=ConversationKey(platform, workspace, channel, "1.0"),
        user=User(platform, user),
        chat_type=chat_type,
        segments=segments,
        mentions_bot=mentions_bot,
        is_command=is_command,
    )


def policy(**overrides: object) -> AccessPolicy:
    return AccessPolicy(AccessSettings(**overrides), [ADMIN])


# --- access policy ---------------------------------------------------------------------------------------


def test_defaults_let_everyone_in_everywhere() -> None:
    everyone = policy()
    assert everyone.check(msg()) is None
    assert everyone.check(msg(chat_type=ChatType.DIRECT, mentions_bot=False)) is None
    assert everyone.check(msg(mentions_bot=False)) is None  # a follow-up in a thread the bot answered


def test_unlisted_workspace_is_told_whom_to_ask_even_when_an_admin_asks() -> None:
    only_t1 = policy(allowed_workspaces=["slack:T1", "feishu:tenant_a"], access_contact="#it-help")
    assert only_t1.check(msg(workspace="T1")) is None
    refusal = only_t1.check(msg(workspace="T9"))
    assert refusal is not None and refusal.reason == "workspace_not_allowed" and not refusal.silent
    assert refusal.reply == "Sorry, this workspace isn't set up for peekbot. Please ask #it-help to enable it."
    # Same id, other platform: entries name their platform.
    feishu = only_t1.check(msg(platform="feishu", workspace="T1"))
    assert feishu is not None and "this organization isn't set up for peekbot" in feishu.reply
    assert only_t1.check(msg(platform="feishu", workspace="tenant_a")) is None
    for admin_message in (msg(workspace="T9", user="UADMIN"), msg("/status", workspace="T9", user="UADMIN")):
        admin_refusal = only_t1.check(admin_message)
        assert admin_refusal is not None and admin_refusal.reason == "workspace_not_allowed"


def test_unlisted_user_is_refused_politely_but_admins_are_always_allowed() -> None:
    listed = policy(allowed_users=["slack:U42"])
    refusal = listed.check(msg(user="U7"))
    assert refusal is not None and refusal.reason == "user_not_allowed" and not refusal.silent
    assert refusal.reply == (
        "Sorry, you're not on the list of people who can use peekbot here. "
        "Please ask the people who run peekbot for access."
    )
    dm_refusal = listed.check(msg(user="U7", chat_type=ChatType.DIRECT, mentions_bot=False))
    assert dm_refusal is not None and dm_refusal.reason == "user_not_allowed"
    assert listed.check(msg(user="U42")) is None
    assert listed.check(msg(user="UADMIN")) is None
    other_platform = listed.check(msg(platform="feishu", user="U42"))
    assert other_platform is not None and other_platform.reason == "user_not_allowed"


def test_unlisted_channel_refuses_group_questions_but_not_direct_messages_or_admin_commands() -> None:
    channels = policy(allowed_channels=["slack:C1"])
    assert channels.check(msg(channel="C1")) is None
    refusal = channels.check(msg(channel="C2"))
    assert refusal is not None and refusal.reason == "channel_not_allowed" and not refusal.silent
    assert refusal.reply.startswith("I'm not set up to answer in this channel. Send me a direct message instead")
    assert channels.check(msg(channel="D5", chat_type=ChatType.DIRECT, mentions_bot=False)) is None
    admin_question = channels.check(msg(channel="C2", user="UADMIN"))
    assert admin_question is not None and admin_question.reason == "channel_not_allowed"
    assert channels.check(msg("/status", channel="C2", user="UADMIN")) is None
    assert channels.check(msg("status", channel="C2", user="UADMIN", is_command=True)) is None
    non_admin_command = channels.check(msg("/status", channel="C2"))
    assert non_admin_command is not None and non_admin_command.reason == "channel_not_allowed"


def test_dm_only_mode_points_group_askers_to_a_direct_message() -> None:
    dm_only = policy(access_mode="dm_only")
    refusal = dm_only.check(msg())
    assert refusal is not None and refusal.reason == "dm_only" and not refusal.silent
    assert refusal.reply == DM_ONLY_REPLY == "I only answer in direct messages here — send me a DM."
    assert dm_only.check(msg(chat_type=ChatType.DIRECT, mentions_bot=False)) is None
    assert dm_only.check(msg("/help", user="UADMIN")) is None  # admin commands work anywhere allowed
    unaddressed = dm_only.check(msg(mentions_bot=False))
    assert unaddressed is not None and unaddressed.reason == "dm_only" and unaddressed.silent


def test_mention_only_mode_silently_skips_group_messages_without_a_mention() -> None:
    mention_only = policy(access_mode="mention_only")
    refusal = mention_only.check(msg(mentions_bot=False))
    assert refusal is not None and refusal.reason == "mention_only" and refusal.silent
    assert mention_only.check(msg(mentions_bot=True)) is None
    assert mention_only.check(msg(chat_type=ChatType.DIRECT, mentions_bot=False)) is None
    assert mention_only.check(msg("status", mentions_bot=False, is_command=True)) is None  # a slash command


def test_refusals_in_a_group_stay_silent_when_nobody_addressed_the_bot() -> None:
    listed = policy(allowed_users=["slack:U42"])
    refusal = listed.check(msg(user="U7", mentions_bot=False))
    assert refusal is not None and refusal.reason == "user_not_allowed" and refusal.silent


def test_the_local_console_is_trusted_and_admins_may_be_a_predicate() -> None:
    strict = AccessPolicy(
        AccessSettings(allowed_workspaces=["slack:T1"], allowed_users=["slack:U42"], access_mode="dm_only"),
        lambda key: key == "slack:U7",
    )
    assert strict.check(msg(platform="console", workspace="local", user="me")) is None
    assert strict.check(msg("/pause", user="U7")) is None
    refusal = strict.check(msg(user="U7"))
    assert refusal is not None and refusal.reason == "dm_only"


def test_access_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)
    monkeypatch.setenv("PEEKBOT_ALLOWED_WORKSPACES", "slack:T123, feishu:tenant_x,")
    monkeypatch.setenv("PEEKBOT_ALLOWED_CHANNELS", "feishu:oc_abc")
    monkeypatch.setenv("PEEKBOT_ALLOWED_USERS", "slack:U42")
    monkeypatch.setenv("PEEKBOT_ACCESS_MODE", "mention_only")
    monkeypatch.setenv("PEEKBOT_RATE_LIMIT_PER_MINUTE", "0")
    monkeypatch.setenv("PEEKBOT_DAILY_QUOTA", "50")
    access = Settings().access
    assert access.allowed_workspaces == ["slack:T123", "feishu:tenant_x"]
    assert access.allowed_channels == ["feishu:oc_abc"] and access.allowed_users == ["slack:U42"]
    assert access.access_mode == "mention_only"
    assert access.rate_limit_per_minute == 0 and access.daily_quota == 50
    assert access.rate_limit_burst == 3 and access.max_pending_per_user == 10


def test_access_defaults_and_config_mistakes(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PEEKBOT_CONFIG", "PEEKBOT_ACCESS_MODE", "PEEKBOT_ALLOWED_USERS", "PEEKBOT_RATE_LIMIT_PER_MINUTE",
                "PEEKBOT_DAILY_QUOTA", "PEEKBOT_QUOTA_TIMEZONE"):
        monkeypatch.delenv(var, raising=False)
    access = Settings().access
    assert access.access_mode == "everyone" and access.allowed_users == []
    assert (access.rate_limit_per_minute, access.rate_limit_burst, access.daily_quota) == (6, 3, 0)
    monkeypatch.setenv("PEEKBOT_ALLOWED_USERS", "U42")
    with pytest.raises(ValidationError, match=r"must be platform:id, e\.g\. slack:U42"):
        AccessSettings()
    monkeypatch.delenv("PEEKBOT_ALLOWED_USERS")
    monkeypatch.setenv("PEEKBOT_QUOTA_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone"):
        AccessSettings()
    monkeypatch.setenv("PEEKBOT_ACCESS_MODE", "sometimes")
    with pytest.raises(ValidationError):
        AccessSettings(quota_timezone="")


# --- rate limit ------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_burst_then_one_question_per_refill_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert [limiter.try_acquire("slack:U1") for _ in range(3)] == [None, None, None]
    assert limiter.try_acquire("slack:U1") == pytest.approx(10.0)
    assert limiter.try_acquire("slack:U2") is None  # other users have their own bucket
    clock.advance(9.0)
    assert limiter.try_acquire("slack:U1") == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.try_acquire("slack:U1") is None
    assert limiter.try_acquire("slack:U1") == pytest.approx(10.0)
    clock.advance(600.0)  # long idle: the bucket holds at most the burst
    assert [limiter.try_acquire("slack:U1") for _ in range(4)][:3] == [None, None, None]
    assert limiter.try_acquire("slack:U1") is not None


def test_rate_limit_off_and_admins_exempt() -> None:
    clock = FakeClock()
    off = RateLimiter(per_minute=0, burst=3, clock=clock)
    assert all(off.try_acquire("slack:U1") is None for _ in range(100))
    assert len(off) == 0
    limiter = RateLimiter(per_minute=6, burst=1, clock=clock, exempt={ADMIN}.__contains__)
    assert all(limiter.try_acquire(ADMIN) is None for _ in range(20))
    assert limiter.try_acquire("slack:U1") is None
    assert limiter.try_acquire("slack:U1") is not None


def test_rate_limiter_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock, max_users=50)
    for n in range(1000):
        limiter.try_acquire(f"slack:U{n}")
    assert len(limiter) == 50
    clock.advance(30.0)  # everyone's bucket has refilled: forgetting them changes nothing for them
    assert limiter.try_acquire("slack:U1") is None
    assert len(limiter) == 1
    for _ in range(2):
        assert limiter.try_acquire("slack:U1") is None
    assert limiter.try_acquire("slack:U1") == pytest.approx(10.0)


def test_rate_limit_reply_says_when_to_ask_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=1.5, burst=1, clock=clock)
    assert limiter.try_acquire("slack:U1") is None
    wait = limiter.try_acquire("slack:U1")
    assert wait == pytest.approx(40.0)
    assert rate_limit_reply(wait) == (
        "You're asking faster than I can keep up — please wait about 40 seconds and ask again."
    )
    assert rate_limit_reply(37.2) == rate_limit_reply(40.0)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.2, "a second"), (1.0, "a second"), (4.1, "5 seconds"), (37.2, "40 seconds"), (57, "a minute"),
     (61, "2 minutes"), (59 * 60, "59 minutes"), (3599.5, "an hour"), (5000, "an hour"), (3 * 3600 - 600, "3 hours"),
     (10 * 3600, "10 hours")],
)
def test_human_durations(seconds: float, words: str) -> None:
    assert about(seconds) == words


# --- daily quota -----------------------------------------------------------------------------------------


class FakeAudit:
    """Stands in for the audit log's ``count_for_user``; remembers what it was asked."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.calls: list[tuple[str, float]] = []

    async def count_for_user(self, user: str, since: float) -> int:
        self.calls.append((user, since))
        return self.counts.get(user, 0)


UTC_PLUS_2 = timezone(timedelta(hours=2))


async def test_quota_counts_since_local_midnight_and_says_when_it_resets() -> None:
    audit = FakeAudit({"slack:U1": 50, "slack:U2": 49})
    now = datetime(2025, 3, 10, 21, 0, tzinfo=UTC_PLUS_2).timestamp()
    quota = QuotaChecker(50, audit.count_for_user, UTC_PLUS_2, clock=lambda: now)
    assert await quota.check("slack:U2") is None
    reset_in = await quota.check("slack:U1")
    assert reset_in == pytest.approx(3 * 3600)
    midnight = datetime(2025, 3, 10, 0, 0, tzinfo=UTC_PLUS_2).timestamp()
    assert audit.calls == [("slack:U2", midnight), ("slack:U1", midnight)]
    assert quota_reply(50, reset_in) == (
        "You've used today's 50 questions. Your quota resets at midnight (in about 3 hours)."
    )
    assert quota_reply(1, 1800) == (
        "You've used today's 1 question. Your quota resets at midnight (in about 30 minutes)."
    )


async def test_quota_counts_questions_still_in_flight() -> None:
    audit = FakeAudit({"slack:U1": 48})
    quota = QuotaChecker(50, audit.count_for_user, UTC, clock=lambda: 1_741_600_000.0)
    assert await quota.check("slack:U1", pending=1) is None
    assert await quota.check("slack:U1", pending=2) is not None


async def test_quota_off_or_admin_never_counts() -> None:
    audit = FakeAudit({"slack:U1": 10_000, ADMIN: 10_000})
    assert await QuotaChecker(0, audit.count_for_user).check("slack:U1") is None
    admin_aware = QuotaChecker(5, audit.count_for_user, exempt={ADMIN}.__contains__)
    assert await admin_aware.check(ADMIN) is None
    assert audit.calls == []
    assert await admin_aware.check("slack:U1") is not None


async def test_quota_lets_questions_through_when_the_store_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(user: str, since: float) -> int:
        raise OSError("database is locked")

    with caplog.at_level(logging.WARNING, logger="bot.ratelimit"):
        assert await QuotaChecker(5, broken).check("slack:U1") is None
    assert "could not count questions of slack:U1" in caplog.text


def test_quota_day_follows_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    noon = datetime(2025, 3, 30, 12, 0, tzinfo=berlin).timestamp()  # clocks went forward at 02:00
    start, end = QuotaChecker(5, FakeAudit({}).count_for_user, berlin).day_bounds(noon)
    assert start == datetime(2025, 3, 29, 23, 0, tzinfo=UTC).timestamp()
    assert end == datetime(2025, 3, 30, 22, 0, tzinfo=UTC).timestamp()
    assert zone("Europe/Berlin") == berlin and zone("") is None
    local_start, local_end = QuotaChecker(5, FakeAudit({}).count_for_user).day_bounds(noon)
    assert local_start <= noon < local_end and 23 * 3600 <= local_end - local_start <= 25 * 3600
