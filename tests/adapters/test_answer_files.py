"""A long answer goes out as one file (answer.md) with a short summary in the message, on Slack and on Feishu, and
a process that dies while posting it leaves the next one nothing to post twice.

What counts is what a person sees on the loopback fakes: the summary in the reply's own message, the file once, with
the whole answer in it. The core's journal is played by a dict that the reply's checkpoint hook fills (as
``TrackedReply`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from adapters.kit.longanswers import ANSWER_FILE_NAME
from adapters.kit.text import split_text
from bot.types import JournaledReply
from tests.adapters.contract import Driver, Question, answering
from tests.adapters.test_contract_feishu import FeishuDriver, _message_id
from tests.adapters.test_contract_slack import CHANNEL, SlackDriver
from tests.support.resume_support import Core, journaled

pytestmark = pytest.mark.timeout(60)

LIMIT = 120
FIVE_MESSAGES = "\n\n".join(f"Step {i}: " + " ".join(["check the cable"] * 5) + "." for i in range(1, 6))


class Died(Exception):
    """The process died here."""


@dataclass
class Platform:
    driver: Driver
    texts: Callable[[Question], list[str]]
    """The bot's text messages for the question (not the file messages)."""
    files: Callable[[Question], list[bytes]]
    """The contents of the files shown for the question, in order."""
    uploads: Callable[[], int]
    """How many files the bot uploaded in all (shown or not)."""
    refuse_upload: Callable[[], None]
    """The platform refuses the next upload for good (a missing permission)."""


@pytest.fixture(params=["slack", "feishu"])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Platform:
    if request.param == "slack":
        slack = request.getfixturevalue("slack")
        driver = SlackDriver(slack, request.getfixturevalue("start_slack"), monkeypatch)

        def slack_thread(question: Question) -> str:
            return str(question.event["ts"])

        return Platform(
            driver,
            lambda q: [m["text"] for m in slack.bot_messages(CHANNEL, slack_thread(q)) if not m.get("files")],
            lambda q: [f["content"] for f in slack.shared_files(CHANNEL, slack_thread(q))],
            lambda: len(slack.uploads),
            lambda: slack.fail("files.getUploadURLExternal", error="missing_scope"),
        )
    fake = request.getfixturevalue("feishu")
    feishu = FeishuDriver(fake, request.getfixturevalue("start_feishu"), monkeypatch)
    return Platform(
        feishu,
        lambda q: [fake.visible_text(m) for m in fake.replies_to(_message_id(q)) if m.msg_type != "file"],
        lambda q: [resource.data for resource in fake.files_sent(_message_id(q))],
        lambda: len(fake.uploaded),
        lambda: fake.fail("POST", r"/im/v1/files$", status=400, code=99991672, message="no permission"),
    )


async def test_a_five_message_answer_becomes_one_file_and_a_summary(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    assert len(split_text(FIVE_MESSAGES, LIMIT)) == 5
    up = await answering(driver)
    await up.reply.update(FIVE_MESSAGES[:60])
    await up.reply.finish(FIVE_MESSAGES)

    [summary] = platform.texts(up.question)
    assert driver.replies(up.question)[0].id == up.placeholder.id, "the summary is in the reply's own message"
    assert len(summary) <= LIMIT and ANSWER_FILE_NAME in summary
    assert platform.files(up.question) == [FIVE_MESSAGES.encode()]
    assert platform.uploads() == 1


async def test_a_crash_after_the_file_went_out_does_not_post_it_again(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    first = await answering(driver)
    journal = dict(first.reply.resume_state())
    _journal_into(journal, first.reply)
    surface = first.reply.surface
    share = surface.share_file

    async def share_then_die(file_id: str, name: str) -> None:  # the process dies right after the platform call
        await share(file_id, name)
        raise Died

    surface.share_file = share_then_die
    with pytest.raises(Died):
        await first.reply.finish(FIVE_MESSAGES)
    assert journal.get("answer_file") and "answer_file_shown" not in journal
    await first.adapter.stop()

    resumed = await _resume(driver, first, journal)
    await resumed.finish(FIVE_MESSAGES)

    assert platform.files(first.question) == [FIVE_MESSAGES.encode()], "the file was shown twice or not at all"
    assert platform.uploads() == 1, "the file was uploaded again"
    assert len(platform.texts(first.question)) == 1


async def test_a_crash_before_the_upload_was_journaled_still_shows_the_file_once(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    first = await answering(driver)
    journal = dict(first.reply.resume_state())

    async def die() -> None:  # the upload is done, its journal entry never written
        raise Died

    first.reply.bind_journal(die, lambda: True)
    with pytest.raises(Died):
        await first.reply.finish(FIVE_MESSAGES)
    assert platform.files(first.question) == [] and platform.uploads() == 1
    await first.adapter.stop()

    resumed = await _resume(driver, first, journal)
    await resumed.finish(FIVE_MESSAGES)

    assert platform.files(first.question) == [FIVE_MESSAGES.encode()]
    assert len(platform.texts(first.question)) == 1


async def test_an_answer_of_three_messages_is_still_split(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    three = FIVE_MESSAGES.rsplit("\n\nStep 4", 1)[0]
    up = await answering(driver)
    await up.reply.finish(three)
    assert platform.texts(up.question) == split_text(three, LIMIT)
    assert platform.files(up.question) == [] and platform.uploads() == 0


async def test_an_answer_begun_in_messages_is_finished_in_messages(platform: Platform) -> None:
    driver = platform.driver
    driver.limit_reply_chars(LIMIT)
    platform.refuse_upload()  # the first process could not upload: it posts messages, and dies after the second
    first = await answering(driver)
    journal = dict(first.reply.resume_state())
    calls = 0

    async def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Died
        journal.update(first.reply.resume_state())

    first.reply.bind_journal(checkpoint, lambda: True)
    with pytest.raises(Died):
        await first.reply.finish(FIVE_MESSAGES)
    await first.adapter.stop()

    resumed = await _resume(driver, first, journal)  # uploads work again: the answer still goes on in messages
    await resumed.finish(FIVE_MESSAGES)

    assert platform.texts(first.question) == split_text(FIVE_MESSAGES, LIMIT)
    assert platform.files(first.question) == [] and platform.uploads() == 0


def _journal_into(journal: dict[str, str], reply: JournaledReply) -> None:
    async def checkpoint() -> None:
        journal.update(reply.resume_state())  # type: ignore[attr-defined]

    reply.bind_journal(checkpoint, lambda: True)


async def _resume(driver: Driver, first, journal: dict[str, str]) -> JournaledReply:  # type: ignore[no-untyped-def]
    second = await driver.start(Core())
    resumed = second.reply_for(journaled(first.message), dict(journal))  # type: ignore[attr-defined]
    assert isinstance(resumed, JournaledReply)
    _journal_into(journal, resumed)
    return resumed
