"""The kit's streaming reply over an in-memory chat: what a person sees while an answer streams and when it ends.

Throttled, coalesced edits that never hold up the core; the final text always lands (after a slow edit, through
rate limits, in place of a vanished placeholder); long answers in parts, journaled after each; a reply continued by
the next process on the same placeholder; a withdrawn question's placeholder removed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from adapters.kit.outbound import Failure
from adapters.kit.replies import ReplyConfig, StreamingReply
from adapters.kit.text import FENCE, LOOKING
from bot.types import JournaledReply, ResumableReply, RetractableReply
from tests.support.memory_surface import ChatError, MemoryChat, MemorySurface

pytestmark = pytest.mark.timeout(30)

INTERVAL = 0.1


class Tasks:
    """The adapter's background tasks; cancelled at the end of a test."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task


@pytest.fixture
async def tasks() -> AsyncIterator[Tasks]:
    spawned = Tasks()
    yield spawned
    for task in spawned.tasks:
        task.cancel()
    await asyncio.gather(*spawned.tasks, return_exceptions=True)


def reply_in(
    chat: MemoryChat, tasks: Tasks, *, interval: float = INTERVAL, max_chars: int = 1000, min_interval_s: float = 0.0
) -> StreamingReply:
    surface = MemorySurface(chat, min_interval_s=min_interval_s)
    return StreamingReply(surface, ReplyConfig(update_interval_s=interval, max_chars=max_chars), spawn=tasks.spawn)


async def stream(reply: StreamingReply, words: int, *, pause_s: float = 0.01) -> str:
    text = ""
    for i in range(words):
        text += f"word{i} "
        started = time.monotonic()
        await reply.update(text)
        assert time.monotonic() - started < 0.05, "update() held up the caller"
        await asyncio.sleep(pause_s)
    return text.strip()


async def test_the_reply_is_every_kind_of_reply_handle_the_core_uses(tasks: Tasks) -> None:
    reply = reply_in(MemoryChat(), tasks)
    assert isinstance(reply, ResumableReply) and isinstance(reply, JournaledReply)
    assert isinstance(reply, RetractableReply)


async def test_placeholder_and_reaction_at_once_then_queue_position_then_the_answer(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks)
    await reply.start_progress(None)
    assert chat.texts() == [LOOKING] and chat.reacted
    await reply.start_progress(2)
    assert chat.texts() == ["Queued — 2 questions ahead of yours."]
    await reply.finish("A login form.")
    assert chat.texts() == ["A login form."] and not chat.reacted


async def test_edits_are_throttled_and_coalesced_and_the_newest_text_wins(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks)
    await reply.start_progress(None)
    text = await stream(reply, 60)  # about 0.6 s of tokens
    await reply.finish(text + " end.")

    edits = [c for c in chat.calls_of("edit") if c.ok]
    assert 2 <= len(edits) <= 12, "60 updates should become a handful of edits"
    assert all(b.at - a.at >= INTERVAL * 0.9 for a, b in itertools.pairwise(edits)), "edits closer than the interval"
    streamed = [c.text for c in edits[:-1]]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(streamed))  # never older text
    assert chat.texts() == [text + " end."]


async def test_the_final_text_lands_after_a_slow_edit_in_flight(tasks: Tasks) -> None:
    chat = MemoryChat(latency_s=0.15)
    reply = reply_in(chat, tasks, interval=0.05)
    await reply.start_progress(None)
    await reply.update("The first half")
    await asyncio.sleep(0.05)  # the edit with the first half is on its way
    await reply.update("The first half and")
    await reply.finish("The whole answer.")
    assert chat.texts() == ["The whole answer."]
    [message] = chat.messages.values()
    assert message.history[-1][1] == "The whole answer."  # nothing older overwrote it
    await asyncio.sleep(0.2)
    assert chat.texts() == ["The whole answer."]  # and nothing did later


async def test_rate_limited_edits_wait_what_the_platform_asked_and_the_final_text_lands(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks, interval=0.02)
    await reply.start_progress(None)
    chat.fail("edit", ChatError(Failure.RATE_LIMITED, retry_after_s=0.3))
    await reply.update("partial")
    await asyncio.sleep(0.05)
    await reply.update("partial, and more")
    await reply.finish("The complete answer.")

    limited, *after = chat.calls_of("edit")
    assert not limited.ok and after and after[0].at - limited.at >= 0.29  # Retry-After honoured
    assert chat.texts() == ["The complete answer."]


async def test_a_vanished_placeholder_is_replaced_by_a_new_message(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks, interval=0.02)
    await reply.start_progress(None)
    chat.messages.clear()  # someone deleted the placeholder
    await reply.update("It shows")
    await asyncio.sleep(0.1)
    await reply.finish("It shows a chart.")
    assert chat.texts() == ["It shows a chart."]


async def test_a_final_edit_refused_for_good_posts_the_answer_as_a_new_message(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks)
    await reply.start_progress(None)
    chat.fail("edit", ChatError(Failure.PERMANENT))
    await reply.finish("Still answered.")
    assert chat.texts() == [LOOKING, "Still answered."]


async def test_a_failure_replaces_the_placeholder_with_the_reason(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks)
    await reply.start_progress(None)
    await reply.fail("The file is too large.")
    await reply.finish("too late")  # a second final text is dropped
    assert chat.texts() == ["! The file is too large."] and not chat.reacted


