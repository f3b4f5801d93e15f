"""Allowlists check the sender's own organisation; refusals and commands are rate limited.

Adapters carry the sender's workspace or tenant on ``User.org`` (Slack Connect guests, Feishu external users), and
``PEEKBOT_ALLOWED_WORKSPACES`` applies to it. A refused person hears why at most once a minute; commands of
non-admins count against the per-user rate limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from bot.access import AccessPolicy
from bot.app import Application
from bot.settings import AccessSettings
from bot.types import IncomingMessage, User
from sandbox.slack_server import FakeSlack
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.fake_feishu import FakeFeishu
from tests.support.helpers import RecordingReply, message
from tests.support.resume_support import Core, StartFeishu, StartSlack


def from_org(msg: IncomingMessage, org: str, user: str = "U1") -> IncomingMessage:
    return replace(msg, user=User(msg.user.platform, user, org=org))


def test_a_guest_from_another_workspace_is_refused_where_the_workspace_is_allowed() -> None:
    policy = AccessPolicy(AccessSettings(allowed_workspaces=["local:W1"], access_contact="#it-help"))
    guest = policy.check(from_org(message("what is this?"), "W-PARTNER"))
    assert guest is not None and guest.reason == "org_not_allowed" and not guest.silent
    assert "#it-help" in guest.reply
    assert policy.check(from_org(message("what is this?"), "W1")) is None, "a colleague is answered"
    assert policy.check(message("what is this?")) is None, "unknown organisation: the workspace decides"
    open_policy = AccessPolicy(AccessSettings())
    assert open_policy.check(from_org(message("hi"), "W-PARTNER")) is None, "no allowlist: everyone"


async def test_slack_connect_guests_carry_their_own_team(slack: FakeSlack, start_slack: StartSlack) -> None:
    core = Core()
    await start_slack(core)
    await slack.send_event(slack.user_message("D0DM", "hello", user="U0GUEST", user_team="T0PARTNER"))
    await slack.send_event(slack.user_message("D0DM2", "hello", user="U0ALICE"))
    guest, _ = await core.wait_taken(1)
    colleague, _ = await core.wait_taken(2)
    assert (guest.user.org, guest.conversation.workspace) == ("T0PARTNER", slack.TEAM_ID)
    assert colleague.user.org == slack.TEAM_ID


async def test_feishu_external_senders_carry_their_own_tenant(feishu: FakeFeishu, start_feishu: StartFeishu) -> None:
    core = Core()
    await start_feishu(core)
    await feishu.push_event(
        feishu.message_event(
            msg_type="text", content={"text": "hi"}, chat_id="oc_ext", sender_tenant_key="tenant-partner"
        )
    )
    external, _ = await core.wait_taken(1)
    assert (external.user.org, external.conversation.workspace) == ("tenant-partner", feishu.tenant_key)


@pytest.fixture
def start(start_app: AppStarter) -> Callable[..., Any]:
    async def _start(**env: object) -> tuple[Application, FakeEngine]:
        app = await start_app(peekbot_environment(**{"HTTP_PORT": 0, "ADMINS": "local:ADMIN", **env}),
                              engine=lambda _: FakeEngine())
        return app, app.engine  # type: ignore[return-value]

    return _start


async def send(app: Application, msg: IncomingMessage) -> RecordingReply:
    reply = RecordingReply()
    assert await app.handle(msg, reply)
    assert await app.wait_idle(10)
    return reply


async def test_a_refused_person_is_told_once_a_minute_and_every_refusal_is_audited(
    start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.app.REFUSAL_REPEAT_S", 0.5)
    app, engine = await start(ALLOWED_WORKSPACES="local:W1")
    replies = [await send(app, from_org(message(f"question {n}?"), "W-PARTNER")) for n in range(4)]
    assert [r.error is not None for r in replies] == [True, False, False, False]
    assert "yours isn't one of them" in (replies[0].error or "")
    await asyncio.sleep(0.6)
    later = await send(app, from_org(message("and now?"), "W-PARTNER"))
    assert later.error is not None, "told again once the minute is over"
    assert engine.generations == 0
    summary = await app.store.audit.summary(0)
    assert summary.by_outcome.get("refused") == 5


async def test_rate_limited_people_hear_it_once_and_commands_count_against_the_limit(start) -> None:
    app, engine = await start(RATE_LIMIT_PER_MINUTE=1, RATE_LIMIT_BURST=2)
    help_replies = [await send(app, message("/help", user="U7")) for _ in range(2)]
    assert all(r.final for r in help_replies)
    limited = [await send(app, message(f"/status {n}", user="U7")) for n in range(2)]
    limited.append(await send(app, message("what is this?", user="U7")))
    assert limited[0].error is not None and "wait about" in limited[0].error
    assert [r.error for r in limited[1:]] == [None, None] and [r.final for r in limited[1:]] == [None, None]
    assert engine.generations == 0
    for n in range(4):
        admin = await send(app, message(f"/status {n}", user="ADMIN"))
        assert admin.final, "admins are never limited"
    summary = await app.store.audit.summary(0)
    assert summary.by_outcome.get("rate_limited") == 3
