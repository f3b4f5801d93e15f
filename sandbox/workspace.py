"""The sandbox's Slack workspace: its people and channels, what they post, and the faults an operator injects.

Everything goes through the embedded Slack server (:class:`SandboxSlack`, the loopback Slack of the tests), so the
bot's unchanged Slack adapter sees exactly what Slack would send: a posted file is hosted behind the bot token, a
message arrives as an Events API envelope over Socket Mode, a ``/peekbot`` command as a slash-command envelope.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sandbox.slack_server import FakeSlack

logger = logging.getLogger(__name__)

BOT_NAME = "peekbot"
_AT_BOT = re.compile(rf"(?<![\w<])@{BOT_NAME}\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    admin: bool
    locale: str = ""
    """What Slack's ``users.info`` tells of the person's language (``zh-CN``); empty: nothing."""

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "admin": self.admin, "dm": dm_of(self.id)}


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    direct: bool = False
    member: str | None = None
    """The person of a direct message (with the bot)."""

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "direct": self.direct, "member": self.member}


PEOPLE = (
    Person("U0ALICE", "Alice", admin=False),
    Person("U0ADMIN", "Ada (admin)", admin=True),
    Person("U0WEI", "Wei (中文)", admin=False, locale="zh-CN"),
)
"""A normal user, an admin (the sandbox lists the admin in ``PEEKBOT_ADMINS``) and a person whose Slack is set to
Chinese (peekbot's own sentences reach Wei in Chinese, whatever the question's language)."""
GROUP_CHANNELS = (Channel("C0GENERAL", "general"), Channel("C0DESIGN", "design"))


def dm_of(user_id: str) -> str:
    """The id of a person's direct message with the bot (``U0ALICE`` → ``D0ALICE``)."""
    return "D" + user_id[1:]


