"""Feishu passes the adapter contract (``tests/adapters/contract.py``): our long connection and lark-oapi REST
against the loopback fake Feishu, in a direct chat."""

from __future__ import annotations

from typing import Literal

import pytest

from adapters.feishu import FeishuAdapter
from tests.adapters.contract import *  # noqa: F403
from tests.adapters.contract import EnvironmentDriver, Question, Shown
from tests.support.fake_feishu import FakeFeishu
from tests.support.resume_support import StartFeishu

pytestmark = pytest.mark.timeout(60)

CALLS = {
    "post": ("POST", r"^/open-apis/im/v1/messages/[^/]+/reply$"),
    "edit": ("PUT", r"^/open-apis/cardkit/v1/cards/[^/]+/elements/"),
}


class FeishuDriver(EnvironmentDriver):
    chars_variable = "FEISHU_MAX_REPLY_CHARS"

    def __init__(self, fake: FakeFeishu, start: StartFeishu, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(start, FeishuAdapter, monkeypatch)
        self.fake = fake

    def question(self, text: str) -> Question:
        event = self.fake.message_event(msg_type="text", content={"text": text})
        return Question(event["header"]["event_id"], event)

    async def deliver(self, question: Question, *, event_id: str | None = None) -> None:
        event = question.event
        if event_id is not None:
            event = {**event, "header": {**event["header"], "event_id": event_id}}
        question.deliveries.append(await self.fake.push_event(event))

    def acks(self, question: Question) -> list[float]:
        # Feishu sends a frame again, under the same transport id, until it is acked with code 200.
        return [at for t in question.deliveries for at in self._taken(t)]

    def replies(self, question: Question) -> list[Shown]:
        replies = self.fake.replies_to(_message_id(question))
        return [Shown(m.message_id, self.fake.visible_text(m)) for m in replies if not m.deleted]

    def refuse_once(self, call: Literal["post", "edit"]) -> None:
        method, path = CALLS[call]
        self.fake.fail(method, path)

    def refusals(self) -> int:
        return sum(1 for c in self.fake.calls if c.status == 429)

    async def withdraw(self, question: Question) -> None:
        recall = await self.fake.push_event(self.fake.recall_event(_message_id(question)))
        await self.fake.wait_for(lambda: self._taken(recall), what="the recall acked")

    def _taken(self, transport_id: str) -> list[float]:
        return [a.at for a in self.fake.acks_for(transport_id) if a.code == 200]


def _message_id(question: Question) -> str:
    return str(question.event["event"]["message"]["message_id"])


@pytest.fixture
def driver(feishu: FakeFeishu, start_feishu: StartFeishu, monkeypatch: pytest.MonkeyPatch) -> FeishuDriver:
    return FeishuDriver(feishu, start_feishu, monkeypatch)
