"""A long answer goes out in several messages; a process that dies between them must not make the next one repeat any.

The first process's reply journals its progress through the core's checkpoint hook after each part (as
``TrackedReply`` does) and dies (an exception from the hook) right after posting the second part, before that part
was journaled. The next process re-creates the reply from the journaled state and delivers the same final text.
What counts is what a person sees on the loopback fakes: every part exactly once, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from adapters.kit.text import split_text
from bot.types import JournaledReply
from tests.adapters.contract import LIMIT, LONG_ANSWER, Driver, Question, answering, texts
from tests.adapters.test_contract_feishu import FeishuDriver
from tests.adapters.test_contract_slack import SlackDriver
from tests.support.resume_support import Core, journaled

pytestmark = pytest.mark.timeout(60)


class Died(Exception):
    """The process died here."""


def dying_after(parts: int, journal: dict[str, str], reply: JournaledReply) -> None:
    """Journal the reply's state at each checkpoint, but die (unjournaled) once ``parts`` parts are out."""
    calls = 0

    async def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == parts:
            raise Died
        journal.update(reply.resume_state())  # type: ignore[attr-defined]

    reply.bind_journal(checkpoint, lambda: True)


@dataclass
class Platform:
    driver: Driver
    sent: Callable[[Question], list[str]]
    """The texts of every message the bot sent in answer, also those it took back since."""


@pytest.fixture(params=["slack", "feishu"])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Platform:
    if request.param == "slack":  # a deleted Slack message is gone: what is shown is all that was sent
        slack = SlackDriver(request.getfixturevalue("slack"), request.getfixturevalue("start_slack"), monkeypatch)
        return Platform(slack, lambda question: texts(slack, question))
    fake = request.getfixturevalue("feishu")
    feishu = FeishuDriver(fake, request.getfixturevalue("start_feishu"), monkeypatch)
    return Platform(feishu, lambda question: fake.reply_texts(question.event["event"]["message"]["message_id"]))


async def test_a_long_answer_cut_by_a_crash_is_completed_without_repeating_a_part(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    pieces = split_text(LONG_ANSWER, LIMIT)
    assert len(pieces) == 3
    first = await answering(driver)
    journal = dict(first.reply.resume_state())
    dying_after(2, journal, first.reply)
    with pytest.raises(Died):
        await first.reply.finish(LONG_ANSWER)
    assert journal["parts_posted"] == "1"  # the second part is out, but the journal does not know
    await first.adapter.stop()

    second = await driver.start(Core())
    resumed = second.reply_for(journaled(first.message), dict(journal))  # type: ignore[attr-defined]
    assert isinstance(resumed, JournaledReply)
    resumed.bind_journal(_nothing, lambda: True)
    await resumed.finish(LONG_ANSWER)

    assert platform.sent(first.question) == pieces, "a part was posted twice or left out"
    assert driver.replies(first.question)[0].id == first.placeholder.id


async def _nothing() -> None:
    return None
