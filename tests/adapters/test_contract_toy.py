"""Toy chat, a made-up third platform built from the adapter kit (``tests/adapters/toy/``), passes the adapter
contract (``tests/adapters/contract.py``) through its loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import pytest

from bot.settings import Settings
from bot.types import Adapter
from tests.adapters.contract import *  # noqa: F403
from tests.adapters.contract import EnvironmentDriver, Question, Shown
from tests.adapters.toy.plugin import TOY
from tests.adapters.toy.server import TOKEN, ToyServer
from tests.support.resume_support import Core
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


class ToyDriver(EnvironmentDriver):
    chars_variable = "TOY_MAX_MESSAGE_CHARS"

    def __init__(self, server: ToyServer, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(self._started_with, TOY.create, monkeypatch)
        self.server = server
        self.started: list[Adapter] = []

    async def _started_with(self, core: Core) -> Adapter:
        adapter = TOY.create(Settings())
        self.started.append(adapter)
        await adapter.start(core)
        return adapter

    def question(self, text: str) -> Question:
        event = self.server.say(text)
        return Question(event["id"], event)

    async def deliver(self, question: Question, *, event_id: str | None = None) -> None:
        event = question.event if event_id is None else {**question.event, "id": event_id}
        question.deliveries.append(await self.server.deliver(event))

    def acks(self, question: Question) -> list[float]:
        return [a.at for a in self.server.acks if a.ok and a.delivery in question.deliveries]

    def replies(self, question: Question) -> list[Shown]:
        return [Shown(m.id, m.text) for m in self.server.replies_to(question.event["message"]["id"])]

    def refuse_once(self, call: Literal["post", "edit"]) -> None:
        self.server.refuse("POST" if call == "post" else "PUT")

    def refusals(self) -> int:
        return self.server.refusals

    async def withdraw(self, question: Question) -> None:
        delivery = await self.server.deliver(self.server.delete(question.event["message"]["id"]))
        await eventually(lambda: any(a.ok and a.delivery == delivery for a in self.server.acks), "the deletion acked")


@pytest.fixture
async def driver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ToyDriver]:
    async with ToyServer() as server:
        for key, value in {"TOY_URL": server.url, "TOY_TOKEN": TOKEN, "TOY_UPDATE_INTERVAL_S": "0.05"}.items():
            monkeypatch.setenv(key, value)
        toy = ToyDriver(server, monkeypatch)
        yield toy
        for adapter in toy.started:
            await adapter.stop()
