"""Slack event payloads → the core's types, and the rules for which messages peekbot answers.

Pure functions over plain dicts: no network, no SDK. The adapter feeds them Events API payloads.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.types import (
    ChatType,
    ConversationKey,
    FileRef,
    FileSegment,
    ImageSegment,
    MentionSegment,
    MessageWithdrawn,
    Segment,
    TextSegment,
    User,
)

PLATFORM = "slack"

# Message subtypes that are a person writing something new. Everything else (message_changed,
# message_deleted, bot_message, channel_join, …) is ignored.
ANSWERABLE_SUBTYPES = frozenset({None, "", "file_share", "thread_broadcast"})
# Files that may serve as earlier context in a thread: images, PDFs, Office and text files (the core sniffs them).
CONTEXT_MIME_PREFIXES = (
    "image/",
    "application/pdf",
    "text/",
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.ms-",
    "application/json",
)

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL_LINK = re.compile(r"<#[A-Z0-9]+\|([^>]*)>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")


class Reason(StrEnum):
    """Why a message is answered (or why not, for the debug log)."""

    DIRECT = "direct message"
    MENTION = "mention"
    THREAD_FOLLOW_UP = "follow-up in an answered thread"
    NOT_A_MESSAGE = "not a message event"
    SUBTYPE = "edit, deletion or system message"
    FROM_BOT = "written by a bot"
    NOT_ADDRESSED = "channel chatter"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot is in this workspace (from ``auth.test``)."""

    team_id: str
    user_id: str
    bot_id: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    answer: bool
    reason: Reason
    mentions_bot: bool = False


def thread_root(event: Mapping[str, Any]) -> str:
    """The ts replies go under: the thread root when the message is in a thread, else the message itself."""
    return str(event.get("thread_ts") or event.get("ts") or "")


def is_in_thread(event: Mapping[str, Any]) -> bool:
    thread_ts = event.get("thread_ts")
    return bool(thread_ts) and thread_ts != event.get("ts")


def chat_type(event: Mapping[str, Any]) -> ChatType:
    channel_type = event.get("channel_type")
    if channel_type == "im" or (channel_type is None and str(event.get("channel", "")).startswith("D")):
        return ChatType.DIRECT
    return ChatType.GROUP


def mentioned_users(text: str) -> list[str]:
    return _MENTION.findall(text or "")


def classify(event: Mapping[str, Any], me: Identity, answered_threads: AnsweredThreads) -> Verdict:
    """Decide whether peekbot answers this ``message``/``app_mention`` event."""
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return Verdict(False, Reason.NOT_A_MESSAGE)
    if event.get("subtype") not in ANSWERABLE_SUBTYPES or event.get("hidden"):
        return Verdict(False, Reason.SUBTYPE)
    if event.get("bot_id") or event.get("bot_profile") or event.get("user") in (None, "", me.user_id):
        return Verdict(False, Reason.FROM_BOT)
    mentioned = mentioned_users(str(event.get("text") or ""))
    mentions_me = kind == "app_mention" or me.user_id in mentioned
    if chat_type(event) is ChatType.DIRECT:
        return Verdict(True, Reason.DIRECT, mentions_me)
    if mentions_me:
        return Verdict(True, Reason.MENTION, True)
    if is_in_thread(event) and answered_threads.contains(str(event.get("channel")), thread_root(event)):
        # A reply that talks to someone else ("<@U2> can you look?") is not for us.
        if mentioned:
            return Verdict(False, Reason.NOT_ADDRESSED)
        return Verdict(True, Reason.THREAD_FOLLOW_UP)
    return Verdict(False, Reason.NOT_ADDRESSED)


def may_follow_up_unknown_thread(event: Mapping[str, Any], verdict: Verdict, answered_threads: AnsweredThreads) -> bool:
    """True when ``event`` was left as chatter only because its thread is not in ``answered_threads``.

    Such a reply would be a follow-up if the bot answered that thread before (in an earlier run, or in another
    replica): worth one look in the shared conversation directory. Never true for a message outside a thread.
    """
    return (
        verdict.reason is Reason.NOT_ADDRESSED
        and is_in_thread(event)
        and not mentioned_users(str(event.get("text") or ""))
        and not answered_threads.contains(str(event.get("channel")), thread_root(event))
    )


