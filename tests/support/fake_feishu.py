"""A loopback Feishu/Lark for tests: tenant token, endpoint discovery, a WebSocket that speaks lark-oapi's
pbbp2 ``Frame``, and the REST calls the adapter makes. Every REST call is recorded; faults can be injected.

    async with FakeFeishu() as fake:
        for key, value in feishu_environment(fake).items():
            monkeypatch.setenv(key, value)
        ...  # start FeishuAdapter(Settings()) or an Application with it
        event = fake.message_event(msg_type="text", content={"text": "hi"})
        await fake.push_event(event, fragments=3)
        await fake.wait_for(lambda: fake.replies_to(event["event"]["message"]["message_id"]), what="a reply")

By default every event frame goes to the newest connection. ``cluster=True`` is Feishu's cluster mode for an
app with several connections (e.g. one per replica): each event goes to one live connection drawn at random
(``seed`` makes the draw repeatable), and a re-push after no ack is drawn again, so it may reach another one.

A reply with a ``uuid`` seen before answers with the message sent the first time (Feishu dedupes replies per
``uuid`` for an hour); ``recall`` marks a message deleted as recalling it in the client does (``recall_event``
also returns the ``im.message.recalled_v1`` event to push), and the bot recalls its own messages with
``DELETE /im/v1/messages/{id}``; CardKit's
``id_convert`` finds the card entity a card message shows. Reactions record who added them (the app, or a
person through ``add_user_reaction``) and can be listed per emoji type a page at a time, as Feishu lists them.
Files the bot uploads (``POST /im/v1/files``, multipart) are kept in ``uploaded``; a ``file`` reply must name one
(``files_sent``).

Card buttons: ``buttons_on`` lists the callback buttons a card message shows now (CardKit cards follow their
``batch_update`` calls), and ``press`` sends a ``card.action.trigger`` for one of them, as an EVENT frame or as a
CARD frame (``frame="card"``, as some app configurations deliver it), waits for the bot's answer on that frame and
returns it (``Press``: the decoded response with its toast and card, and the latency). Callbacks are not re-sent.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Middleware
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

from sandbox.loopback import LoopbackServer

CONTROL = 0
DATA = 1
REACTION_PAGE_DEFAULT = 20
REACTION_PAGE_MAX = 50
DEFAULT_CLIENT_CONFIG = {"PingInterval": 120, "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0}


@dataclass(slots=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float
    status: int = 0


@dataclass(slots=True)
class Ack:
    transport_id: str
    code: int
    biz_rt: str | None
    at: float
    connection: int = 0
    """Number of the WebSocket (1 = the first one opened) the ack came back on."""
    data: Any = None
    """The decoded JSON of the ack's ``data`` (a callback's response: toast, card), None without one."""


@dataclass(frozen=True, slots=True)
class Press:
    """The bot's answer to one card callback."""

    transport_id: str
    code: int
    response: dict[str, Any]
    latency_s: float

    @property
    def toast(self) -> str:
        return str((self.response.get("toast") or {}).get("content") or "")

    @property
    def toast_type(self) -> str:
        return str((self.response.get("toast") or {}).get("type") or "")


@dataclass(frozen=True, slots=True)
class Send:
    """One transmission of a pushed event: on which WebSocket (numbered from 1) and when (monotonic)."""

    connection: int
    at: float


@dataclass(slots=True)
class StoredMessage:
    message_id: str
    chat_id: str
    msg_type: str
    content: str
    sender_open_id: str
    sender_type: str = "user"
    parent_id: str = ""
    root_id: str = ""
    created_at: float = field(default_factory=time.monotonic)
    edits: int = 0
    deleted: bool = False
    sent_at: float = field(default_factory=time.time)
    """Wall-clock send time: the ``create_time`` Feishu reports (milliseconds since the epoch)."""


@dataclass(slots=True)
class Card:
    card_id: str
    data: dict[str, Any]
    texts: dict[str, str]
    streaming: bool
    sequence: int = 0
    updates: int = 0


@dataclass(slots=True)
class Resource:
    data: bytes
    content_type: str
    file_name: str
    denied: bool = False


@dataclass(slots=True)
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    code: int
    message: str
    remaining: int
    headers: dict[str, str]


@dataclass(slots=True)
class _Push:
    transport_id: str
    payload: bytes
    fragments: int
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    sends: int = 0
    sent: list[Send] = field(default_factory=list)
    kind: str = "event"
    """The frame header ``type``: ``event``, or ``card`` for a card callback sent as Feishu's CARD frame."""


@dataclass(slots=True, eq=False)
class _Connection:
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    device_id: str
    service_id: int
    number: int = 0
    pings: int = 0
    silent: bool = False


