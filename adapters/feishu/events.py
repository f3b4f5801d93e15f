"""``im.message.receive_v1`` → the core's types: content parsing, mention routing and thread memory."""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lark_oapi.api.im.v1 import EventMessage, Message, P2ImMessageRecalledV1, P2ImMessageReceiveV1
from lark_oapi.core.json import JSON

from bot.types import (
    ChatType,
    ConversationKey,
    FileRef,
    FileSegment,
    ImageSegment,
    IncomingMessage,
    MentionSegment,
    MessageWithdrawn,
    Segment,
    TextSegment,
    User,
)

logger = logging.getLogger(__name__)

PLATFORM = "feishu"
MESSAGE_RECEIVED = "im.message.receive_v1"
MESSAGE_RECALLED = "im.message.recalled_v1"
IMAGE_MIME = "image/*"
_PLACEHOLDER = re.compile(r"@_user_\d+|@_all")
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True, slots=True)
class Content:
    """What one message carries: its text (placeholders still in) and its files."""

    text: str = ""
    files: tuple[FileRef, ...] = ()


def _file_ref(message_id: str, key: str, kind: str, name: str = "", mime_type: str = "") -> FileRef:
    if not mime_type:
        mime_type = IMAGE_MIME if kind == "image" else (mimetypes.guess_type(name)[0] or "application/octet-stream")
    return FileRef(
        platform=PLATFORM,
        file_id=key,
        name=name or ("image" if kind == "image" else key),
        mime_type=mime_type,
        source={"message_id": message_id, "type": kind},
    )


def _post_body(content: dict[str, Any]) -> dict[str, Any]:
    """A post's body: ``{"title", "content"}`` directly, or under a locale key (zh_cn, en_us …)."""
    if isinstance(content.get("content"), list):
        return content
    for value in content.values():
        if isinstance(value, dict) and isinstance(value.get("content"), list):
            return value
    return {}


def _post_content(message_id: str, content: dict[str, Any]) -> Content:
    body = _post_body(content)
    lines: list[str] = []
    files: list[FileRef] = []
    title = str(body.get("title") or "").strip()
    if title:
        lines.append(title)
    for paragraph in body.get("content") or []:
        if not isinstance(paragraph, list):
            continue
        parts: list[str] = []
        for node in paragraph:
            if not isinstance(node, dict):
                continue
            tag = node.get("tag")
            if tag in ("text", "a", "code_block", "md"):
                parts.append(str(node.get("text") or ""))
            elif tag == "at":
                parts.append(str(node.get("user_id") or ""))
            elif tag == "img" and node.get("image_key"):
                files.append(_file_ref(message_id, str(node["image_key"]), "image"))
            elif tag == "media" and node.get("file_key"):
                files.append(_unsupported(message_id, "a video", "video/mp4"))
        line = "".join(parts).strip()
        if line:
            lines.append(line)
    return Content(text="\n".join(lines), files=tuple(files))


def parse_content(message_id: str, message_type: str, raw: str | None) -> Content:
    """Text and files of a message body (the JSON string Feishu sends as ``content``)."""
    try:
        content = json.loads(raw or "{}")
    except ValueError:
        logger.warning("feishu: message %s has content that is not JSON", message_id)
        return Content()
    if not isinstance(content, dict):
        return Content()
    if message_type == "text":
        return Content(text=str(content.get("text") or ""))
    if message_type == "image" and content.get("image_key"):
        return Content(files=(_file_ref(message_id, str(content["image_key"]), "image"),))
    if message_type == "post":
        return _post_content(message_id, content)
    if message_type == "file" and content.get("file_key"):
        name = str(content.get("file_name") or "")
        return Content(files=(_file_ref(message_id, str(content["file_key"]), "file", name=name),))
    # Videos, voice messages, stickers, shared chats, cards …: nothing the model can read, so nothing is
    # downloaded; ``FeishuAdapter.fetch`` answers with a clear sentence.
    described = {"media": ("a video", "video/mp4"), "audio": ("a voice message", "audio/opus"),
                 "sticker": ("a sticker", "application/x-feishu-sticker")}
    what, mime_type = described.get(message_type, (f"a {message_type} message", f"application/x-feishu-{message_type}"))
    return Content(files=(_unsupported(message_id, what, mime_type),))