def clean_text(text: str, bot_user_id: str) -> str:
    """Slack mrkdwn → plain text for the model: the bot's own mention removed, links and entities decoded."""

    def mention(match: re.Match[str]) -> str:
        return "" if match.group(1) == bot_user_id else f"@{match.group(1)}"

    def link(match: re.Match[str]) -> str:
        url, label = match.group(1), match.group(2)
        return f"{label} ({url})" if label and label != url else url

    text = _MENTION.sub(mention, text or "")
    text = _CHANNEL_LINK.sub(lambda m: f"#{m.group(1)}", text)
    text = _SPECIAL.sub(lambda m: f"@{m.group(1)}", text)
    text = _LINK.sub(link, text)
    text = html.unescape(text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def file_ref(file: Mapping[str, Any]) -> FileRef:
    """A Slack file object (full, or cut down to an id with ``file_access: check_file_info``) → FileRef."""
    source: dict[str, str] = {}
    url = file.get("url_private_download") or file.get("url_private")
    if url:
        source["url"] = str(url)
    if file.get("file_access"):
        source["file_access"] = str(file["file_access"])
    if file.get("filetype"):
        source["filetype"] = str(file["filetype"])
    size = file.get("size")
    return FileRef(
        platform=PLATFORM,
        file_id=str(file.get("id", "")),
        name=str(file.get("name") or file.get("title") or ""),
        mime_type=str(file.get("mimetype") or ""),
        size=int(size) if isinstance(size, int | float) else None,
        source=source,
    )


def needs_file_info(file: Mapping[str, Any]) -> bool:
    """True when Slack sent only the file id: ask ``files.info`` for the rest."""
    return file.get("file_access") == "check_file_info" or not (
        file.get("url_private_download") or file.get("url_private")
    )


def usable_files(files: Iterable[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """Drop deleted files (tombstones) and anything without an id."""
    return [f for f in files or () if f.get("id") and f.get("mode") != "tombstone"]


def segments(
    event: Mapping[str, Any], files: Iterable[FileRef], me: Identity, mentions_me: bool
) -> tuple[Segment, ...]:
    parts: list[Segment] = []
    if mentions_me:
        parts.append(MentionSegment(user_id=me.user_id, is_self=True))
    text = clean_text(str(event.get("text") or ""), me.user_id)
    if text:
        parts.append(TextSegment(text))
    for ref in files:
        parts.append(ImageSegment(ref) if ref.is_image else FileSegment(ref))
    return tuple(parts)


def conversation(event: Mapping[str, Any], team_id: str) -> ConversationKey:
    return ConversationKey(
        platform=PLATFORM, workspace=team_id, channel=str(event.get("channel", "")), thread=thread_root(event)
    )


def message_id(event: Mapping[str, Any]) -> str:
    return f"{event.get('channel', '')}:{event.get('ts', '')}"


def user(event: Mapping[str, Any]) -> User:
    """The author of a message event, with their own workspace (``org``): in a Slack Connect channel a guest's
    ``user_team`` (or ``user_profile.team``) is their company's team, not the one the bot is installed in."""
    profile = event.get("user_profile") or {}
    name = profile.get("display_name") or profile.get("real_name") or profile.get("name") or ""
    org = event.get("user_team") or profile.get("team") or event.get("team") or ""
    return User(platform=PLATFORM, user_id=str(event.get("user", "")), display_name=str(name), org=str(org))


def withdrawal(event: Mapping[str, Any], me: Identity, *, event_id: str, team_id: str) -> MessageWithdrawn | None:
    """A deleted message or file the core must forget, from a ``message`` or ``file_deleted`` event; else None.

    A message deleted outright is ``message_deleted``; a thread's parent deleted while it has replies (as a
    question the bot answered in its thread is) becomes a ``message_changed`` to a ``tombstone``; a file taken out
    of a message is a ``message_changed`` whose file became a tombstone, and ``file_deleted`` deletes a file
    everywhere. Only people's messages that may concern the bot count (a direct message, a mention, a thread
    reply, or one with files); the bot's own messages never do.
    """
    kind = event.get("type")
    if kind == "file_deleted":
        file_id = str(event.get("file_id") or "")
        if not file_id:
            return None
        return MessageWithdrawn(PLATFORM, event_id, file_ids=(file_id,), kind="file_deleted")
    subtype = event.get("subtype")
    previous = event.get("previous_message")
    if kind != "message" or subtype not in ("message_deleted", "message_changed") or not isinstance(previous, Mapping):
        return None
    if previous.get("bot_id") or previous.get("user") in (None, "", me.user_id):
        return None
    channel = str(event.get("channel", ""))
    current = event.get("message") if isinstance(event.get("message"), Mapping) else {}
    before = [str(f["id"]) for f in usable_files(previous.get("files"))]
    if subtype == "message_changed" and current.get("subtype") != "tombstone":
        after = {str(f["id"]) for f in usable_files(current.get("files"))}
        gone = tuple(file_id for file_id in before if file_id not in after)
        if not gone:
            return None  # an edit of the text: not a withdrawal
        where = ConversationKey(PLATFORM, team_id, channel, thread_root(previous))
        return MessageWithdrawn(PLATFORM, event_id, conversation=where, file_ids=gone, kind="file_deleted")
    ts = str(event.get("deleted_ts") or previous.get("ts") or current.get("ts") or "")
    if not ts or not _may_concern(previous, event, me):
        return None
    where = ConversationKey(PLATFORM, team_id, channel, str(previous.get("thread_ts") or ts))
    return MessageWithdrawn(
        PLATFORM, event_id, message_id=f"{channel}:{ts}", conversation=where, file_ids=tuple(before), kind="deleted"
    )


def _may_concern(previous: Mapping[str, Any], event: Mapping[str, Any], me: Identity) -> bool:
    """Whether a deleted message may have been a question, or context of one: worth the core's attention."""
    direct = chat_type({**previous, "channel": event.get("channel"), "channel_type": event.get("channel_type")})
    return (
        direct is ChatType.DIRECT
        or me.user_id in mentioned_users(str(previous.get("text") or ""))
        or bool(previous.get("thread_ts"))
        or bool(usable_files(previous.get("files")))
    )


def earlier_files(replies: Iterable[Mapping[str, Any]], before_ts: str) -> list[Mapping[str, Any]]:
    """Images, PDFs, Office and text files (or files of unknown type) posted in a thread before ``before_ts``,
    newest first."""
    cutoff = _ts_value(before_ts)
    earlier = [m for m in replies if _ts_value(m.get("ts")) < cutoff]
    earlier.sort(key=lambda m: _ts_value(m.get("ts")), reverse=True)
    return [f for m in earlier for f in usable_files(m.get("files")) if _may_be_context(f)]


def _may_be_context(file: Mapping[str, Any]) -> bool:
    mime = str(file.get("mimetype") or "")
    return not mime or mime.startswith(CONTEXT_MIME_PREFIXES)


def _ts_value(ts: Any) -> float:
    try:
        return float(ts)
    except (TypeError, ValueError):
        return 0.0


class AnsweredThreads:
    """Threads (channel, root ts) where peekbot answered, most recent last, bounded in size."""

    def __init__(self, max_threads: int = 10_000) -> None:
        self._max = max_threads
        self._threads: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, channel: str, root_ts: str) -> None:
        key = (channel, root_ts)
        self._threads[key] = None
        self._threads.move_to_end(key)
        while len(self._threads) > self._max:
            self._threads.popitem(last=False)

    def contains(self, channel: str, root_ts: str) -> bool:
        return (channel, root_ts) in self._threads

    def __len__(self) -> int:
        return len(self._threads)

