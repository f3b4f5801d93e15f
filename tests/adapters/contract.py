"""Behaviour every chat platform's adapter must have, checked through its loopback fake.

Plain async test functions taking a fixture named ``driver`` (a ``Driver`` over one platform's fake). A test module
defines that fixture and imports these with ``from tests.adapters.contract import *  # noqa: F403``. A new
platform is done when it passes them.

Most checks start adapters with a stand-in core (``Core`` of ``tests.support.resume_support``): it counts its
calls, can be slow or fail like a broken journal, and hands the test the reply handle, which the test drives as the
core would. The withdrawal checks run the real ``Application`` with a torch-free engine that holds its answer back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pytest

from bot.app import Application
from bot.settings import Settings
from bot.types import Adapter, IncomingMessage, JournaledReply, ResumableReplies, ResumableReply
from tests.support.engines import FakeEngine
from tests.support.resume_support import Core, journaled
from tests.support.waiting import eventually

__all__ = [
    "test_a_429_on_a_post_is_waited_out",
    "test_a_429_on_an_edit_is_waited_out",
    "test_a_copy_that_outwaits_the_intake_wait_is_left_unacked_then_acked",
    "test_a_long_answer_is_split_into_parts_in_order",
    "test_a_question_withdrawn_before_it_arrives_is_never_answered",
    "test_a_question_withdrawn_while_answered_loses_its_placeholder_and_gets_no_answer",
    "test_a_reply_is_finished_on_the_same_message_by_the_next_process",
    "test_an_event_is_acked_only_after_the_core_took_it",
    "test_an_event_the_core_failed_to_take_is_delivered_again_and_taken_once",
    "test_one_message_under_two_event_ids_reaches_the_core_once",
    "test_streamed_text_then_the_final_text_in_one_message",
    "test_the_same_event_delivered_twice_reaches_the_core_once",
]

SLOW_CORE_S = 0.3
"""How long the stand-in core takes to journal: long enough for copies to overlap."""
LIMIT = 120
"""Message size (characters) for the split check."""
LONG_ANSWER = "\n\n".join(f"Step {i}: " + " ".join(["check the cable"] * 5) + "." for i in range(1, 4))
"""Three messages at ``LIMIT``: the most that are still split (a longer answer goes out as a file)."""


@dataclass
class Question:
    """A person's message to the bot on the fake platform. ``event`` is the platform's event for it."""

    event_id: str
    event: Any
    deliveries: list[str] = field(default_factory=list)
    """Ids of the deliveries made through ``Driver.deliver`` (envelopes, frames), in order."""


@dataclass(frozen=True)
class Shown:
    """One of the bot's messages as a person sees it now."""

    id: str
    text: str


class Driver(Protocol):
    """One platform as the contract sees it: its adapter and the loopback fake the adapter talks to."""

    def limit_reply_chars(self, limit: int) -> None:
        """Answers longer than ``limit`` characters go out in several messages (call before ``start``)."""

    async def start(self, core: Core) -> Adapter:
        """A new adapter (one per simulated process) started with ``core``; stopped when the test ends."""

    def new_adapter(self, settings: Settings) -> Adapter:
        """A new adapter for the fake, not started (an ``Application`` starts it)."""

    def question(self, text: str) -> Question:
        """A person writes ``text`` to the bot in a direct chat (not delivered yet)."""

    async def deliver(self, question: Question, *, event_id: str | None = None) -> None:
        """The platform delivers the question's event (as another event, ``event_id``, when given: the same message
        again); a delivery not acked is delivered again, as the platform does."""

    def acks(self, question: Question) -> list[float]:
        """``time.monotonic()`` of each ack that told the platform a delivery of the question was taken."""

    def replies(self, question: Question) -> list[Shown]:
        """The bot's messages answering the question, as a person sees them now, oldest first."""

    def refuse_once(self, call: Literal["post", "edit"]) -> None:
        """The platform answers the bot's next post (or edit) of a message with 429 and a short retry-after."""

    def refusals(self) -> int:
        """How many of the bot's calls were answered 429 so far."""

    async def withdraw(self, question: Question) -> None:
        """Its author deletes (recalls) the question; returns once the platform got the ack of that event."""