def _unsupported(message_id: str, what: str, mime_type: str) -> FileRef:
    return FileRef(
        platform=PLATFORM,
        file_id=message_id,
        name=what,
        mime_type=mime_type,
        source={"message_id": message_id, "type": "unsupported"},
    )


def clean_text(text: str, placeholders: dict[str, str]) -> str:
    """Replace ``@_user_N`` placeholders (the bot's own by nothing, other people's by their names)."""

    def substitute(match: re.Match[str]) -> str:
        return placeholders.get(match.group(0), "")

    cleaned = _PLACEHOLDER.sub(substitute, text)
    return "\n".join(_SPACES.sub(" ", line).strip() for line in cleaned.splitlines()).strip()


def parse_event(payload: bytes) -> P2ImMessageReceiveV1 | None:
    """The event if ``payload`` is an ``im.message.receive_v1`` event (schema 2.0), else None."""
    try:
        event = JSON.unmarshal(payload.decode("utf-8"), P2ImMessageReceiveV1)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
        logger.warning("feishu: an event payload could not be parsed (%d bytes)", len(payload))
        return None
    if event.header is None or event.header.event_type != MESSAGE_RECEIVED:
        return None
    if event.event is None or event.event.message is None:
        return None
    return event


def parse_recall(payload: bytes) -> MessageWithdrawn | None:
    """The withdrawal an ``im.message.recalled_v1`` event reports (schema 2.0), else None.

    The event names the message and its chat only; the files that go with it are those whose ``source`` names the
    message (``MessageWithdrawn.covers``).
    """
    try:
        event = JSON.unmarshal(payload.decode("utf-8"), P2ImMessageRecalledV1)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
        return None
    header, body = event.header, event.event
    if header is None or header.event_type != MESSAGE_RECALLED or body is None or not body.message_id:
        return None
    conversation = ConversationKey(PLATFORM, header.tenant_key or "", body.chat_id or "") if body.chat_id else None
    return MessageWithdrawn(
        PLATFORM, header.event_id or body.message_id, message_id=body.message_id, conversation=conversation,
        kind="recalled",
    )


@dataclass(slots=True)
class ThreadMemory:
    """Files of messages the bot saw, by message and by thread root, so follow-ups can use them."""

    limit: int = 5000
    _files: OrderedDict[str, tuple[FileRef, ...]] = field(default_factory=OrderedDict)
    _threads: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)

    def remember(self, chat_id: str, message_id: str, root_id: str | None, files: tuple[FileRef, ...]) -> None:
        if not files or message_id in self._files:
            return
        self._files[message_id] = files
        thread = self._threads.setdefault(f"{chat_id}:{root_id or message_id}", [])
        thread.append(message_id)
        while len(self._files) > self.limit:
            self._files.popitem(last=False)
        while len(self._threads) > self.limit:
            self._threads.popitem(last=False)

    def files_of(self, message_id: str) -> tuple[FileRef, ...] | None:
        return self._files.get(message_id)

    def forget(self, message_id: str) -> None:
        """A recalled message: its files are no longer context for follow-ups."""
        self._files.pop(message_id, None)

    def knows(self, message_id: str) -> bool:
        return message_id in self._files

    def thread_files(self, chat_id: str, root_id: str, *, excluding: str) -> list[FileRef]:
        """Files posted earlier in the thread rooted at ``root_id``, newest message first."""
        found: list[FileRef] = []
        for message_id in reversed(self._threads.get(f"{chat_id}:{root_id}", [])):
            if message_id != excluding:
                found.extend(self._files.get(message_id, ()))
        return found


@dataclass(frozen=True, slots=True)
class Addressed:
    """A message for the bot, translated except for context that needs a REST lookup."""

    message: IncomingMessage
    parent_id: str | None
    """Set when the parent's files are unknown and should be read with ``GET /im/v1/messages/{id}``."""


def merge_files(*groups: list[FileRef] | tuple[FileRef, ...], limit: int) -> tuple[FileRef, ...]:
    seen: set[tuple[str, str]] = set()
    merged: list[FileRef] = []
    for group in groups:
        for ref in group:
            key = (ref.source.get("message_id", ""), ref.file_id)
            if key not in seen:
                seen.add(key)
                merged.append(ref)
    return tuple(merged[:limit])


