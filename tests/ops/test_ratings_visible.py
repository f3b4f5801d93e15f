"""Ratings where operators look: the /stats line, the ``peekbot_feedback_total`` counter and the status page chart.

The core with the torch-free ``FakeEngine``, an adapter whose answers carry buttons, and the real HTTP server on
127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Application
from bot.http import StatusServer
from bot.settings import Settings
from bot.types import AnswerActionKind, IncomingMessage, User
from tests.support.apps import peekbot_environment, set_environment
from tests.support.buttons import ADA, ButtonsAdapter
from tests.support.engines import FakeEngine
from tests.support.helpers import RecordingReply, message

pytestmark = pytest.mark.timeout(60)

HELPFUL, NOT_HELPFUL = AnswerActionKind.HELPFUL, AnswerActionKind.NOT_HELPFUL
BO = User("local", "U2", "Bo")

Served = tuple[Application, ButtonsAdapter, StatusServer]


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Served]:
    set_environment(monkeypatch, peekbot_environment(admins="local:ADMIN", http_port=0, data_dir=tmp_path / "data"))
    adapter = ButtonsAdapter()
    app = Application(Settings(), engine=FakeEngine(), adapters=[adapter])
    server = StatusServer(app, port=0)
    app.services.append(server)
    async with app:
        yield app, adapter, server


async def ask(app: Application, text: str, user: str = "U1") -> tuple[IncomingMessage, str]:
    question = message(text, user=user)
    reply = RecordingReply()
    assert await app.handle(question, reply)
    await reply.wait(10)
    assert reply.error is None, reply.error
    assert await app.wait_idle(10)
    return question, reply.final or ""


async def get(server: StatusServer, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        assert response.status == 200
        return await response.text()


async def feedback(server: StatusServer) -> dict[str, float]:
    """The ``peekbot_feedback_total`` samples by rating (platform ``local``)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(await get(server, "/metrics")):
        for sample in family.samples:
            if sample.name == "peekbot_feedback_total":
                assert sample.labels["platform"] == "local"
                found[sample.labels["rating"]] = sample.value
    return found


async def test_stats_metrics_and_the_status_page_show_the_ratings(served: Served) -> None:
    app, adapter, server = served
    questions = [(await ask(app, f"question {i}"))[0] for i in range(3)]
    for question, user, kind in (
        (questions[0], ADA, HELPFUL),
        (questions[0], BO, HELPFUL),
        (questions[1], ADA, HELPFUL),
        (questions[2], ADA, NOT_HELPFUL),
    ):
        await adapter.click(question, kind, user=user)

    _, stats = await ask(app, "/stats", user="ADMIN")
    assert stats.splitlines()[1] == "Helpful: 75 % of 4 rated (7 days)."
    assert await feedback(server) == {"helpful": 3.0, "not_helpful": 1.0}

    await adapter.click(questions[2], HELPFUL)  # changed: the answer counts once, under its new rating
    await adapter.click(questions[2], HELPFUL)  # the same click again changes nothing
    _, stats = await ask(app, "/stats 1", user="ADMIN")
    assert stats.splitlines()[1] == "Helpful: 100 % of 4 rated (1 day)."
    assert await feedback(server) == {"helpful": 4.0, "not_helpful": 1.0}

    page = await get(server, "/status")
    assert "Ratings per day, last 7 days (UTC)" in page
    assert "<title>helpful</title>" in page and "<title>not helpful</title>" in page


async def test_stats_says_when_nothing_was_rated(served: Served) -> None:
    app, _, _ = served
    await ask(app, "a question nobody rates")
    _, stats = await ask(app, "/stats", user="ADMIN")
    assert stats.splitlines()[1] == "Helpful: no answers rated (7 days)."
