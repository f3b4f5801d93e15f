"""A long answer goes out in several messages; a process that dies between them must not make the next one repeat any.

The first process's reply journals its progress through the core's checkpoint hook after each part (as
``TrackedReply`` does) and dies (an exception from the hook) right after posting the second part, before that part
was journaled. The next process re-creates the reply from the journaled state and delivers the same final text.
What counts is what a person sees on the loopback fakes: every part exactly once, in order.
"""

from __future__ import annotations

import pytest

from adapters.kit.text import split_text
from bot.types import JournaledReply
from tests.adapters.test_resume_replies import feishu_question, slack_question
from tests.support.fake_feishu import FakeFeishu
from tests.support.fake_slack import FakeSlack
from tests.support.resume_support import (  # noqa: F401
    Core,
    StartFeishu,
    StartSlack,
    feishu,
    journaled,
    slack,
    start_feishu,
    start_slack,
)

pytestmark = pytest.mark.timeout(60)

LIMIT = 120
LONG_ANSWER = "\n\n".join(f"Step {i}: " + " ".join(["check the cable"] * 5) + "." for i in range(1, 5))


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


async def test_slack_long_answer_cut_by_a_crash_is_completed_without_repeating_a_part(
    slack: FakeSlack,  # noqa: F811
    start_slack: StartSlack,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_MAX_MESSAGE_CHARS", str(LIMIT))
    pieces = split_text(LONG_ANSWER, LIMIT)
    assert len(pieces) == 4
    first_core = Core()
    first = await start_slack(first_core)
    question, message, reply = await slack_question(slack, first_core)
    await reply.start_progress(None)
    journal = dict(reply.resume_state())
    dying_after(2, journal, reply)
    with pytest.raises(Died):
        await reply.finish(LONG_ANSWER)
    assert journal["parts_posted"] == "1"  # the second part is out, but the journal does not know
    await first.stop()

    second = await start_slack(Core())
    resumed = second.reply_for(journaled(message), dict(journal))
    assert isinstance(resumed, JournaledReply)
    resumed.bind_journal(lambda: _nothing(), lambda: True)
    await resumed.finish(LONG_ANSWER)

    shown = [m["text"] for m in slack.bot_messages("D0ALICE", question["ts"])]
    assert shown == pieces, "a part was posted twice or left out"
    assert slack.bot_messages("D0ALICE", question["ts"])[0]["ts"] == journal["placeholder_ts"]


async def test_feishu_long_answer_cut_by_a_crash_is_completed_without_repeating_a_part(
    feishu: FakeFeishu,  # noqa: F811
    start_feishu: StartFeishu,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEISHU_MAX_REPLY_CHARS", str(LIMIT))
    pieces = split_text(LONG_ANSWER, LIMIT)
    assert len(pieces) == 4
    first_core = Core()
    first = await start_feishu(first_core)
    question_id, message, reply = await feishu_question(feishu, first_core)
    await reply.start_progress(None)
    journal = dict(reply.resume_state())
    dying_after(2, journal, reply)
    with pytest.raises(Died):
        await reply.finish(LONG_ANSWER)
    assert journal["parts_posted"] == "1"
    await first.stop()

    second = await start_feishu(Core())
    resumed = second.reply_for(journaled(message), dict(journal))
    assert isinstance(resumed, JournaledReply)
    resumed.bind_journal(lambda: _nothing(), lambda: True)
    await resumed.finish(LONG_ANSWER)

    assert feishu.reply_texts(question_id) == pieces, "a part was sent twice or left out"


async def _nothing() -> None:
    return None
