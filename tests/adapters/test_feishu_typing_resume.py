"""A resumed Feishu reply takes off the "Typing" reaction a dead process left on the question.

The first adapter shows "Typing" and its card, then "dies" before its state recorded the reaction's id (or before
anything was journaled at all). The next adapter finishes the answer through ``reply_for``: the question must not
keep showing "Typing" after it was answered, a person's own "Typing" reaction must stay, and a failing lookup
must never stop the answer. Our Feishu connection and REST client run against the loopback fake.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from adapters.feishu.replies import TYPING_EMOJI
from adapters.feishu.rest import FeishuRest
from adapters.feishu.settings import FeishuSettings
from bot.types import IncomingMessage, ResumableReply
from tests.support.fake_feishu import FakeFeishu
from tests.support.resume_support import Core, StartFeishu, journaled

pytestmark = pytest.mark.timeout(60)


@dataclass
class Orphan:
    """A question a dead process was answering: what the journal holds, and its reaction on the question."""

    question_id: str
    message: IncomingMessage
    state: dict[str, str]
    dead_reaction_id: str


async def dead_process_question(
    feishu: FakeFeishu, start_feishu: StartFeishu, *, journal: str, text: str = "what is this?"
) -> Orphan:
    """A first process shows progress on a question and dies. ``journal`` says what its state had recorded:
    "no-reaction-id" (the card, but the reaction's id had not come back yet) or "nothing"."""
    core = Core()
    first = await start_feishu(core)
    event = feishu.message_event(msg_type="text", content={"text": text})
    await feishu.push_event(event)
    message, reply = await core.wait_taken(1)
    question_id = event["event"]["message"]["message_id"]
    assert isinstance(reply, ResumableReply)
    await reply.start_progress(None)
    [dead_reaction_id] = feishu.reactions_by(question_id, "app")
    state = reply.resume_state()
    assert state.get("reaction_id") == dead_reaction_id
    if journal == "no-reaction-id":
        del state["reaction_id"]
        assert state["typing"] == "1"
    else:
        state = {}
    await first.stop()
    return Orphan(question_id, journaled(message), state, dead_reaction_id)


@pytest.mark.parametrize("journal", ["no-reaction-id", "nothing"])
async def test_dead_process_typing_reaction_comes_off_when_the_resumed_reply_finishes(
    feishu: FakeFeishu, start_feishu: StartFeishu, journal: str
) -> None:
    orphan = await dead_process_question(feishu, start_feishu, journal=journal)
    persons_typing = feishu.add_user_reaction(orphan.question_id, TYPING_EMOJI, open_id="ou_alice")
    persons_thumbs = feishu.add_user_reaction(orphan.question_id, "THUMBSUP", open_id="ou_bob")

    second = await start_feishu(Core())
    resumed = second.reply_for(orphan.message, orphan.state)
    await resumed.start_progress(None)
    await resumed.update("A login")
    await resumed.finish("A login form with a red error.")

    [answer] = feishu.replies_to(orphan.question_id)
    assert feishu.visible_text(answer) == "A login form with a red error."
    assert feishu.reactions_by(orphan.question_id, "app") == {}  # no "Typing" left by the bot
    assert feishu.reactions_by(orphan.question_id, "user") == {persons_typing: "Typing", persons_thumbs: "THUMBSUP"}
    [listing] = feishu.calls_to("GET", rf"/messages/{orphan.question_id}/reactions$")
    assert listing.query["reaction_type"] == TYPING_EMOJI and int(listing.query["page_size"]) <= 50
    removed = [c.path.rsplit("/", 1)[-1] for c in feishu.calls_to("DELETE", rf"/messages/{orphan.question_id}/")]
    assert orphan.dead_reaction_id in removed and persons_typing not in removed


async def test_a_failed_resumed_reply_also_takes_the_reaction_off(
    feishu: FakeFeishu, start_feishu: StartFeishu
) -> None:
    orphan = await dead_process_question(feishu, start_feishu, journal="no-reaction-id")
    persons_typing = feishu.add_user_reaction(orphan.question_id, TYPING_EMOJI)

    second = await start_feishu(Core())
    resumed = second.reply_for(orphan.message, orphan.state)
    await resumed.fail("The model could not read this image.")

    [answer] = feishu.replies_to(orphan.question_id)
    assert "could not read this image" in feishu.visible_text(answer)
    assert feishu.reactions.get(orphan.question_id) == {persons_typing: "Typing"}


async def test_a_failing_reaction_lookup_does_not_stop_the_answer(
    feishu: FakeFeishu, start_feishu: StartFeishu
) -> None:
    orphan = await dead_process_question(feishu, start_feishu, journal="no-reaction-id")
    feishu.fail("GET", rf"/messages/{orphan.question_id}/reactions$", status=400, code=230027,
                message="Lack of necessary permissions")

    second = await start_feishu(Core())
    resumed = second.reply_for(orphan.message, orphan.state)
    await resumed.start_progress(None)
    await asyncio.wait_for(resumed.finish("Still answered."), timeout=10)

    [answer] = feishu.replies_to(orphan.question_id)
    assert feishu.visible_text(answer) == "Still answered."
    card = feishu.card_of(answer)
    assert card is not None and not card.streaming  # the answer was closed properly
    [listing] = feishu.calls_to("GET", rf"/messages/{orphan.question_id}/reactions$")
    assert listing.status == 400
    assert feishu.reactions_by(orphan.question_id, "app") == {orphan.dead_reaction_id: "Typing"}  # could not tell


async def test_a_known_reaction_id_is_removed_without_a_lookup(feishu: FakeFeishu, start_feishu: StartFeishu) -> None:
    core = Core()
    first = await start_feishu(core)
    event = feishu.message_event(msg_type="text", content={"text": "and this?"})
    await feishu.push_event(event)
    message, reply = await core.wait_taken(1)
    question_id = event["event"]["message"]["message_id"]
    assert isinstance(reply, ResumableReply)
    await reply.start_progress(None)
    state = reply.resume_state()
    await first.stop()

    second = await start_feishu(Core())
    resumed = second.reply_for(journaled(message), state)
    await resumed.finish("A chart.")
    assert not feishu.reactions.get(question_id)
    assert not feishu.calls_to("GET", r"/reactions$")  # nothing to look for


async def test_rest_lists_one_page_of_one_emoji_with_who_added_each(feishu: FakeFeishu) -> None:
    question = feishu.add_message(chat_id="oc_dm", msg_type="text", content={"text": "hi"})
    settings = FeishuSettings(app_id=feishu.app_id, app_secret=SecretStr(feishu.app_secret), domain=feishu.url,
                              rate_limit_backoff_s=0.05, rest_timeout_s=5.0)
    async with FeishuRest(settings) as rest:
        mine = await rest.add_reaction(question.message_id, TYPING_EMOJI)
        for index in range(55):
            feishu.add_user_reaction(question.message_id, TYPING_EMOJI, open_id=f"ou_user{index}")
        feishu.add_user_reaction(question.message_id, "SMILE")
        listed = await rest.list_reactions(question.message_id, TYPING_EMOJI)

    assert len(listed) == 50  # one page, bounded
    assert {r.reaction_type.emoji_type for r in listed if r.reaction_type is not None} == {TYPING_EMOJI}
    first = listed[0]
    assert first.reaction_id == mine and first.operator is not None
    assert (first.operator.operator_type, first.operator.operator_id) == ("app", feishu.app_id)
    assert all(r.operator is not None and r.operator.operator_type == "user" for r in listed[1:])