async def test_a_long_answer_goes_out_in_parts_with_code_blocks_balanced_and_journaled_after_each(
    tasks: Tasks,
) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks, max_chars=200)
    journal: list[dict[str, str]] = []

    async def checkpoint() -> None:
        journal.append(reply.resume_state())

    reply.bind_journal(checkpoint, lambda: True)
    await reply.start_progress(None)
    code = "\n".join(f"x{i} = compute({i})" for i in range(30))
    answer = f"Run this:\n{FENCE}\n{code}\n{FENCE}\nThen restart."
    await reply.finish(answer)

    texts = chat.texts()
    assert len(texts) >= 3 and all(len(t) <= 200 for t in texts)
    assert all(t.count(FENCE) % 2 == 0 for t in texts)  # every part renders as balanced markdown
    assert " ".join(texts).replace(FENCE, "").split() == answer.replace(FENCE, "").split()
    assert [s["parts_posted"] for s in journal] == [str(n) for n in range(1, len(texts))]  # not after the last
    assert reply.resume_state()["parts_posted"] == str(len(texts))


async def test_the_next_process_finishes_on_the_same_placeholder_and_skips_parts_already_out(tasks: Tasks) -> None:
    chat = MemoryChat()
    first = reply_in(chat, tasks, max_chars=100)
    await first.start_progress(None)
    await first.update("Step 1")
    answer = "\n\n".join(f"Step {i}: " + "check the cable " * 4 for i in range(1, 5))
    saved: dict[str, str] = {}
    calls = 0

    async def dies_after_two_parts() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the process died")
        saved.update(first.resume_state())

    first.bind_journal(dies_after_two_parts, lambda: True)
    with pytest.raises(RuntimeError):
        await first.finish(answer)
    assert saved["parts_posted"] == "1" and len(chat.texts()) == 2  # the 2nd part is out, unjournaled

    second = reply_in(chat, tasks, max_chars=100)
    second.restore(dict(saved))
    await second.finish(answer)
    assert [t.split(":")[0] for t in chat.texts()] == ["Step 1", "Step 2", "Step 3", "Step 4"]  # each once
    assert next(iter(chat.messages)) == saved["placeholder"]


async def test_a_restored_reply_edits_the_journaled_placeholder(tasks: Tasks) -> None:
    chat = MemoryChat()
    first = reply_in(chat, tasks)
    await first.start_progress(None)
    state = first.resume_state()
    assert state["placeholder"] in chat.messages and state["reacted"] == "1"

    second = reply_in(chat, tasks)
    second.restore(state)
    await second.start_progress(None)
    await second.update("It is")
    await second.finish("It is a cat.")
    assert chat.texts() == ["It is a cat."] and len(chat.calls_of("post")) == 1
    assert not chat.reacted  # the first process's reaction came off at the end


async def test_retract_removes_the_placeholder_and_the_reaction_and_shows_nothing_more(tasks: Tasks) -> None:
    chat = MemoryChat(latency_s=0.05)
    reply = reply_in(chat, tasks)
    progress = asyncio.ensure_future(reply.start_progress(None))
    await asyncio.sleep(0.01)
    progress.cancel()  # the question was deleted while its placeholder was on its way
    await reply.retract()
    await reply.update("too late")
    await reply.finish("too late")
    assert chat.texts() == [] and not chat.reacted
    assert [c.op for c in chat.calls] == ["post", "delete"]


async def test_an_abandoned_reply_is_left_alone(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks)
    await reply.start_progress(None)
    reply.abandon()  # another process answers this question now
    await reply.update("stale text")
    await asyncio.sleep(INTERVAL * 2)
    assert chat.texts() == [LOOKING] and chat.reacted
    assert not chat.calls_of("edit")


async def test_edits_wait_while_the_core_is_unsure_the_question_is_still_its_own(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks, interval=0.02)
    ours = False
    reply.bind_journal(lambda: asyncio.sleep(0), lambda: ours)
    await reply.start_progress(None)
    await reply.update("not yet")
    await asyncio.sleep(0.1)
    assert chat.texts() == [LOOKING]
    ours = True
    await reply.update("now it shows")
    await asyncio.sleep(0.1)
    assert chat.texts() == ["now it shows"]


async def test_the_platform_floor_on_the_edit_interval_holds(tasks: Tasks) -> None:
    chat = MemoryChat()
    reply = reply_in(chat, tasks, interval=0.0, min_interval_s=0.1)
    await reply.start_progress(None)
    text = await stream(reply, 30)
    await reply.finish(text)
    edits = [c for c in chat.calls_of("edit") if c.ok]
    assert all(b.at - a.at >= 0.09 for a, b in itertools.pairwise(edits))


async def test_the_first_words_show_soon_after_the_placeholder_then_edits_keep_the_interval(tasks: Tasks) -> None:
    chat = MemoryChat()
    surface = MemorySurface(chat)
    config = ReplyConfig(update_interval_s=1.0, first_words_after_s=0.1, max_chars=1000)
    reply = StreamingReply(surface, config, spawn=tasks.spawn)
    await reply.start_progress(None)
    [placeholder] = chat.calls_of("post")
    await reply.update("The disk")
    await asyncio.sleep(0.4)
    first = [c for c in chat.calls_of("edit") if c.ok]
    assert [c.text for c in first] == ["The disk"], "the first words did not wait a whole interval"
    assert 0.09 <= first[0].at - placeholder.at < 0.4
    await reply.update("The disk is full.")
    await asyncio.sleep(0.4)
    assert len([c for c in chat.calls_of("edit") if c.ok]) == 1, "after the first words the interval holds"
    await reply.finish("The disk is full. Free some space.")
    edits = [c for c in chat.calls_of("edit") if c.ok]
    assert len(edits) == 2 and chat.texts() == ["The disk is full. Free some space."]
    # the early first words do not move the schedule: the next edit goes an interval after the placeholder
    assert 0.95 <= edits[1].at - placeholder.at < 1.3
