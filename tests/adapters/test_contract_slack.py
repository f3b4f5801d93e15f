"""Slack passes the adapter contract (``tests/adapters/contract.py``): real slack-bolt/slack_sdk against the loopback
fake Slack, in a direct message."""

from __future__ import annotations

import uuid
from typing import Literal

import pytest

from adapters.slack import SlackAdapter
from sandbox.slack_server import FakeSlack
from tests.adapters.contract import *  # noqa: F403
from tests.adapters.contract import EnvironmentDriver, Question, Shown
from tests.support.resume_support import StartSlack

pytestmark = pytest.mark.timeout(60)

CHANNEL = "D0ALICE"
CALLS = {"post": "chat.postMessage", "edit": "chat.update"}
STREAMED_EDIT = "chat.appendStream"


class SlackDriver(EnvironmentDriver):
    chars_variable = "SLACK_MAX_MESSAGE_CHARS"

    def __init__(self, fake: FakeSlack, start: StartSlack, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(start, SlackAdapter, monkeypatch)
        self.fake = fake
        self.native = True
        """Answers stream natively (``chat.appendStream`` is the edit), else by ``chat.update``."""

    def question(self, text: str) -> Question:
        return Question(f"Ev{uuid.uuid4().hex[:10].upper()}", self.fake.user_message(CHANNEL, text))

    async def deliver(self, question: Question, *, event_id: str | None = None) -> None:
        event_id = event_id or question.event_id
        attempt = len(self.fake.deliveries_of(event_id))
        question.deliveries.append(await self.fake.send_event(question.event, event_id=event_id, retry_attempt=attempt))

    def acks(self, question: Question) -> list[float]:
        # Slack delivers an unacked event again in a new envelope with the same payload.
        return [
            d.acked_at
            for d in self.fake.deliveries.values()
            if d.acked_at is not None and d.envelope["payload"].get("event") is question.event
        ]

    def replies(self, question: Question) -> list[Shown]:
        return [Shown(m["ts"], m["text"]) for m in self.fake.bot_messages(CHANNEL, question.event["ts"])]

    def refuse_once(self, call: Literal["post", "edit"]) -> None:
        method = STREAMED_EDIT if call == "edit" and self.native else CALLS[call]
        self.fake.rate_limit(method, retry_after=0.2)

    def refusals(self) -> int:
        return sum(1 for c in self.fake.api_calls if c.status == 429)

    async def withdraw(self, question: Question) -> None:
        deletion = self.fake.delete_message(CHANNEL, question.event["ts"])
        await self.fake.wait_for_ack(await self.fake.send_event(deletion))


@pytest.fixture(params=["native streaming", "chat.update"])
def driver(
    request: pytest.FixtureRequest, slack: FakeSlack, start_slack: StartSlack, monkeypatch: pytest.MonkeyPatch
) -> SlackDriver:
    """Both ways an answer streams: natively (the default) and by editing a placeholder (the fallback)."""
    driver = SlackDriver(slack, start_slack, monkeypatch)
    if request.param == "chat.update":
        monkeypatch.setenv("SLACK_NATIVE_STREAMING", "false")
        driver.native = False
    return driver
