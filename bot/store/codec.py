"""JSON forms of ``IncomingMessage`` and ``FileRef`` for the job journal and conversation files.

A journaled message must be answerable again in another process after a restart, so every field survives the
round trip: segments of all four kinds, the conversation key, the user, file references with their adapter-private
``source`` mapping, context files and the time it arrived. The text carries a format version (``"v"``) so a newer
process can still read what an older one wrote, and refuses what it cannot understand.
"""

from __future__ import annotations

import json
from typing import Any

from bot.types import (
    ChatType,
    ConversationKey,
    FileRef,
    FileSegment,
    ImageSegment,
    IncomingMessage,
    MentionSegment,
    Segment,
    TextSegment,
    User,
)

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Stored text that is not a message or file reference this version can read."""


def file_to_dict(file: FileRef) -> dict[str, Any]:
    return {
        "platform": file.platform,
        "file_id": file.file_id,
        "name": file.name,
        "mime_type": file.mime_type,
        "size": file.size,
        "source": {str(k): str(v) for k, v in file.source.items()},
    }


def file_from_dict(data: dict[str, Any]) -> FileRef:
    size = data.get("size")
    return FileRef(
        platform=str(data["platform"]),
        file_id=str(data["file_id"]),
        name=str(data.get("name", "")),
        mime_type=str(data.get("mime_type", "")),
        size=int(size) if size is not None else None,
        source={str(k): str(v) for k, v in (data.get("source") or {}).items()},
    )


def _segment_to_dict(segment: Segment) -> dict[str, Any]:
    if isinstance(segment, TextSegment):
        return {"type": "text", "text": segment.text}
    if isinstance(segment, ImageSegment):
        return {"type": "image", "file": file_to_dict(segment.file)}
    if isinstance(segment, FileSegment):
        return {"type": "file", "file": file_to_dict(segment.file)}
    if isinstance(segment, MentionSegment):
        return {"type": "mention", "user_id": segment.user_id, "is_self": segment.is_self}
    raise TypeError(f"not a message segment: {type(segment).__name__}")


def _segment_from_dict(data: dict[str, Any]) -> Segment:
    kind = data.get("type")
    if kind == "text":
        return TextSegment(str(data["text"]))
    if kind == "image":
        return ImageSegment(file_from_dict(data["file"]))
    if kind == "file":
        return FileSegment(file_from_dict(data["file"]))
    if kind == "mention":
        return MentionSegment(str(data["user_id"]), bool(data.get("is_self", False)))
    raise CodecError(f"unknown message segment type {kind!r}")


def _loads(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise CodecError(f"stored {what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CodecError(f"stored {what} is not a JSON object")
    version = data.get("v")
    if version != FORMAT_VERSION:
        raise CodecError(f"stored {what} has format version {version!r}; this version reads {FORMAT_VERSION}")
    return data


def encode_message(message: IncomingMessage) -> str:
    """The message as compact JSON (every field, format version included)."""
    conversation = message.conversation
    user = message.user
    data = {
        "v": FORMAT_VERSION,
        "event_id": message.event_id,
        "message_id": message.message_id,
        "conversation": {
            "platform": conversation.platform,
            "workspace": conversation.workspace,
            "channel": conversation.channel,
            "thread": conversation.thread,
        },
        "user": {
            "platform": user.platform,
            "user_id": user.user_id,
            "display_name": user.display_name,
            "is_bot": user.is_bot,
            "org": user.org,
        },
        "chat_type": message.chat_type.value,
        "segments": [_segment_to_dict(s) for s in message.segments],
        "mentions_bot": message.mentions_bot,
        "context_files": [file_to_dict(f) for f in message.context_files],
        "is_command": message.is_command,
        "received_at": message.received_at,
        "locale": message.locale,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def decode_message(text: str) -> IncomingMessage:
    """The message ``encode_message`` wrote; ``CodecError`` for anything else."""
    data = _loads(text, "message")
    try:
        conv = data["conversation"]
        user = data["user"]
        return IncomingMessage(
            event_id=str(data["event_id"]),
            message_id=str(data["message_id"]),
            conversation=ConversationKey(
                platform=str(conv["platform"]),
                workspace=str(conv["workspace"]),
                channel=str(conv["channel"]),
                thread=str(conv["thread"]) if conv.get("thread") is not None else None,
            ),
            user=User(
                platform=str(user["platform"]),
                user_id=str(user["user_id"]),
                display_name=str(user.get("display_name", "")),
                is_bot=bool(user.get("is_bot", False)),
                org=str(user.get("org", "")),
            ),
            chat_type=ChatType(data["chat_type"]),
            segments=tuple(_segment_from_dict(s) for s in data.get("segments", [])),
            mentions_bot=bool(data.get("mentions_bot", False)),
            context_files=tuple(file_from_dict(f) for f in data.get("context_files", [])),
            is_command=bool(data.get("is_command", False)),
            received_at=float(data["received_at"]),
            locale=str(data.get("locale", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"stored message is incomplete: {exc!r}") from exc


def encode_file(file: FileRef) -> str:
    """The file reference as compact JSON (format version included)."""
    return json.dumps({"v": FORMAT_VERSION, **file_to_dict(file)}, ensure_ascii=False, separators=(",", ":"))


def decode_file(text: str) -> FileRef:
    """The file reference ``encode_file`` wrote; ``CodecError`` for anything else."""
    data = _loads(text, "file reference")
    try:
        return file_from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"stored file reference is incomplete: {exc!r}") from exc