class EventTranslator:
    """Filters and translates events; remembers files for thread follow-ups. Synchronous, no I/O."""

    def __init__(self, bot_open_id: str, *, max_context_files: int = 8) -> None:
        self.bot_open_id = bot_open_id
        self.max_context_files = max_context_files
        self.memory = ThreadMemory()

    def translate(self, event: P2ImMessageReceiveV1) -> Addressed | None:
        """An ``Addressed`` message, or None when the bot should stay quiet (logged at debug level)."""
        header, body = event.header, event.event
        assert header is not None and body is not None and body.message is not None
        message: EventMessage = body.message
        message_id = message.message_id or ""
        chat_id = message.chat_id or ""
        sender = body.sender
        sender_open_id = sender.sender_id.open_id if sender and sender.sender_id else None
        content = parse_content(message_id, message.message_type or "", message.content)
        root_id = message.root_id or None
        usable = tuple(f for f in content.files if f.source.get("type") != "unsupported")
        self.memory.remember(chat_id, message_id, root_id, usable)

        if sender is None or sender.sender_type != "user" or sender_open_id == self.bot_open_id:
            logger.debug("feishu: ignoring %s from a %s", message_id, sender.sender_type if sender else "nobody")
            return None
        mentions = message.mentions or []
        mentions_bot = any(m.id is not None and m.id.open_id == self.bot_open_id for m in mentions)
        chat_type = ChatType.DIRECT if message.chat_type == "p2p" else ChatType.GROUP
        if chat_type is ChatType.GROUP and not mentions_bot:
            logger.debug("feishu: ignoring group message %s that does not mention the bot", message_id)
            return None

        placeholders: dict[str, str] = {}
        segments: list[Segment] = []
        for mention in mentions:
            open_id = mention.id.open_id if mention.id is not None else None
            is_self = open_id == self.bot_open_id
            if mention.key:
                placeholders[mention.key] = "" if is_self else f"@{mention.name or 'someone'}"
            if open_id:
                segments.append(MentionSegment(user_id=open_id, is_self=is_self))
        text = clean_text(content.text, placeholders)
        if text:
            segments.insert(0, TextSegment(text))
        for ref in content.files:
            segments.append(ImageSegment(ref) if ref.source.get("type") == "image" else FileSegment(ref))

        parent_id = message.parent_id or None
        context = self.memory.thread_files(chat_id, root_id, excluding=message_id) if root_id else []
        parent_files = list(self.memory.files_of(parent_id) or ()) if parent_id else []
        needs_parent = bool(parent_id) and not self.memory.knows(parent_id or "")
        incoming = IncomingMessage(
            event_id=header.event_id or message_id,
            message_id=message_id,
            conversation=ConversationKey(
                platform=PLATFORM,
                workspace=header.tenant_key or (sender.tenant_key or ""),
                channel=chat_id,
                thread=root_id or message_id,
            ),
            user=User(platform=PLATFORM, user_id=sender_open_id or "", org=sender.tenant_key or ""),
            chat_type=chat_type,
            segments=tuple(segments),
            mentions_bot=mentions_bot,
            context_files=merge_files(parent_files, context, limit=self.max_context_files),
            # No locale: neither ``im.message.receive_v1`` nor the contact API's user (``contact/v3/users``: name,
            # country, time zone …) tells the person's language, so ``bot.i18n.lang_for`` goes by the question's.
        )
        return Addressed(message=incoming, parent_id=parent_id if needs_parent else None)

    def parent_files(self, chat_id: str, parent: Message) -> tuple[FileRef, ...]:
        """Files of a message read through the REST API (remembered for later follow-ups)."""
        message_id = parent.message_id or ""
        if parent.deleted:  # recalled: nothing of it is context any more
            return ()
        raw = parent.body.content if parent.body is not None else None
        content = parse_content(message_id, parent.msg_type or "", raw)
        files = tuple(f for f in content.files if f.source.get("type") != "unsupported")
        self.memory.remember(chat_id, message_id, parent.root_id or None, files)
        return files
