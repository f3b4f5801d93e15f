"""A channel's instructions reach the system message of both engines, after the default rules (so they win)."""

from __future__ import annotations

from bot.engine import GenerationRequest
from inference.prompts import INSTRUCTIONS_HEADER, LANGUAGE_RULE, build_messages, system_text
from inference.remote import chat_messages


def test_both_engines_put_the_instructions_last_in_the_system_message() -> None:
    request = GenerationRequest(question="why?", system_prompt="Be brief.", instructions="  Answer in Japanese.\n")
    expected = f"Be brief. {LANGUAGE_RULE}\n\n{INSTRUCTIONS_HEADER}\nAnswer in Japanese."

    local = build_messages(request.question, 0, request.history, "Be brief.", request.instructions)
    remote = chat_messages(request, [], "ignored default")

    assert local[0]["content"][0]["text"] == expected
    assert remote[0] == {"role": "system", "content": expected}


def test_no_instructions_leave_the_system_message_as_it_was() -> None:
    assert system_text("Be brief.") == system_text("Be brief.", "  \n") == f"Be brief. {LANGUAGE_RULE}"
    remote = chat_messages(GenerationRequest(question="why?"), [], "Be brief.")
    assert remote[0]["content"] == f"Be brief. {LANGUAGE_RULE}"