CHANNELS = (*(Channel(dm_of(p.id), BOT_NAME, direct=True, member=p.id) for p in PEOPLE), *GROUP_CHANNELS)


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a person attaches to a message."""

    name: str
    content: bytes
    mimetype: str

    @classmethod
    def of(cls, name: str, content: bytes, mimetype: str | None = None) -> Upload:
        guessed = mimetype if mimetype and mimetype != "application/octet-stream" else None
        return cls(name, content, guessed or mimetypes.guess_type(name)[0] or "application/octet-stream")


class SandboxError(Exception):
    """Something a person asked for that cannot be done; the message is the sentence they see."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SandboxSlack(FakeSlack):
    """The loopback Slack, which also tells the page whenever a request reached it (``touched``): a Web API call,
    a file download, a ``response_url`` post, a Socket Mode connection opening or closing."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.touched = asyncio.Event()
        self.assistant_status_error = None  # the bot may show its status line ("is looking at it…") in threads

    def middlewares(self) -> list[Middleware]:
        return [*super().middlewares(), self._touch]

    @web.middleware
    async def _touch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.touched.set()
        try:
            return await handler(request)
        finally:
            self.touched.set()


Fault = Callable[["Workspace"], Awaitable[str]]


class Workspace:
    """The people, channels and files of the sandbox, on top of the embedded Slack server."""

    def __init__(self, slack: SandboxSlack) -> None:
        self.slack = slack
        slack.locales.update({person.id: person.locale for person in PEOPLE if person.locale})
        self.files: dict[str, Upload] = {}
        """Every uploaded file by its Slack id, for the page's previews."""
        self.last_event: tuple[dict[str, Any], str] | None = None
        """The last message event sent, with its event id (the operator may deliver it again)."""

    # who and where --------------------------------------------------------------------------------
    @staticmethod
    def person(user_id: str) -> Person:
        for person in PEOPLE:
            if person.id == user_id:
                return person
        raise SandboxError(f"There is nobody called {user_id!r} here; pick one of the sandbox's people.")

    @staticmethod
    def channel(channel_id: str) -> Channel:
        for channel in CHANNELS:
            if channel.id == channel_id:
                return channel
        raise SandboxError(f"There is no channel {channel_id!r} here.", status=404)

    def history(self, channel_id: str) -> list[dict[str, Any]]:
        """The channel's messages (thread replies included), oldest first, as the page shows them."""
        self.channel(channel_id)
        return [self.message_view(channel_id, m) for m in self.slack.messages.get(channel_id, [])]

    def message_view(self, channel_id: str, message: dict[str, Any]) -> dict[str, Any]:
        ts = str(message.get("ts", ""))
        reactions = sorted(name for channel, at, name in self.slack.reactions if channel == channel_id and at == ts)
        return {
            "channel": channel_id,
            "ts": ts,
            "thread_ts": message.get("thread_ts"),
            "user": message.get("user"),
            "bot": message.get("bot_id") == self.slack.BOT_ID,
            "text": str(message.get("text") or ""),
            "files": [self._file_view(f) for f in message.get("files") or []],
            "reactions": reactions,
            "edits": int(message.get("edits") or 0),
            "streaming": bool(message.get("streaming")),
            "buttons": buttons(message.get("blocks") or []),
        }

    def _file_view(self, file: dict[str, Any]) -> dict[str, Any]:
        upload = self.files.get(str(file.get("id")))
        shared = self.slack.uploads.get(str(file.get("id")))  # a file the bot posted (a long answer, answer.md)
        if upload is None and shared is not None and shared["content"] is not None:
            upload = self.files[str(file["id"])] = Upload.of(shared["name"], shared["content"])
        if upload is None:
            return {"id": file.get("id"), "name": "(file deleted)", "mimetype": "", "url": None}
        return {"id": file["id"], "name": upload.name, "mimetype": upload.mimetype, "url": f"/api/files/{file['id']}"}

    # what people do -------------------------------------------------------------------------------
    async def post(
        self, user_id: str, channel_id: str, text: str, uploads: Sequence[Upload] = (), thread_ts: str | None = None
    ) -> dict[str, Any]:
        """A person posts a message (with files); the bot gets the events Slack would send. Returns its view.

        ``@peekbot`` in the text becomes a mention of the bot, which in a channel also sends ``app_mention``.
        """
        person, channel = self.person(user_id), self.channel(channel_id)
        if channel.direct and channel.member != person.id:
            raise SandboxError("That is someone else's direct message with the bot.", status=403)
        text = _AT_BOT.sub(f"<@{self.slack.BOT_USER_ID}>", text.strip())
        if not text and not uploads:
            raise SandboxError("Write a message or attach a file.")
        if thread_ts and not any(m.get("ts") == thread_ts for m in self.slack.messages.get(channel_id, [])):
            raise SandboxError("That thread is not in this channel.", status=404)
        files = [self.slack.add_file(u.name, u.content, u.mimetype, user=person.id) for u in uploads]
        self.files.update((f["id"], u) for f, u in zip(files, uploads, strict=True))
        event = self.slack.user_message(channel_id, text, user=person.id, files=files, thread_ts=thread_ts)
        self.slack.touched.set()
        event_id = _event_id()
        self.last_event = (event, event_id)
        await self.slack.send_event(event, event_id=event_id)
        if not channel.direct and f"<@{self.slack.BOT_USER_ID}>" in text:
            await self.slack.send_event(self.slack.app_mention(event), event_id=_event_id())
        return self.message_view(channel_id, next(m for m in self.slack.messages[channel_id] if m["ts"] == event["ts"]))

    async def command(self, user_id: str, channel_id: str, text: str) -> str:
        """A person types ``/peekbot <text>``; the reply comes back as an ephemeral message. Returns the envelope id."""
        person, channel = self.person(user_id), self.channel(channel_id)
        text = text.strip()
        if text.lower().startswith("/peekbot"):
            text = text[len("/peekbot") :].strip()
        return await self.slack.send_command(text, user_id=person.id, channel_id=channel.id)

    async def press(self, user_id: str, channel_id: str, ts: str, action_id: str, value: str, kind: str) -> str:
        """A person presses a button on one of the bot's messages. Returns the envelope id."""
        person, channel = self.person(user_id), self.channel(channel_id)
        message = next((m for m in self.slack.messages.get(channel.id, []) if m.get("ts") == ts), None)
        offered = buttons((message or {}).get("blocks") or [])
        if not any(b["action_id"] == action_id and b["value"] == value for b in offered):
            raise SandboxError("That button is not on that message (any more).", status=404)
        return await self.slack.click(channel.id, ts, action_id, value, user=person.id, kind=kind)

    async def press_ephemeral(self, user_id: str, channel_id: str, action_id: str, value: str, kind: str) -> str:
        """A person presses a button of a message only they see (the "what was wrong?" choice after a 👎)."""
        person, channel = self.person(user_id), self.channel(channel_id)
        shown = next(
            (
                e
                for e in self.slack.ephemerals
                if e.get("user") == person.id
                and e.get("channel") == channel.id
                and any(b["action_id"] == action_id and b["value"] == value for b in buttons(e["blocks"]))
            ),
            None,
        )
        if shown is None:
            raise SandboxError("That button is not on a message you were shown.", status=404)
        container = {
            "type": "message",
            "message_ts": f"{time.time():.6f}",
            "channel_id": channel.id,
            "is_ephemeral": True,
        }
        if shown.get("thread_ts"):
            container["thread_ts"] = shown["thread_ts"]
        return await self.slack.send_interactive(
            {
                "type": "block_actions",
                "user": {"id": person.id, "username": person.id.lower(), "team_id": self.slack.TEAM_ID},
                "channel": {"id": channel.id, "name": channel.name},
                "container": container,
                "actions": [
                    {
                        "type": kind,
                        "action_id": action_id,
                        "block_id": "b",
                        "value": value,
                        "action_ts": container["message_ts"],
                    }
                ],
                "response_url": f"{self.slack.url}/commands/{uuid.uuid4().hex[:12]}",
                "trigger_id": uuid.uuid4().hex,
            }
        )

    def ephemeral_target(self, response_url_rid: str) -> tuple[str, str] | None:
        """(user, channel) of the slash command or button press whose ``response_url`` ends with this id."""
        for delivery in self.slack.deliveries.values():
            payload = delivery.envelope.get("payload", {})
            if not str(payload.get("response_url", "")).endswith("/" + response_url_rid):
                continue
            if delivery.envelope.get("type") == "slash_commands":
                return str(payload["user_id"]), str(payload["channel_id"])
            return str(payload.get("user", {}).get("id")), str(payload.get("channel", {}).get("id"))
        return None

    # the operator's faults ------------------------------------------------------------------------
    def socket_state(self) -> dict[str, Any]:
        """The Socket Mode side as Slack sees it: connections and what became of the envelopes."""
        deliveries = list(self.slack.deliveries.values())
        return {
            "connections_opened": self.slack.connections_opened,
            "open_connections": self.slack.open_connections,
            "live": self.slack.live,
            "envelopes": len(deliveries),
            "acked": sum(1 for d in deliveries if d.acked_at is not None),
            "lost": sum(1 for d in deliveries if d.lost),
            "redelivered": sum(1 for d in deliveries if d.envelope.get("retry_attempt")),
            "rate_limited_calls": sum(1 for c in self.slack.api_calls if c.status == 429),
        }

    async def inject(self, name: str) -> str:
        """Inject the fault ``name`` (one of :data:`FAULTS`); returns what was done, as a sentence."""
        fault = FAULTS.get(name)
        if fault is None:
            raise SandboxError(f"There is no fault called {name!r}; try one of: {', '.join(FAULTS)}.", status=404)
        needs_socket = name != "rate-limit-update" and name != "redeliver"
        if needs_socket and not self.slack.open_connections:
            raise SandboxError(
                "The bot has no open Socket Mode connection right now; wait until it reconnects.", status=409
            )
        done = await fault(self)
        self.slack.touched.set()
        logger.info("sandbox fault injected: %s", name)
        return done