class EnvironmentDriver:
    """The part of a ``Driver`` that platforms configured by environment variables share: ``start`` and
    ``new_adapter`` as given, ``limit_reply_chars`` through the platform's variable ``chars_variable``."""

    chars_variable = ""

    def __init__(
        self,
        start: Callable[[Core], Awaitable[Adapter]],
        create: Callable[[Settings], Adapter],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self._start = start
        self._create = create
        self._monkeypatch = monkeypatch

    def limit_reply_chars(self, limit: int) -> None:
        self._monkeypatch.setenv(self.chars_variable, str(limit))

    async def start(self, core: Core) -> Adapter:
        return await self._start(core)

    def new_adapter(self, settings: Settings) -> Adapter:
        return self._create(settings)


async def asked(driver: Driver, core: Core, text: str = "what is this?") -> tuple[Question, Any, Any]:
    """A question delivered and taken by ``core``: (question, the core's message, its reply handle)."""
    question = driver.question(text)
    await driver.deliver(question)
    message, reply = await core.wait_taken()
    await eventually(lambda: driver.acks(question), "the ack")
    return question, message, reply


def texts(driver: Driver, question: Question) -> list[str]:
    return [shown.text for shown in driver.replies(question)]


@dataclass
class Answering:
    """A question taken by the stand-in core whose reply shows its placeholder."""

    adapter: Adapter
    question: Question
    message: IncomingMessage
    reply: Any
    placeholder: Shown


async def answering(driver: Driver) -> Answering:
    core = Core()
    adapter = await driver.start(core)
    question, message, reply = await asked(driver, core)
    await reply.start_progress(None)
    [placeholder] = await eventually(lambda: driver.replies(question), "the placeholder")
    return Answering(adapter, question, message, reply, placeholder)


# intake: each message reaches the core once, and is acked only once the core has it ----------------------------------
async def test_the_same_event_delivered_twice_reaches_the_core_once(driver: Driver) -> None:
    core = Core(delay_s=SLOW_CORE_S)
    await driver.start(core)
    question = driver.question("is this delivered twice?")
    await asyncio.gather(driver.deliver(question), driver.deliver(question))  # the second while the first is journaled
    await eventually(lambda: len(driver.acks(question)) >= 2, "an ack for each copy")
    await driver.deliver(question)  # and again, long after
    await eventually(lambda: len(driver.acks(question)) >= 3, "the ack of the late copy")
    await asyncio.sleep(SLOW_CORE_S)
    assert core.calls == 1 and len(core.taken) == 1
    assert min(driver.acks(question)) >= core.returned_at[0], "a copy was acked before the core had it"


async def test_a_copy_that_outwaits_the_intake_wait_is_left_unacked_then_acked(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEEKBOT_INTAKE_WAIT_S", "0.2")
    core = Core(delay_s=1.0)  # journals for longer than a copy waits: the copy is left for the platform to resend
    await driver.start(core)
    question = driver.question("a very slow journal")
    await driver.deliver(question)
    await asyncio.sleep(0.05)
    await driver.deliver(question)
    await eventually(lambda: len(driver.acks(question)) >= 2, "an ack for each copy")
    assert core.calls == 1
    assert min(driver.acks(question)) >= core.returned_at[0]


async def test_one_message_under_two_event_ids_reaches_the_core_once(driver: Driver) -> None:
    core = Core(delay_s=SLOW_CORE_S)
    await driver.start(core)
    question = driver.question("one post, two events")
    await asyncio.gather(driver.deliver(question), driver.deliver(question, event_id=f"{question.event_id}-other"))
    await eventually(lambda: len(driver.acks(question)) >= 2, "an ack for each event")
    await asyncio.sleep(SLOW_CORE_S)
    assert core.calls == 1 and len(core.taken) == 1
    assert min(driver.acks(question)) >= core.returned_at[0]


async def test_an_event_is_acked_only_after_the_core_took_it(driver: Driver) -> None:
    core = Core(delay_s=SLOW_CORE_S, duplicates={"seen it"})
    await driver.start(core)
    question, _, _ = await asked(driver, core, "slow journal")
    assert min(driver.acks(question)) >= core.returned_at[0]

    duplicate = driver.question("seen it")  # the core says: a duplicate (its journal has it): acked all the same
    await driver.deliver(duplicate)
    await eventually(lambda: driver.acks(duplicate), "the ack of a duplicate")


async def test_an_event_the_core_failed_to_take_is_delivered_again_and_taken_once(driver: Driver) -> None:
    core = Core(failures=1)  # the journal could not be written the first time
    await driver.start(core)
    question = driver.question("is the journal back?")
    await driver.deliver(question)
    message, _ = await core.wait_taken()  # from the platform's next delivery
    await eventually(lambda: driver.acks(question), "the ack")
    assert core.calls == 2 and len(core.taken) == 1 and message.text == "is the journal back?"
    assert min(driver.acks(question)) >= core.returned_at[0], "the copy the core failed on was acked"


# replies: what a person sees -----------------------------------------------------------------------------------------
async def test_streamed_text_then_the_final_text_in_one_message(driver: Driver) -> None:
    up = await answering(driver)
    await up.reply.update("The dialog")
    await eventually(lambda: texts(driver, up.question) == ["The dialog"], "the streamed text")
    await up.reply.update("The dialog says")
    await up.reply.finish("The dialog says the disk is full.")
    assert driver.replies(up.question) == [Shown(up.placeholder.id, "The dialog says the disk is full.")]


async def test_a_long_answer_is_split_into_parts_in_order(driver: Driver) -> None:
    driver.limit_reply_chars(LIMIT)
    up = await answering(driver)
    await up.reply.update(LONG_ANSWER[:60])
    await up.reply.finish(LONG_ANSWER)
    shown = driver.replies(up.question)
    assert len(shown) > 1 and shown[0].id == up.placeholder.id
    assert all(len(part.text) <= LIMIT for part in shown)
    assert " ".join(part.text for part in shown).split() == LONG_ANSWER.split(), "a part is missing or repeated"


async def test_a_429_on_an_edit_is_waited_out(driver: Driver) -> None:
    up = await answering(driver)
    driver.refuse_once("edit")
    await up.reply.update("Half an answer")
    await eventually(lambda: texts(driver, up.question) == ["Half an answer"], "the edit after the 429")
    await up.reply.finish("A whole answer.")
    assert texts(driver, up.question) == ["A whole answer."]
    assert driver.refusals() == 1


async def test_a_429_on_a_post_is_waited_out(driver: Driver) -> None:
    driver.limit_reply_chars(LIMIT)
    up = await answering(driver)
    driver.refuse_once("post")  # the post of the answer's second part
    await up.reply.finish(LONG_ANSWER)
    assert " ".join(texts(driver, up.question)).split() == LONG_ANSWER.split(), "a part was dropped"
    assert driver.refusals() == 1


async def test_a_reply_is_finished_on_the_same_message_by_the_next_process(driver: Driver) -> None:
    up = await answering(driver)
    assert isinstance(up.reply, ResumableReply) and isinstance(up.reply, JournaledReply)
    state = up.reply.resume_state()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in state.items()), "the journal stores strings"
    await up.adapter.stop()  # the process ends before answering

    second = await driver.start(Core())
    assert isinstance(second, ResumableReplies)
    resumed = second.reply_for(journaled(up.message), dict(state))
    await resumed.start_progress(None)
    await resumed.update("The answer is")
    await resumed.finish("The answer is: restart the service.")
    assert driver.replies(up.question) == [Shown(up.placeholder.id, "The answer is: restart the service.")]


# withdrawals, through the real core ----------------------------------------------------------------------------------
@asynccontextmanager
async def application(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEngine]:
    """The real core (SQLite journal in the test's data directory) with the platform's adapter and an engine that
    holds its answers back until ``release()``."""
    monkeypatch.setenv("PEEKBOT_HTTP_PORT", "0")
    settings = Settings()
    gated = FakeEngine()
    app = Application(settings, engine=gated, adapters=[driver.new_adapter(settings)], services=[])
    await app.start()
    try:
        yield gated
    finally:
        gated.release()
        await app.stop()


async def test_a_question_withdrawn_while_answered_loses_its_placeholder_and_gets_no_answer(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with application(driver, monkeypatch) as gated:
        gated.hold()
        question = driver.question("what is the password on this?")
        await driver.deliver(question)
        await asyncio.wait_for(gated.waiting.wait(), 10)
        await eventually(lambda: driver.replies(question), "the placeholder")

        await driver.withdraw(question)
        await eventually(lambda: not driver.replies(question), "the placeholder to go")
        assert gated.cancelled, "the answer was not stopped"
        gated.release()
        await asyncio.sleep(0.3)
        assert driver.replies(question) == [], "something was shown after the withdrawal"


async def test_a_question_withdrawn_before_it_arrives_is_never_answered(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with application(driver, monkeypatch) as gated:
        question = driver.question("what is on this screenshot?")
        await driver.withdraw(question)  # the platform delivered the deletion first
        await driver.deliver(question)
        await eventually(lambda: driver.acks(question), "the question acked")
        await asyncio.sleep(0.3)
        assert driver.replies(question) == [] and gated.generations == 0