class _Refused(Exception):
    """Raised by a handler: the request is answered with Feishu's error ``code`` and ``message`` (HTTP 400)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _json_error(code: int, message: str, status: int = 400, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": message}, status=status, headers=headers)


def _ok(data: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": 0, "msg": "success"}
    if data is not None:
        body["data"] = data
    return web.json_response(body)


def card_text(card: Mapping[str, Any]) -> str:
    """The markdown/text content of a card JSON (2.0 ``body.elements`` or 1.0 ``elements``; rows of buttons
    below it do not count)."""
    elements = (card.get("body") or {}).get("elements") or card.get("elements") or []
    return "\n".join(str(e.get("content") or "") for e in elements if isinstance(e, dict) and "content" in e)


def card_buttons(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The callback values of the buttons anywhere in a card JSON, in order."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("tag") == "button":
                found.extend(b.get("value") for b in node.get("behaviors") or [] if b.get("type") == "callback")
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(card.get("body") or card)
    return found


def _replace_element(node: Any, element_id: str, new: Any) -> bool:
    """Replace (``new``) or remove (``new`` None) the element ``element_id`` anywhere under ``node``."""
    if isinstance(node, dict):
        return any(_replace_element(child, element_id, new) for child in node.values())
    if isinstance(node, list):
        for index, child in enumerate(node):
            if isinstance(child, dict) and child.get("element_id") == element_id:
                if new is None:
                    del node[index]
                else:
                    node[index] = new
                return True
            if _replace_element(child, element_id, new):
                return True
    return False


class FakeFeishu(LoopbackServer):
    """The server side of Feishu that one app sees. Start with ``async with`` (binds 127.0.0.1, random port)."""

    def __init__(
        self,
        *,
        app_id: str | None = None,
        app_secret: str = "s3cret",
        bot_open_id: str = "ou_peekbot",
        tenant_key: str = "tenant-1",
        client_config: Mapping[str, Any] | None = None,
        ack_timeout_s: float | None = 1.0,
        max_resends: int = 3,
        cluster: bool = False,
        seed: int | None = None,
    ) -> None:
        # The SDK caches tenant tokens per app id for the whole process: a fresh id per fake keeps tests apart.
        self.app_id = app_id or f"cli_{uuid.uuid4().hex[:16]}"
        self.app_secret = app_secret
        self.bot_open_id = bot_open_id
        self.tenant_key = tenant_key
        self.client_config = dict(client_config or DEFAULT_CLIENT_CONFIG)
        self.pong_config: dict[str, Any] | None = None
        self.ack_timeout_s = ack_timeout_s
        self.max_resends = max_resends
        self.cluster = cluster
        self._random = random.Random(seed)
        self.silent = False
        self.discovery_failures = 0
        self.discovery_code: tuple[int, str] | None = None
        self.calls: list[Call] = []
        self.acks: list[Ack] = []
        self.discoveries = 0
        self.connections_opened = 0
        self.connection_times: list[float] = []
        """Monotonic time at which each WebSocket was accepted, in order (index 0 is connection number 1)."""
        self.messages: dict[str, StoredMessage] = {}
        self.cards: dict[str, Card] = {}
        self.reactions: dict[str, dict[str, str]] = {}
        """message_id → {reaction_id: emoji_type} of the reactions on it now."""
        self.reaction_operators: dict[str, tuple[str, str]] = {}
        """reaction_id → (operator_type "app" | "user", operator_id: the app id or the person's open_id)."""
        self.resources: dict[tuple[str, str], Resource] = {}
        self.uploaded: dict[str, Resource] = {}
        """file_key → a file the bot uploaded (``POST /im/v1/files``), shown once a file message names it."""
        self._faults: list[Fault] = []
        self.redirects: dict[str, str] = {}
        """Path → URL: requests to the path are answered with a 307 redirect there (same method and body)."""
        self._tokens: set[str] = set()
        self._uuids: dict[str, str] = {}
        self._connections: list[_Connection] = []
        self._pushes: dict[str, _Push] = {}
        self._queued: list[_Push] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    # lifecycle -----------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        messages, cards = "/open-apis/im/v1/messages/{message_id}", "/open-apis/cardkit/v1/cards"
        return [
            web.post("/open-apis/auth/v3/tenant_access_token/internal", self._token),
            web.post("/callback/ws/endpoint", self._endpoint),
            web.get("/ws", self._websocket),
            web.get("/open-apis/bot/v3/info", self._bot_info),
            web.get(messages, self._get_message),
            web.patch(messages, self._patch_message),
            web.delete(messages, self._delete_message),
            web.post(f"{messages}/reply", self._reply),
            web.post("/open-apis/im/v1/files", self._upload_file),
            web.post(f"{messages}/reactions", self._add_reaction),
            web.get(f"{messages}/reactions", self._list_reactions),
            web.delete(f"{messages}/reactions/{{reaction_id}}", self._delete_reaction),
            web.get(f"{messages}/resources/{{file_key}}", self._resource),
            web.post(cards, self._create_card),
            web.post(f"{cards}/id_convert", self._card_id_convert),
            web.put(f"{cards}/{{card_id}}/elements/{{element_id}}/content", self._card_content),
            web.patch(f"{cards}/{{card_id}}/settings", self._card_settings),
            web.post(f"{cards}/{{card_id}}/batch_update", self._card_batch_update),
        ]

    def middlewares(self) -> list[Middleware]:
        return [self._middleware]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop_connections()
        await super().stop()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # test controls -------------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int = 429,
        code: int = 99991400,
        message: str = "request trigger frequency limit",
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``times`` calls matching ``method`` and the regex ``path`` get this error instead."""
        default_headers = {"x-ogw-ratelimit-reset": "0.2"} if code == 99991400 else {}
        self._faults.append(Fault(
            method.upper(), re.compile(path), status, code, message, times, dict(headers or default_headers)
        ))

    def revoke_tokens(self) -> None:
        """Every tenant token issued so far becomes invalid (as when it expires early)."""
        self._tokens.clear()

    async def drop_connections(self, *, abrupt: bool = True) -> None:
        """Cut every WebSocket: ``abrupt`` resets the TCP connection (no close frame), else a clean close."""
        connections, self._connections = self._connections, []
        for connection in connections:
            if abrupt and connection.transport is not None:
                connection.transport.abort()
            else:
                await connection.ws.close(code=1011, message=b"server going away")

    def silence_current(self) -> bool:
        """The newest open WebSocket stops answering pings (events still flow); later ones answer again.

        Returns False when no connection is open.
        """
        connection = self._current()
        if connection is None:
            return False
        connection.silent = True
        return True

    def sends_for(self, transport_id: str) -> list[Send]:
        """Every transmission of the pushed event ``transport_id``: re-sends, and sends on a later connection."""
        push = self._pushes.get(transport_id)
        return list(push.sent) if push is not None else []

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._connections if not c.ws.closed)

    @property
    def live_connection_numbers(self) -> list[int]:
        """Numbers (1 = the first ever opened) of the connections events can go to now, oldest first."""
        return [c.number for c in self._live()]

    @property
    def pings(self) -> int:
        return sum(c.pings for c in self._connections)

    def add_message(
        self,
        *,
        chat_id: str,
        msg_type: str,
        content: Mapping[str, Any],
        sender_open_id: str = "ou_alice",
        message_id: str | None = None,
        parent_id: str = "",
        root_id: str = "",
    ) -> StoredMessage:
        """A message that exists in the chat (readable through ``GET /im/v1/messages/{id}``)."""
        stored = StoredMessage(
            message_id=message_id or self.new_id("om_"),
            chat_id=chat_id,
            msg_type=msg_type,
            content=json.dumps(content, ensure_ascii=False),
            sender_open_id=sender_open_id,
            parent_id=parent_id,
            root_id=root_id,
        )
        self.messages[stored.message_id] = stored
        return stored

    def add_resource(
        self,
        message_id: str,
        file_key: str,
        data: bytes,
        *,
        content_type: str = "image/png",
        file_name: str = "",
        denied: bool = False,
    ) -> None:
        self.resources[(message_id, file_key)] = Resource(data, content_type, file_name or file_key, denied)

    def mention(self, index: int, open_id: str, name: str) -> dict[str, Any]:
        return {
            "key": f"@_user_{index}",
            "id": {"open_id": open_id, "union_id": f"on_{open_id}", "user_id": ""},
            "name": name,
            "tenant_key": self.tenant_key,
        }

    def message_event(
        self,
        *,
        msg_type: str,
        content: Mapping[str, Any],
        chat_id: str = "oc_dm",
        chat_type: str = "p2p",
        sender_open_id: str = "ou_alice",
        sender_type: str = "user",
        mentions: list[dict[str, Any]] | None = None,
        message_id: str | None = None,
        parent_id: str = "",
        root_id: str = "",
        event_id: str | None = None,
        sender_tenant_key: str | None = None,
    ) -> dict[str, Any]:
        """An ``im.message.receive_v1`` event (schema 2.0); the message is stored as well.

        ``sender_tenant_key`` makes the sender an external user from another tenant (the header keeps the app's).
        """
        stored = self.add_message(
            chat_id=chat_id,
            msg_type=msg_type,
            content=content,
            sender_open_id=sender_open_id,
            message_id=message_id,
            parent_id=parent_id,
            root_id=root_id,
        )
        stored.sender_type = sender_type
        return {
            "schema": "2.0",
            "header": self._header("im.message.receive_v1", event_id=event_id),
            "event": {
                "sender": {
                    "sender_id": {"open_id": sender_open_id, "union_id": f"on_{sender_open_id}", "user_id": ""},
                    "sender_type": sender_type,
                    "tenant_key": sender_tenant_key or self.tenant_key,
                },
                "message": {
                    "message_id": stored.message_id,
                    "root_id": root_id,
                    "parent_id": parent_id,
                    "create_time": str(int(time.time() * 1000)),
                    "chat_id": chat_id,
                    "chat_type": chat_type,
                    "message_type": msg_type,
                    "content": stored.content,
                    "mentions": mentions or [],
                },
            },
        }

    async def push_event(
        self, event: Mapping[str, Any], *, fragments: int = 1, connection: int | None = None
    ) -> str:
        """Send an event as a data frame (split into ``fragments`` frames); re-sent until acked.

        Returns the transport message id (the frame header ``message_id``). With no connection open the event
        waits for the next one, as Feishu's backfill does. ``connection`` sends the first copy on the live
        connection with that number (the usual choice when it is gone); re-pushes are routed as usual.
        """
        push = _Push(
            transport_id=uuid.uuid4().hex,
            payload=json.dumps(event, ensure_ascii=False).encode(),
            fragments=max(1, fragments),
        )
        self._pushes[push.transport_id] = push
        if not await self._send_push(push, connection):
            self._queued.append(push)
        if self.ack_timeout_s is not None:
            self._spawn(self._resend_until_acked(push))
        return push.transport_id

    def acks_for(self, transport_id: str) -> list[Ack]:
        return [a for a in self.acks if a.transport_id == transport_id]

    def calls_to(self, method: str, path: str) -> list[Call]:
        """Recorded calls whose method matches and whose path matches the regex ``path``."""
        pattern = re.compile(path)
        return [c for c in self.calls if c.method == method.upper() and pattern.search(c.path)]

    def add_user_reaction(self, message_id: str, emoji_type: str, *, open_id: str = "ou_alice") -> str:
        """A person reacts to a message in the client; returns the reaction id."""
        reaction_id = self.new_id("reaction_")
        self.reactions.setdefault(message_id, {})[reaction_id] = emoji_type
        self.reaction_operators[reaction_id] = ("user", open_id)
        return reaction_id

    def reactions_by(self, message_id: str, operator_type: str) -> dict[str, str]:
        """{reaction_id: emoji_type} of the reactions on a message added by an "app" or a "user"."""
        return {
            reaction_id: emoji
            for reaction_id, emoji in self.reactions.get(message_id, {}).items()
            if self.reaction_operators.get(reaction_id, ("app", ""))[0] == operator_type
        }

    def recall(self, message_id: str) -> None:
        """Someone recalled (deleted) the message: it stays known to the server, marked deleted."""
        self.messages[message_id].deleted = True

    def recall_event(self, message_id: str, *, recall_type: str = "message_owner") -> dict[str, Any]:
        """Its author recalls the message: marked deleted, and the ``im.message.recalled_v1`` event is returned
        (deliver it with ``push_event``)."""
        self.recall(message_id)
        return {
            "schema": "2.0",
            "header": self._header("im.message.recalled_v1"),
            "event": {
                "message_id": message_id,
                "chat_id": self.messages[message_id].chat_id,
                "recall_time": str(int(time.time() * 1000)),
                "recall_type": recall_type,
            },
        }

    def _header(self, event_type: str, *, event_id: str | None = None, tenant_key: str | None = None) -> dict[str, Any]:
        """An event's (or callback's) ``header``: a fresh event id unless given, the app's tenant unless given."""
        return {
            "event_id": event_id or uuid.uuid4().hex,
            "event_type": event_type,
            "create_time": str(int(time.time() * 1000)),
            "token": "",
            "app_id": self.app_id,
            "tenant_key": self.tenant_key if tenant_key is None else tenant_key,
        }

    def replies_to(self, message_id: str) -> list[StoredMessage]:
        replies = [m for m in self.messages.values() if m.parent_id == message_id and m.sender_type == "app"]
        return sorted(replies, key=lambda m: m.created_at)

    def visible_text(self, message: StoredMessage) -> str:
        """What a person sees in a card message now (a CardKit card's current text included)."""
        content = json.loads(message.content)
        if content.get("type") == "card":
            card = self.cards[content["data"]["card_id"]]
            return "\n".join(card.texts.values())
        return card_text(content)

    def reply_texts(self, message_id: str) -> list[str]:
        return [self.visible_text(m) for m in self.replies_to(message_id)]

    def card_of(self, message: StoredMessage) -> Card | None:
        content = json.loads(message.content)
        if content.get("type") == "card":
            return self.cards[content["data"]["card_id"]]
        return None

    def buttons_on(self, message: StoredMessage) -> list[dict[str, Any]]:
        """The callback values of the buttons a card message shows now."""
        card = self.card_of(message)
        return card_buttons(card.data if card is not None else json.loads(message.content))

    def card_action_event(
        self, message: StoredMessage, value: Any, *, open_id: str = "ou_alice", tenant_key: str | None = None
    ) -> dict[str, Any]:
        """The ``card.action.trigger`` callback for a press on a button with ``value`` in ``message``."""
        tenant = self.tenant_key if tenant_key is None else tenant_key
        return {
            "schema": "2.0",
            "header": self._header("card.action.trigger", tenant_key=tenant),
            "event": {
                "operator": {"tenant_key": tenant, "open_id": open_id, "union_id": f"on_{open_id}"},
                "token": f"c-{uuid.uuid4().hex}",
                "action": {"value": value, "tag": "button"},
                "host": "im_message",
                "context": {"open_message_id": message.message_id, "open_chat_id": message.chat_id},
            },
        }

    async def press(
        self, callback: Mapping[str, Any] | bytes, *, frame: str = "event", timeout: float = 5.0
    ) -> Press:
        """Send a card callback (``card_action_event``, or raw bytes) as an EVENT or CARD frame, once, and wait for
        the bot's answer on that frame."""
        payload = callback if isinstance(callback, bytes) else json.dumps(callback, ensure_ascii=False).encode()
        push = _Push(transport_id=uuid.uuid4().hex, payload=payload, fragments=1, kind=frame)
        self._pushes[push.transport_id] = push
        if not await self._send_push(push):
            raise AssertionError("no connection open for the card callback")
        ack = await self.wait_for(lambda: next(iter(self.acks_for(push.transport_id)), None), timeout=timeout,
                                  what="the answer to a card callback")
        return Press(push.transport_id, ack.code, ack.data or {}, ack.at - push.sent[0].at)

    def downloads(self) -> list[tuple[str, str]]:
        """(message_id, file_key) of every resource download, in order."""
        found = []
        for call in self.calls_to("GET", r"/resources/"):
            parts = call.path.split("/")
            found.append((parts[-3], parts[-1]))
        return found

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "a condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.02)

    # WebSocket -----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _live(self) -> list[_Connection]:
        return [c for c in self._connections if not c.ws.closed and not (c.transport and c.transport.is_closing())]

    def _current(self) -> _Connection | None:
        live = self._live()
        return live[-1] if live else None

    def _route(self, number: int | None = None) -> _Connection | None:
        """Where an event frame goes: the connection asked for, else a random live one (cluster), else the newest."""
        live = self._live()
        if number is not None:
            chosen = next((c for c in live if c.number == number), None)
            if chosen is not None:
                return chosen
        if self.cluster and live:
            return self._random.choice(live)
        return live[-1] if live else None

    async def _send_push(self, push: _Push, number: int | None = None) -> bool:
        connection = self._route(number)
        if connection is None:
            return False
        size = -(-len(push.payload) // push.fragments)
        chunks = [push.payload[i * size:(i + 1) * size] for i in range(push.fragments)]
        push.sends += 1
        push.sent.append(Send(connection.number, time.monotonic()))
        for seq, chunk in enumerate(chunks):
            frame = Frame(SeqID=seq, LogID=0, service=connection.service_id, method=DATA, payload=chunk)
            for key, value in (
                ("type", push.kind),
                ("message_id", push.transport_id),
                ("sum", str(push.fragments)),
                ("seq", str(seq)),
                ("trace_id", uuid.uuid4().hex[:16]),
            ):
                header = frame.headers.add()
                header.key, header.value = key, value
            try:
                await connection.ws.send_bytes(frame.SerializeToString())
            except (ConnectionError, RuntimeError):
                return False
        return True

    async def _resend_until_acked(self, push: _Push) -> None:
        assert self.ack_timeout_s is not None
        while push.sends <= self.max_resends:
            try:
                await asyncio.wait_for(push.acked.wait(), self.ack_timeout_s)
                return
            except TimeoutError:
                if push in self._queued:
                    continue
                await self._send_push(push)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections_opened += 1
        self.connection_times.append(time.monotonic())
        connection = _Connection(
            ws,
            request.transport,
            request.query.get("device_id", ""),
            int(request.query.get("service_id", "0")),
            number=self.connections_opened,
        )
        self._connections.append(connection)
        queued, self._queued = self._queued, []
        for push in queued:
            if not await self._send_push(push):
                self._queued.append(push)
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            frame = Frame()
            frame.ParseFromString(message.data)
            headers = {h.key: h.value for h in frame.headers}
            if frame.method == CONTROL and headers.get("type") == "ping":
                connection.pings += 1
                if not self.silent and not connection.silent:
                    await ws.send_bytes(self._pong(frame.service).SerializeToString())
            elif frame.method == DATA:
                transport_id = headers.get("message_id", "")
                answer = json.loads(frame.payload or b"{}")
                code = int(answer.get("code", 0))
                data = json.loads(base64.b64decode(answer["data"])) if answer.get("data") else None
                self.acks.append(
                    Ack(transport_id, code, headers.get("biz_rt"), time.monotonic(), connection.number, data)
                )
                push = self._pushes.get(transport_id)
                if push is not None and code == 200:
                    push.acked.set()
        return ws

    def _pong(self, service: int) -> Frame:
        frame = Frame(SeqID=0, LogID=0, service=service, method=CONTROL)
        header = frame.headers.add()
        header.key, header.value = "type", "pong"
        if self.pong_config is not None:
            frame.payload = json.dumps(self.pong_config).encode()
        return frame

    # HTTP ----------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in self.redirects:
            raise web.HTTPTemporaryRedirect(self.redirects[request.path])
        if not request.path.startswith("/open-apis/"):
            return await handler(request)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        call = Call(request.method, request.path, dict(request.query), body, time.monotonic())
        self.calls.append(call)
        response = await self._answer(request, handler)
        call.status = response.status
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method == request.method and fault.path.search(request.path):
                fault.remaining -= 1
                return _json_error(fault.code, fault.message, fault.status, fault.headers)
        if request.path.startswith("/open-apis/auth/"):
            return await handler(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self._tokens:
            return _json_error(99991663, "Invalid access token for authorization.", 400)
        try:
            return await handler(request)
        except _Refused as refused:
            return _json_error(refused.code, refused.message)

    def _stored(self, message_id: str) -> StoredMessage:
        stored = self.messages.get(message_id)
        if stored is None:
            raise _Refused(230001, "message not found")
        return stored

    @staticmethod
    def _advance(card: Card, body: Mapping[str, Any]) -> None:
        """Take the request's ``sequence``, which must be above every earlier one of the card."""
        if int(body.get("sequence", 0)) <= card.sequence:
            raise _Refused(300317, "sequence number compare failed")
        card.sequence = int(body["sequence"])

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            return web.json_response({"code": 10014, "msg": "app secret invalid"})
        token = f"t-{uuid.uuid4().hex}"
        self._tokens.add(token)
        return web.json_response({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200})

    async def _endpoint(self, request: web.Request) -> web.Response:
        self.discoveries += 1
        body = await request.json()
        if self.discovery_failures > 0:
            self.discovery_failures -= 1
            return web.json_response({"code": 1, "msg": "system busy"}, status=503)
        if self.discovery_code is not None:
            code, message = self.discovery_code
            return web.json_response({"code": code, "msg": message})
        if body.get("AppID") != self.app_id or body.get("AppSecret") != self.app_secret:
            return web.json_response({"code": 10014, "msg": "app secret invalid"})
        device_id = uuid.uuid4().hex[:12]
        url = f"ws://127.0.0.1:{self.port}/ws?device_id={device_id}&service_id=33554678"
        return web.json_response({"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self.client_config}})

    async def _bot_info(self, request: web.Request) -> web.Response:
        bot = {"activate_status": 2, "app_name": "peekbot", "avatar_url": "", "ip_white_list": [],
               "open_id": self.bot_open_id}
        return web.json_response({"code": 0, "msg": "ok", "bot": bot})

    def _message_json(self, stored: StoredMessage) -> dict[str, Any]:
        return {
            "message_id": stored.message_id,
            "root_id": stored.root_id,
            "parent_id": stored.parent_id,
            "msg_type": stored.msg_type,
            "chat_id": stored.chat_id,
            "create_time": str(int(stored.sent_at * 1000)),
            "deleted": stored.deleted,
            "updated": stored.edits > 0,
            "sender": {"id": stored.sender_open_id, "id_type": "open_id", "sender_type": stored.sender_type,
                       "tenant_key": self.tenant_key},
            "body": {"content": stored.content},
        }

    async def _get_message(self, request: web.Request) -> web.Response:
        stored = self._stored(request.match_info["message_id"])
        return _ok({"items": [self._message_json(stored)]})

    async def _reply(self, request: web.Request) -> web.Response:
        parent = self._stored(request.match_info["message_id"])
        body = await request.json()
        key = body.get("uuid")
        if key and self._uuids.get(key) in self.messages:
            return _ok(self._message_json(self.messages[self._uuids[key]]))
        if body.get("msg_type") == "interactive":
            content = json.loads(body.get("content") or "{}")
            if content.get("type") == "card" and content.get("data", {}).get("card_id") not in self.cards:
                return _json_error(230099, "card not found")
        if body.get("msg_type") == "file" and _file_key(body) not in self.uploaded:
            return _json_error(234003, "file not found")
        stored = StoredMessage(
            message_id=self.new_id("om_bot_"),
            chat_id=parent.chat_id,
            msg_type=body.get("msg_type", ""),
            content=body.get("content", ""),
            sender_open_id=self.bot_open_id,
            sender_type="app",
            parent_id=parent.message_id,
            root_id=parent.root_id or parent.message_id,
        )
        self.messages[stored.message_id] = stored
        if key:
            self._uuids[key] = stored.message_id
        return _ok(self._message_json(stored))

    async def _patch_message(self, request: web.Request) -> web.Response:
        stored = self.messages.get(request.match_info["message_id"])
        if stored is None or stored.sender_type != "app" or stored.msg_type != "interactive":
            return _json_error(230001, "message cannot be edited")
        body = await request.json()
        stored.content = body.get("content", "")
        stored.edits += 1
        return _ok()

    async def _delete_message(self, request: web.Request) -> web.Response:
        """``DELETE /im/v1/messages/{id}``: a bot recalls the messages it sent (they stay known, marked deleted)."""
        stored = self._stored(request.match_info["message_id"])
        if stored.sender_type != "app":
            return _json_error(230026, "No permission to recall this message.")
        if stored.deleted:
            return _json_error(230011, "The message was recalled.")
        stored.deleted = True
        return _ok({})

    async def _add_reaction(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        body = await request.json()
        emoji = (body.get("reaction_type") or {}).get("emoji_type", "")
        reaction_id = self.new_id("reaction_")
        self.reactions.setdefault(message_id, {})[reaction_id] = emoji
        self.reaction_operators[reaction_id] = ("app", self.app_id)
        return _ok(self._reaction_json(reaction_id, emoji))

    def _reaction_json(self, reaction_id: str, emoji: str) -> dict[str, Any]:
        operator_type, operator_id = self.reaction_operators.get(reaction_id, ("app", self.app_id))
        return {"reaction_id": reaction_id, "reaction_type": {"emoji_type": emoji}, "action_time": "0",
                "operator": {"operator_id": operator_id, "operator_type": operator_type}}

    async def _list_reactions(self, request: web.Request) -> web.Response:
        """``GET /im/v1/messages/{id}/reactions``: optional ``reaction_type`` filter, ``page_size`` (default 20,
        at most 50) and ``page_token``; a recalled message has none to list."""
        stored = self._stored(request.match_info["message_id"])
        if stored.deleted:
            return _json_error(230011, "the message was recalled")
        try:
            page_size = int(request.query.get("page_size") or REACTION_PAGE_DEFAULT)
            start = int(request.query.get("page_token") or 0)
        except ValueError:
            return _json_error(99992402, "field validation failed")
        if not 1 <= page_size <= REACTION_PAGE_MAX or start < 0:
            return _json_error(99992402, "field validation failed")
        wanted = request.query.get("reaction_type")
        matching = [
            (reaction_id, emoji)
            for reaction_id, emoji in self.reactions.get(stored.message_id, {}).items()
            if not wanted or emoji == wanted
        ]
        page = matching[start:start + page_size]
        has_more = start + page_size < len(matching)
        return _ok({
            "items": [self._reaction_json(reaction_id, emoji) for reaction_id, emoji in page],
            "has_more": has_more,
            "page_token": str(start + page_size) if has_more else "",
        })

    async def _delete_reaction(self, request: web.Request) -> web.Response:
        message_id, reaction_id = request.match_info["message_id"], request.match_info["reaction_id"]
        emoji = self.reactions.get(message_id, {}).pop(reaction_id, None)
        if emoji is None:
            return _json_error(231010, "reaction not found")
        return _ok({"reaction_id": reaction_id, "reaction_type": {"emoji_type": emoji}})

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["message_id"], request.match_info["file_key"])
        resource = self.resources.get(key)
        stored = self.messages.get(key[0])
        if stored is not None and stored.deleted:
            return _json_error(230011, "The message was recalled.")
        if resource is None:
            return _json_error(234003, "File not in msg.")
        if resource.denied:
            return _json_error(234009, "The operator has no permission to get the resource.")
        return web.Response(
            body=resource.data,
            content_type=resource.content_type,
            headers={"Content-Disposition": f'attachment; filename="{resource.file_name}"'},
        )

    async def _create_card(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") != "card_json":
            return _json_error(300301, "unsupported card type")
        data = json.loads(body.get("data") or "{}")
        elements = (data.get("body") or {}).get("elements") or []
        texts = {e["element_id"]: str(e.get("content") or "") for e in elements if e.get("element_id")
                 and "content" in e}
        card = Card(self.new_id("card_"), data, texts, bool((data.get("config") or {}).get("streaming_mode")))
        self.cards[card.card_id] = card
        return _ok({"card_id": card.card_id})

    async def _card_id_convert(self, request: web.Request) -> web.Response:
        body = await request.json()
        stored = self._stored(str(body.get("message_id") or ""))
        if stored.msg_type != "interactive":
            return _json_error(300301, "the message is not a card")
        card_id = (json.loads(stored.content or "{}").get("data") or {}).get("card_id")
        if card_id not in self.cards:
            return _json_error(300302, "card not found")
        return _ok({"card_id": card_id})

    async def _card_content(self, request: web.Request) -> web.Response:
        card = self.cards.get(request.match_info["card_id"])
        element_id = request.match_info["element_id"]
        if card is None or element_id not in card.texts:
            return _json_error(300302, "card or element not found")
        body = await request.json()
        if not card.streaming:
            return _json_error(300309, "streaming mode is closed")
        self._advance(card, body)
        card.texts[element_id] = str(body.get("content") or "")
        card.updates += 1
        return _ok()

    async def _card_settings(self, request: web.Request) -> web.Response:
        card = self.cards.get(request.match_info["card_id"])
        if card is None:
            return _json_error(300302, "card not found")
        body = await request.json()
        self._advance(card, body)
        settings = json.loads(body.get("settings") or "{}")
        config = settings.get("config") or {}
        if "streaming_mode" in config:
            card.streaming = bool(config["streaming_mode"])
        return _ok()

    async def _card_batch_update(self, request: web.Request) -> web.Response:
        """``POST /cardkit/v1/cards/{id}/batch_update``: ``partial_update_setting``, ``update_element`` and
        ``delete_elements``, all or nothing."""
        card = self.cards.get(request.match_info["card_id"])
        if card is None:
            return _json_error(300302, "card not found")
        body = await request.json()
        actions = json.loads(body.get("actions") or "[]")
        data = json.loads(json.dumps(card.data))
        streaming = card.streaming
        for action in actions:
            params = action.get("params") or {}
            if action.get("action") == "partial_update_setting":
                config = (params.get("settings") or {}).get("config") or {}
                streaming = bool(config.get("streaming_mode", streaming))
            elif action.get("action") == "update_element":
                if not _replace_element(data, str(params.get("element_id")), params.get("element")):
                    return _json_error(300302, "element not found")
            elif action.get("action") == "delete_elements":
                for element_id in params.get("element_ids") or []:
                    if not _replace_element(data, str(element_id), None):
                        return _json_error(300302, "element not found")
            else:
                return _json_error(300301, f"unsupported action {action.get('action')}")
        self._advance(card, body)
        card.data, card.streaming = data, streaming
        return _ok()

    # the bot's file uploads (POST /im/v1/files, multipart) and the file messages that show them ----------------
    def files_sent(self, message_id: str) -> list[Resource]:
        """The files the bot sent in reply to ``message_id`` (file messages), oldest first."""
        replies = [m for m in self.replies_to(message_id) if m.msg_type == "file"]
        return [self.uploaded[json.loads(m.content)["file_key"]] for m in replies]

    async def _upload_file(self, request: web.Request) -> web.Response:
        fields = _multipart(request.headers.get("Content-Type", ""), await request.read())
        if "file" not in fields or not fields.get("file_name") or not fields.get("file_type"):
            raise _Refused(234001, "invalid request: file, file_name and file_type are required")
        file_key = self.new_id("file_v3_")
        self.uploaded[file_key] = Resource(fields["file"], "application/octet-stream", fields["file_name"].decode())
        return _ok({"file_key": file_key})


FAST_CONNECTION = {
    "FEISHU_PING_INTERVAL_S": "0.2",
    "FEISHU_PONG_TIMEOUT_S": "0.6",
    "FEISHU_RECONNECT_INITIAL_S": "0.05",
    "FEISHU_RECONNECT_JITTER_S": "0.05",
}
FAST_REPLIES = {
    "FEISHU_UPDATE_INTERVAL_S": "0.05",
    "FEISHU_RATE_LIMIT_BACKOFF_S": "0.05",
    "FEISHU_RATE_LIMIT_MAX_WAIT_S": "10",
    "FEISHU_CONNECT_TIMEOUT_S": "5",
    "FEISHU_REST_TIMEOUT_S": "5",
}


def _file_key(body: Mapping[str, Any]) -> str:
    """The ``file_key`` a file message's content names ("" when none)."""
    return str(json.loads(body.get("content") or "{}").get("file_key") or "")


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body, by name (the body was read before the handler ran)."""
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, bytes] = {}
    for part in parsed.iter_parts() if parsed.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = part.get_payload(decode=True) or b""
    return fields


def feishu_environment(fake: FakeFeishu, *, fast_heartbeat: bool = False, **overrides: str) -> dict[str, str]:
    """``FEISHU_*`` variables that point the adapter at ``fake`` with test-sized intervals."""
    env = {"FEISHU_APP_ID": fake.app_id, "FEISHU_APP_SECRET": fake.app_secret, "FEISHU_DOMAIN": fake.url}
    env.update(FAST_REPLIES)
    if fast_heartbeat:
        env.update(FAST_CONNECTION)
    env.update(overrides)
    return env
