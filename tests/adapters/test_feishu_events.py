"""Translating ``im.message.receive_v1`` events: content types, placeholders, routing and thread memory."""

from __future__ import annotations

import json
from typing import Any

from adapters.feishu.connection import ClientConfig, FragmentBuffer
from adapters.feishu.events import EventTranslator, clean_text, parse_content, parse_event
from bot.types import ChatType, FileSegment, ImageSegment

BOT = "ou_bot"


def event(
    msg_type: str,
    content: dict[str, Any],
    *,
    message_id: str = "om_1",
    chat_type: str = "p2p",
    chat_id: str = "oc_1",
    mentions: list[dict[str, Any]] | None = None,
    root_id: str = "",
    parent_id: str = "",
    sender: str = "ou_alice",
) -> Any:
    payload = {
        "schema": "2.0",
        "header": {"event_id": f"ev-{message_id}", "event_type": "im.message.receive_v1", "tenant_key": "t1",
                   "app_id": "cli_x", "create_time": "1", "token": ""},
        "event": {
            "sender": {"sender_id": {"open_id": sender}, "sender_type": "user", "tenant_key": "t1"},
            "message": {"message_id": message_id, "chat_id": chat_id, "chat_type": chat_type, "message_type": msg_type,
                        "content": json.dumps(content), "mentions": mentions or [], "root_id": root_id,
                        "parent_id": parent_id},
        },
    }
    parsed = parse_event(json.dumps(payload).encode())
    assert parsed is not None
    return parsed


def at(index: int, open_id: str, name: str) -> dict[str, Any]:
    return {"key": f"@_user_{index}", "id": {"open_id": open_id}, "name": name}


def test_post_in_a_locale_wrapper_gives_text_and_every_image() -> None:
    content = {"zh_cn": {"title": "Build failed", "content": [
        [{"tag": "text", "text": "see "}, {"tag": "a", "text": "the log", "href": "https://x"}],
        [{"tag": "img", "image_key": "img_a"}, {"tag": "img", "image_key": "img_b"}],
    ]}}
    parsed = parse_content("om_9", "post", json.dumps(content))
    assert parsed.text == "Build failed\nsee the log"
    assert [f.file_id for f in parsed.files] == ["img_a", "img_b"]
    assert all(f.source == {"message_id": "om_9", "type": "image"} and f.is_image for f in parsed.files)


def test_pdf_and_other_files_carry_name_and_mime_type() -> None:
    [pdf] = parse_content("om_2", "file", json.dumps({"file_key": "file_1", "file_name": "report.pdf"})).files
    assert (pdf.name, pdf.mime_type, pdf.source["type"]) == ("report.pdf", "application/pdf", "file")
    [sticker] = parse_content("om_3", "sticker", json.dumps({"file_key": "x"})).files
    assert sticker.source["type"] == "unsupported" and sticker.name == "a sticker" and not sticker.is_image


def test_placeholders_are_removed_or_replaced_by_names() -> None:
    assert clean_text("@_user_1  why does @_user_2 fail?", {"@_user_1": "", "@_user_2": "@Bob"}) == (
        "why does @Bob fail?"
    )
    assert clean_text("@_all look", {}) == "look"


def test_routing_and_message_shape() -> None:
    translator = EventTranslator(BOT)
    assert translator.translate(event("text", {"text": "hi all"}, chat_type="group")) is None
    assert translator.translate(event("text", {"text": "me"}, sender=BOT)) is None

    addressed = translator.translate(event(
        "image", {"image_key": "img_1"}, chat_type="p2p", message_id="om_5"
    ))
    assert addressed is not None
    message = addressed.message
    assert message.chat_type is ChatType.DIRECT and message.text == ""
    assert [type(s) for s in message.segments] == [ImageSegment]
    assert message.conversation.thread == "om_5"

    # A PDF posted in a group (no mention possible) is not answered but remembered for its thread.
    assert translator.translate(event(
        "file", {"file_key": "file_9", "file_name": "a.pdf"}, chat_type="group", message_id="om_6",
    )) is None
    question = translator.translate(event(
        "text", {"text": "@_user_1 summarise"}, chat_type="group", message_id="om_7", root_id="om_6",
        parent_id="om_6", mentions=[at(1, BOT, "peekbot")],
    ))
    assert question is not None
    assert [(f.file_id, f.name) for f in question.message.context_files] == [("file_9", "a.pdf")]


def test_thread_follow_up_gets_earlier_images_and_asks_for_an_unknown_parent() -> None:
    translator = EventTranslator(BOT, max_context_files=8)
    translator.translate(event("image", {"image_key": "img_root"}, chat_type="group", message_id="om_root"))
    follow = translator.translate(event(
        "text", {"text": "@_user_1 and this?"}, chat_type="group", message_id="om_q", root_id="om_root",
        parent_id="om_root", mentions=[at(1, BOT, "peekbot")],
    ))
    assert follow is not None and follow.parent_id is None  # the parent is known: no REST lookup needed
    assert [f.file_id for f in follow.message.context_files] == ["img_root"]
    assert follow.message.conversation.thread == "om_root"
    assert follow.message.mentions_bot and follow.message.text == "and this?"

    unknown = translator.translate(event(
        "text", {"text": "@_user_1 what?"}, chat_type="group", message_id="om_r", root_id="om_other",
        parent_id="om_other", mentions=[at(1, BOT, "peekbot")],
    ))
    assert unknown is not None and unknown.parent_id == "om_other"
    assert [type(s) for s in unknown.message.segments if isinstance(s, FileSegment)] == []


def test_fragments_are_joined_in_order_whatever_the_arrival_order() -> None:
    buffer = FragmentBuffer(ttl_s=5)
    assert buffer.add("m1", 3, 2, b"C") is None
    assert buffer.add("m1", 3, 0, b"A") is None
    assert buffer.add("m1", 3, 1, b"B") == b"ABC"
    assert len(buffer) == 0
    expired = FragmentBuffer(ttl_s=0)
    assert expired.add("m2", 2, 0, b"A") is None
    assert expired.add("m2", 2, 1, b"B") is None  # the first part expired: never a half event
    assert expired.add("m3", 2, 5, b"X") is None


def test_client_config_updates_only_what_the_server_sent() -> None:
    config = ClientConfig().updated({"PingInterval": 30, "ReconnectCount": 3, "Other": 1, "ReconnectNonce": "x"})
    assert (config.ping_interval_s, config.reconnect_count, config.reconnect_nonce_s) == (30.0, 3, 30.0)
    assert config.updated({"PingInterval": 0}).ping_interval_s == 30.0