async def _kill_socket(workspace: Workspace) -> str:
    await workspace.slack.drop_connection(abrupt=True)
    return "Killed the newest Socket Mode connection (TCP reset). The bot should reconnect within seconds."


async def _go_silent(workspace: Workspace) -> str:
    workspace.slack.go_silent()
    return (
        "The newest connection went silent (half-open: no pongs, events lost). The bot's watchdog should notice "
        "and reconnect; unacked events are redelivered."
    )


async def _disconnect(workspace: Workspace) -> str:
    await workspace.slack.disconnect("refresh_requested", close_after_s=1.0)
    return "Sent a 'disconnect' (refresh_requested); the connection closes in 1 s. The bot should reconnect first."


async def _redeliver(workspace: Workspace) -> str:
    if workspace.last_event is None:
        raise SandboxError("Nothing to redeliver yet: post a message first.", status=409)
    event, event_id = workspace.last_event
    await workspace.slack.send_event(event, event_id=event_id, retry_attempt=1)
    return f"Delivered event {event_id} again (retry_attempt 1). The bot should not answer it twice."


async def _rate_limit_update(workspace: Workspace) -> str:
    workspace.slack.rate_limit("chat.update", times=3, retry_after=2.0)
    return "The next 3 chat.update calls get HTTP 429 with Retry-After: 2 s. Streamed edits should slow, not fail."


FAULTS: dict[str, Fault] = {
    "kill-socket": _kill_socket,
    "go-silent": _go_silent,
    "disconnect": _disconnect,
    "redeliver": _redeliver,
    "rate-limit-update": _rate_limit_update,
}
"""The faults of the operator's corner, by the name ``POST /api/faults/<name>`` takes."""


def buttons(blocks: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The buttons in a message's blocks (``button`` elements, both halves of ``feedback_buttons``), as the page
    draws them: action id, value, label and the element's kind."""
    found = []
    for block in blocks:
        for element in block.get("elements") or []:
            if not isinstance(element, dict):
                continue
            if element.get("type") == "button":
                found.append(_button(element, element, "button"))
            elif element.get("type") == "feedback_buttons":
                for half in ("positive_button", "negative_button"):
                    if isinstance(element.get(half), dict):
                        found.append(_button(element, element[half], "feedback_buttons"))
    return found


def _button(element: dict[str, Any], button: dict[str, Any], kind: str) -> dict[str, str]:
    label = button.get("text")
    return {
        "action_id": str(element.get("action_id") or ""),
        "value": str(button.get("value") or ""),
        "label": str(label.get("text") if isinstance(label, dict) else label or "button"),
        "title": str(button.get("accessibility_label") or ""),
        "kind": kind,
    }


def _event_id() -> str:
    return f"Ev{uuid.uuid4().hex[:10].upper()}"
