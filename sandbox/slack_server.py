"""A loopback fake of Slack for tests: Web API, Socket Mode WebSocket and bearer-protected file hosting.

It speaks the real wire protocol, so the real slack_sdk/slack-bolt clients run against it unchanged:
``apps.connections.open`` hands out a ``ws://`` URL, the WebSocket greets with ``hello``, events and slash
commands arrive in envelopes that must be acked with their ``envelope_id`` (unacked events are redelivered
with ``retry_attempt``/``retry_reason``), ``disconnect`` messages ask the client to reconnect. Files are
served only with the bot token; anything else gets Slack's HTML sign-in page.

Message metadata (``metadata`` on chat.postMessage) is stored with the message, kept by chat.update and
returned by conversations.replies only with ``include_all_metadata``; conversations.replies honours ``oldest``,
``latest`` and ``inclusive`` (the thread's parent always comes first).

The bot's file uploads (``files.getUploadURLExternal``, the bytes POSTed to the upload URL it hands out,
``files.completeUploadExternal``) are kept in ``uploads``; each completion shows the file in a message of the
thread (``shared_files``).

Faults for tests: drop a connection (abruptly or politely), make one go silent (no pongs, nothing sent:
a half-open connection), answer a method with 429 + ``Retry-After``.

By default every envelope goes to the newest connection. With ``spread=True`` each envelope goes to one
open connection of the app drawn at random (``seed`` makes the draw repeatable), as Slack spreads events
over an app's Socket Mode connections (up to 10, e.g. one per replica); a redelivery is drawn again, so it
may land on another connection. ``send_event(..., connection=N)`` sends to connection number N.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from sandbox.loopback import LoopbackServer

T = TypeVar("T")

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


class _ApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Call:
    """One Web API request as the fake saw it."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class Delivery:
    """One envelope sent (or meant to be sent) over Socket Mode."""

    envelope_id: str
    envelope: dict[str, Any]
    connection: int | None
    sent_at: float = field(default_factory=time.monotonic)
    acked_at: float | None = None
    ack: dict[str, Any] | None = None
    lost: bool = False


@dataclass
class _Connection:
    number: int
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    silent: bool = False
    echo_keepalive: bool = False
    closed: bool = False
    pongs: int = 0


@dataclass
class _File:
    info: dict[str, Any]
    content: bytes
    denied: bool = False
    redirect: str | None = None


class FakeSlack(LoopbackServer):
    """``async with FakeSlack() as fake:`` — ``fake.api_url`` is what SLACK_API_URL should be."""

    BOT_TOKEN = "xoxb-1111-2222-fakebottoken"
    APP_TOKEN = "xapp-1-A0PEEKBOT-3333-fakeapptoken"
    TEAM_ID = "T0FAKE"
    BOT_USER_ID = "U0PEEKBOT"
    BOT_ID = "B0PEEKBOT"
    APP_ID = "A0PEEKBOT"
    MAX_TEXT = 4000

    MAX_CONNECTIONS = 10
    """Slack spreads an app's events over at most this many of its open Socket Mode connections."""

    def __init__(
        self,
        *,
        ack_timeout_s: float = 3.0,
        max_redeliveries: int = 3,
        spread: bool = False,
        seed: int | None = None,
    ) -> None:
        self.ack_timeout_s = ack_timeout_s
        self.max_redeliveries = max_redeliveries
        self.spread = spread
        self._random = random.Random(seed)
        self.api_calls: list[Call] = []
        self.deliveries: dict[str, Delivery] = {}
        self.downloads: list[tuple[str, bool]] = []
        """(file id, served) for every file request."""
        self.command_responses: list[dict[str, Any]] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.reactions: set[tuple[str, str, str]] = set()
        self.assistant_status_error: str | None = "missing_scope"
        self.streaming_error: str | None = None
        """Answer ``chat.startStream`` with this error (``not_allowed``, ``unknown_method``, …): no native streaming."""
        self.statuses: list[dict[str, Any]] = []
        """``assistant.threads.setStatus`` calls that succeeded (channel_id, thread_ts, status)."""
        self.suggested_prompts: list[dict[str, Any]] = []
        """``assistant.threads.setSuggestedPrompts`` calls that succeeded (channel_id, thread_ts or none, prompts)."""
        self.ephemerals: list[dict[str, Any]] = []
        """``chat.postEphemeral`` messages (channel, user, text, thread_ts, blocks)."""
        self.locales: dict[str, str] = {}
        """User id → the locale ``users.info`` tells with ``include_locale`` (``zh-CN``); others tell none."""
        self.connections_opened = 0
        self.hellos: list[float] = []
        """``time.monotonic()`` at which each connection's ``hello`` was sent, oldest first."""
        self._connections: list[_Connection] = []
        self._tickets: set[str] = set()
        self._files: dict[str, _File] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        """File id → the bot's external upload: ``name``, ``length``, ``content`` (None until sent), ``shares``."""
        self._rate_limits: dict[str, list[float]] = {}
        self._failures: dict[str, list[str]] = {}
        self._clock = itertools.count(1)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    # lifecycle -----------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/api/{method}", self._api),
            web.get("/link/", self._socket),
            web.get("/files-pri/{key}/{tail:.+}", self._download),
            web.post("/commands/{rid}", self._command_response),
            web.post("/upload/v1/{file_id}", self._receive_upload),
        ]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:  # wait for them to end, but never forever (a stop must stop)
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for connection in list(self._connections):
            await self._close(connection, abrupt=True)
        await super().stop()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # helpers for tests ---------------------------------------------------------------------------
    def calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self.api_calls if method is None or c.method == method]

    async def wait_for(self, predicate: Callable[[list[Call]], T], timeout: float = 10.0, what: str = "") -> T:
        """Poll until ``predicate(api_calls)`` is truthy; returns its value. Bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self.api_calls)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Slack: timed out after {timeout} s waiting for {what or predicate}")
            await asyncio.sleep(0.02)

    async def wait_until(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        return await self.wait_for(lambda _calls: condition(), timeout, what)

    def rate_limit(self, method: str, *, times: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def add_file(
        self,
        name: str,
        content: bytes,
        mimetype: str,
        *,
        size: int | None = None,
        denied: bool = False,
        slim: bool = False,
        user: str = "U0ALICE",
        redirect: str | None = None,
    ) -> dict[str, Any]:
        """Host a file; returns the file object as events carry it (only the id when ``slim``).

        ``size`` overrides the size Slack reports; ``denied`` serves the sign-in page even to the bot;
        ``redirect`` answers the download with a 302 to that URL (a path is relative to this server).
        """
        file_id = f"F{next(self._ids):08d}"
        base = f"{self.url}/files-pri/{self.TEAM_ID}-{file_id}"
        filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        info = {
            "id": file_id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "is_public": False,
            "size": len(content) if size is None else size,
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://fake.slack.com/files/{user}/{file_id}/{name}",
        }
        self._files[file_id] = _File(info=info, content=content, denied=denied, redirect=redirect)
        if slim:
            return {"id": file_id, "file_access": "check_file_info", "created": info["created"], "user": user}
        return dict(info)

    def user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0ALICE",
        files: Iterable[dict[str, Any]] = (),
        thread_ts: str | None = None,
        channel_type: str | None = None,
        user_team: str | None = None,
    ) -> dict[str, Any]:
        """Record a person's message in the channel's history and return its ``message`` event.

        ``user_team`` makes the author a guest from another company's workspace (Slack Connect): the event then
        carries their team as ``team``, ``user_team`` and ``source_team``, as Slack sends it.
        """
        ts = self._next_ts()
        files = list(files)
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": self.TEAM_ID,
            "client_msg_id": str(uuid.uuid4()),
            "channel_type": channel_type or ("im" if channel.startswith("D") else "channel"),
        }
        if user_team:
            event.update(team=user_team, user_team=user_team, source_team=user_team)
        if files:
            event["subtype"] = "file_share"
            event["files"] = files
            event["upload"] = False
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = user
        stored = {k: v for k, v in event.items() if k not in ("channel", "event_ts", "channel_type")}
        self.messages.setdefault(channel, []).append(stored)
        return event

    def delete_message(self, channel: str, ts: str) -> dict[str, Any]:
        """A person deletes their message; returns the event Slack sends about it (deliver it with ``send_event``).

        As in Slack, a thread's parent that has replies stays in the thread as a tombstone ("This message was
        deleted.", a ``message_changed`` event); any other message leaves the history (``message_deleted``).
        """
        history = self.messages.get(channel, [])
        message = next(m for m in history if m["ts"] == ts)
        event_ts = self._next_ts()
        base = {
            "type": "message",
            "channel": channel,
            "hidden": True,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": "im" if channel.startswith("D") else "channel",
            "previous_message": dict(message),
        }
        if any(m.get("thread_ts") == ts and m["ts"] != ts for m in history):
            tombstone = {"type": "message", "subtype": "tombstone", "text": "This message was deleted.",
                         "user": "USLACKBOT", "hidden": True, "ts": ts, "thread_ts": ts}
            history[history.index(message)] = tombstone
            return {**base, "subtype": "message_changed", "message": tombstone}
        history.remove(message)
        return {**base, "subtype": "message_deleted", "deleted_ts": ts}

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """A person deletes a file: it is served no more and shows as a tombstone in the messages that had it.
        Returns the ``file_deleted`` event (deliver it with ``send_event``)."""
        self._files.pop(file_id, None)
        for history in self.messages.values():
            for message in history:
                files = message.get("files")
                if files:
                    message["files"] = [
                        {"id": file_id, "mode": "tombstone"} if f.get("id") == file_id else f for f in files
                    ]
        return {"type": "file_deleted", "file_id": file_id, "event_ts": self._next_ts()}

    @staticmethod
    def app_mention(message_event: dict[str, Any]) -> dict[str, Any]:
        """The ``app_mention`` event Slack sends alongside ``message`` for a post that mentions the bot."""
        keys = ("user", "text", "ts", "channel", "event_ts", "team", "client_msg_id", "thread_ts", "files")
        mention = {k: message_event[k] for k in keys if k in message_event}
        mention["type"] = "app_mention"
        return mention

    async def wait_answered(self, question: dict[str, Any], timeout: float = 30.0) -> list[str]:
        """Wait until the bot finished answering ``question`` (it removed its reaction from it); the texts of the
        bot's messages in the question's thread."""
        ts = question["ts"]
        await self.wait_for(
            lambda calls: any(c.method == "reactions.remove" and c.ok and c.args.get("timestamp") == ts for c in calls),
            timeout,
            f"the answer to {ts}",
        )
        return [m["text"] for m in self.bot_messages(question["channel"], question.get("thread_ts") or ts)]

    def reply_posts(self) -> list[Call]:
        """The calls that made a new bot message: ``chat.postMessage`` and ``chat.startStream`` (streamed)."""
        return [c for c in self.api_calls if c.method in ("chat.postMessage", "chat.startStream")]

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """The bot's messages in a channel (optionally one thread), oldest first, with their current text."""
        return [
            m
            for m in self.messages.get(channel, [])
            if m.get("bot_id") == self.BOT_ID and (thread_ts is None or m.get("thread_ts") == thread_ts)
        ]

    # Socket Mode side ----------------------------------------------------------------------------
    async def send_event(
        self,
        event: dict[str, Any],
        *,
        retry_attempt: int = 0,
        event_id: str | None = None,
        connection: int | None = None,
    ) -> str:
        """Deliver an Events API envelope; returns its envelope id. Unacked ones are redelivered.

        ``connection`` sends it on the open connection with that number (the usual choice when it is closed);
        a redelivery is routed as usual.
        """
        payload = {
            "token": "fake-verification-token",
            "team_id": self.TEAM_ID,
            "api_app_id": self.APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.TEAM_ID,
                    "user_id": self.BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return await self._send_envelope("events_api", payload, retry_attempt=retry_attempt, connection=connection)

    async def send_command(
        self,
        text: str,
        *,
        user_id: str = "U0ALICE",
        channel_id: str = "C0GENERAL",
        command: str = "/peekbot",
    ) -> str:
        """Deliver a slash command envelope; returns its envelope id."""
        rid = uuid.uuid4().hex[:12]
        payload = {
            "token": "fake-verification-token",
            "team_id": self.TEAM_ID,
            "team_domain": "fake",
            "channel_id": channel_id,
            "channel_name": "directmessage" if channel_id.startswith("D") else "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/commands/{rid}",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:8]}",
        }
        return await self._send_envelope("slash_commands", payload, retry_attempt=0, accepts_response_payload=True)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Delivery:
        delivery = self.deliveries[envelope_id]
        await self.wait_until(lambda: delivery.acked_at is not None, timeout, f"ack of {envelope_id}")
        return delivery

    async def disconnect(self, reason: str = "refresh_requested", *, close_after_s: float | None = 1.0) -> None:
        """Send a ``disconnect`` message on the newest connection (and close it a little later, as Slack does)."""
        connection = self._newest()
        assert connection is not None, "no open Socket Mode connection"
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        await connection.ws.send_str(json.dumps(message))
        if close_after_s is not None:
            self._spawn(self._close_later(connection, close_after_s))

    async def drop_connection(self, *, abrupt: bool = True) -> None:
        """Close the newest connection: a TCP reset when ``abrupt``, else a WebSocket close frame."""
        connection = self._newest()
        assert connection is not None, "no open Socket Mode connection"
        await self._close(connection, abrupt=abrupt)

    def go_silent(self, *, echo_keepalive: bool = False) -> None:
        """Half-open: the newest connection stays up but answers no ping and carries no event.

        With ``echo_keepalive`` empty keepalive pings are still echoed (as a middlebox might), so only the
        application-level signs of life (pongs to payload pings, envelopes) stop.
        """
        connection = self._newest()
        assert connection is not None, "no open Socket Mode connection"
        connection.silent = True
        connection.echo_keepalive = echo_keepalive

    def fail(self, method: str, *, error: str = "fatal_error", times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, []).extend([error] * times)

    @property
    def live(self) -> bool:
        """True when the newest open connection is talking (not closed, not made silent)."""
        newest = self._newest()
        return newest is not None and not newest.silent

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._connections if not c.closed)

    @property
    def open_connection_numbers(self) -> list[int]:
        """Numbers (1 = the first ever opened) of the connections open now, oldest first."""
        return [c.number for c in self._connections if not c.closed]

    def deliveries_of(self, event_id: str) -> list[Delivery]:
        """Every envelope (first delivery, redeliveries, repeats) that carried the event ``event_id``."""
        return [
            d for d in self.deliveries.values() if d.envelope.get("payload", {}).get("event_id") == event_id
        ]

    async def wait_for_connection(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` connections were opened in total and one of them is open and talking."""
        await self.wait_until(
            lambda: self.connections_opened >= count and self._newest(talking=True) is not None,
            timeout,
            f"Socket Mode connection #{count}",
        )

    # internals: Socket Mode ----------------------------------------------------------------------
    def _newest(self, *, talking: bool = False) -> _Connection | None:
        for connection in reversed(self._connections):
            if not connection.closed and not (talking and connection.silent):
                return connection
        return None

    def _route(self, number: int | None) -> _Connection | None:
        """The connection an envelope goes to: the one asked for, else a random one (``spread``), else the newest.

        A silent (half-open) connection can be chosen: Slack cannot tell, and the envelope is lost on it.
        """
        open_now = [c for c in self._connections if not c.closed]
        if number is not None:
            chosen = next((c for c in open_now if c.number == number), None)
            if chosen is not None:
                return chosen
        if self.spread and open_now:
            return self._random.choice(open_now[-self.MAX_CONNECTIONS:])
        return self._newest()

    async def _send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int,
        accepts_response_payload: bool = False,
        connection: int | None = None,
    ) -> str:
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        target = self._route(connection)
        delivery = Delivery(envelope_id, envelope, target.number if target else None)
        self.deliveries[envelope_id] = delivery
        if target is None or target.silent:
            delivery.lost = True  # nobody listening, or a half-open connection swallows it
        else:
            try:
                await target.ws.send_str(json.dumps(envelope))
            except (ConnectionError, RuntimeError):
                delivery.lost = True
        if kind == "events_api":
            self._spawn(self._redeliver_unless_acked(delivery, retry_attempt))
        return envelope_id

    async def _redeliver_unless_acked(self, delivery: Delivery, retry_attempt: int) -> None:
        await asyncio.sleep(self.ack_timeout_s)
        if delivery.acked_at is None and retry_attempt < self.max_redeliveries:
            await self._send_envelope("events_api", delivery.envelope["payload"], retry_attempt=retry_attempt + 1)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=403, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self.connections_opened += 1
        connection = _Connection(number=self.connections_opened, ws=ws, transport=request.transport)
        self._connections.append(connection)
        hello = {
            "type": "hello",
            "num_connections": self.open_connections,
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.APP_ID},
        }
        await ws.send_str(json.dumps(hello))
        self.hellos.append(time.monotonic())
        try:
            async for message in ws:
                if message.type == WSMsgType.PING:
                    if not connection.silent or (connection.echo_keepalive and not message.data):
                        connection.pongs += 1
                        await ws.pong(message.data)
                elif message.type == WSMsgType.TEXT and not connection.silent:
                    self._record_ack(message.data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            connection.closed = True
        return ws

    def _record_ack(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            return
        delivery = self.deliveries.get(str(ack.get("envelope_id")))
        if delivery is not None and delivery.acked_at is None:
            delivery.acked_at = time.monotonic()
            delivery.ack = ack

    async def _close_later(self, connection: _Connection, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._close(connection, abrupt=False)

    @staticmethod
    async def _close(connection: _Connection, *, abrupt: bool) -> None:
        if connection.closed:
            return
        connection.closed = True
        if abrupt and connection.transport is not None:
            connection.transport.abort()  # type: ignore[attr-defined]
            return
        try:
            await asyncio.wait_for(connection.ws.close(), timeout=2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            if connection.transport is not None:
                connection.transport.abort()  # type: ignore[attr-defined]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # internals: Web API --------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        call = Call(method=method, args=args, token=token)
        self.api_calls.append(call)
        pending = self._rate_limits.get(method)
        if pending:
            retry_after = pending.pop(0)
            call.status, call.error = 429, "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": f"{retry_after:g}"}
            )
        try:
            failures = self._failures.get(method)
            if failures:
                raise _ApiError(failures.pop(0))
            self._check_token(method, token)
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise _ApiError("unknown_method")
            body = handler(args)
        except _ApiError as exc:
            call.error = exc.code
            return web.json_response({"ok": False, "error": exc.code})
        return web.json_response({"ok": True, **body})

    def _check_token(self, method: str, token: str | None) -> None:
        if not token:
            raise _ApiError("not_authed")
        expected = self.APP_TOKEN if method == "apps.connections.open" else self.BOT_TOKEN
        if token == expected:
            return
        if method == "apps.connections.open" and token == self.BOT_TOKEN:
            raise _ApiError("not_allowed_token_type")
        raise _ApiError("invalid_auth")

    def _next_ts(self) -> str:
        n = next(self._clock)
        return f"{1_700_000_000 + n}.{n:06d}"

    def _find(self, channel: str, ts: str) -> dict[str, Any]:
        for message in self.messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise _ApiError("message_not_found")

    def _m_auth_test(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "peekbot",
            "team_id": self.TEAM_ID,
            "user_id": self.BOT_USER_ID,
            "bot_id": self.BOT_ID,
            "is_enterprise_install": False,
        }

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user") or "")
        if not user_id:
            raise _ApiError("user_not_found")
        user: dict[str, Any] = {"id": user_id, "team_id": self.TEAM_ID, "name": user_id.lower(), "is_bot": False}
        if str(args.get("include_locale")).lower() in ("true", "1") and user_id in self.locales:
            user["locale"] = self.locales[user_id]
        return {"user": user}

    def _m_apps_connections_open(self, _args: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"{self.url.replace('http://', 'ws://')}/link/?ticket={ticket}"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, text = str(args.get("channel", "")), str(args.get("text") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if not text.strip():
            raise _ApiError("no_text")
        if len(text) > self.MAX_TEXT:
            raise _ApiError("msg_too_long")
        metadata = self._metadata(args.get("metadata"))
        ts = self._next_ts()
        message = {"type": "message", "user": self.BOT_USER_ID, "bot_id": self.BOT_ID, "text": text, "ts": ts}
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        if metadata is not None:
            message["metadata"] = metadata
        if args.get("blocks"):
            message["blocks"] = _blocks(args["blocks"])
        self.messages.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": ts, "message": message}

    @staticmethod
    def _metadata(value: Any) -> dict[str, Any] | None:
        """Message metadata as Slack checks it: an object with a string ``event_type`` and an object payload."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _ApiError("invalid_metadata_format") from None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("event_type"), str)
            or not isinstance(value.get("event_payload"), dict)
        ):
            raise _ApiError("invalid_metadata_format")
        return {"event_type": value["event_type"], "event_payload": dict(value["event_payload"])}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts, text = str(args.get("channel", "")), str(args.get("ts", "")), str(args.get("text") or "")
        message = self._find(channel, ts)
        if message.get("bot_id") != self.BOT_ID:
            raise _ApiError("cant_update_message")
        if len(text) > self.MAX_TEXT:
            raise _ApiError("msg_too_long")
        message["text"] = text
        if "blocks" in args:  # chat.update without blocks keeps the message's blocks; an empty list removes them
            message["blocks"] = _blocks(args["blocks"])
        message.setdefault("edits", 0)
        message["edits"] += 1
        return {"channel": channel, "ts": ts, "text": text}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """``chat.delete``: a bot token deletes only the bot's own messages."""
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = self._find(channel, ts)
        if message.get("bot_id") != self.BOT_ID:
            raise _ApiError("cant_delete_message")
        self.messages[channel].remove(message)
        return {"channel": channel, "ts": ts}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            raise _ApiError("invalid_arguments")
        keys = ("channel", "user", "text", "thread_ts")
        self.ephemerals.append({**{k: args[k] for k in keys if k in args}, "blocks": _blocks(args.get("blocks"))})
        return {"message_ts": self._next_ts()}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel")), str(args.get("timestamp")), str(args.get("name")))
        self._find(key[0], key[1])
        if key in self.reactions:
            raise _ApiError("already_reacted")
        self.reactions.add(key)
        return {}

    def _m_reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel")), str(args.get("timestamp")), str(args.get("name")))
        if key not in self.reactions:
            raise _ApiError("no_reaction")
        self.reactions.discard(key)
        return {}

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, root = str(args.get("channel", "")), str(args.get("ts", ""))
        thread = [m for m in self.messages.get(channel, []) if m["ts"] == root or m.get("thread_ts") == root]
        if not thread:
            raise _ApiError("thread_not_found")
        limit = int(args.get("limit") or 1000)
        thread.sort(key=lambda m: float(m["ts"]))
        inclusive = _truthy(args.get("inclusive"))
        oldest, latest = args.get("oldest"), args.get("latest")
        if oldest:
            thread = [m for m in thread if m["ts"] == root or _after(m["ts"], str(oldest), inclusive)]
        if latest:
            thread = [m for m in thread if m["ts"] == root or _after(str(latest), m["ts"], inclusive)]
        with_metadata = _truthy(args.get("include_all_metadata"))
        page = [m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in thread[:limit]]
        return {"messages": page, "has_more": len(thread) > limit}

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self._files.get(str(args.get("file", "")))
        if file is None:
            raise _ApiError("file_not_found")
        return {"file": dict(file.info)}

    # the bot's file uploads: files.getUploadURLExternal → POST the bytes → files.completeUploadExternal ------------
    def shared_files(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """The files the bot shared in ``channel`` (in the thread ``thread_ts``), oldest first, with ``content``."""
        found = []
        for message in self.bot_messages(channel, thread_ts):
            for file in message.get("files") or ():
                found.append({**file, "content": self.uploads.get(file["id"], {}).get("content")})
        return found

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        name, length = str(args.get("filename") or ""), str(args.get("length") or "")
        if not name or not length.isdigit() or int(length) <= 0:
            raise _ApiError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.uploads[file_id] = {"name": name, "length": int(length), "content": None, "shares": 0}
        return {"upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    async def _receive_upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="unknown upload")
        upload["content"] = await request.read()
        return web.Response(text=f"OK - {len(upload['content'])}")

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        """Shares each file (again, if it was shared before) in ``channel_id``'s thread ``thread_ts``."""
        try:
            files = json.loads(str(args.get("files") or "[]"))
        except ValueError:
            raise _ApiError("invalid_arguments") from None
        channel = str(args.get("channel_id") or "")
        if not files or not channel:
            raise _ApiError("invalid_arguments")
        shared = []
        for entry in files:
            file_id = str(entry.get("id", ""))
            upload = self.uploads.get(file_id)
            if upload is None or upload["content"] is None:
                raise _ApiError("file_not_found")
            upload["shares"] += 1
            name, size = upload["name"], len(upload["content"])
            shared.append({"id": file_id, "name": name, "title": str(entry.get("title") or name), "size": size})
        message: dict[str, Any] = {
            "type": "message", "user": self.BOT_USER_ID, "bot_id": self.BOT_ID,
            "text": str(args.get("initial_comment") or ""), "ts": self._next_ts(), "files": shared,
        }
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        self.messages.setdefault(channel, []).append(message)
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shared]}

    def _m_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.assistant_status_error:
            raise _ApiError(self.assistant_status_error)
        self.statuses.append(dict(args))
        return {}

    # native streaming, suggested prompts, interactivity (Slack's AI-app surfaces) -----------------
    MAX_STREAM_TEXT = 12_000
    """``markdown_text`` limit of one ``chat.startStream`` / ``appendStream`` / ``stopStream`` call."""

    def _m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        """A streamed reply in a thread: outside a DM Slack needs to know whom it streams to."""
        if self.streaming_error:
            raise _ApiError(self.streaming_error)
        channel, thread_ts = str(args.get("channel") or ""), str(args.get("thread_ts") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if not thread_ts:
            raise _ApiError("invalid_arguments")  # peekbot always streams into the question's thread
        if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
            raise _ApiError("invalid_arguments")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message", "user": self.BOT_USER_ID, "bot_id": self.BOT_ID, "text": "", "ts": ts,
            "thread_ts": thread_ts, "streaming": True,
        }
        self._stream_into(message, args)
        self.messages.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": ts}

    def _m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._streaming(args)
        self._stream_into(message, args)
        return {"channel": channel, "ts": message["ts"]}

    def _m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        """Ends the stream: optional last text, then ``blocks`` rendered at the bottom; the message is final."""
        channel, message = self._streaming(args)
        self._stream_into(message, args)
        if args.get("blocks"):
            message["blocks"] = [*message.get("blocks", []), *_blocks(args["blocks"])]
        metadata = self._metadata(args.get("metadata"))
        if metadata is not None:
            message["metadata"] = metadata
        message["streaming"] = False
        return {"channel": channel, "ts": message["ts"], "message": dict(message)}

    def _streaming(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        channel = str(args.get("channel") or "")
        message = self._find(channel, str(args.get("ts") or ""))
        if message.get("bot_id") != self.BOT_ID or not message.get("streaming"):
            raise _ApiError("message_not_in_streaming_state")
        return channel, message

    def _stream_into(self, message: dict[str, Any], args: dict[str, Any]) -> None:
        """Append a call's ``markdown_text`` (or its ``chunks``: markdown text and blocks) to a streamed message."""
        text = str(args.get("markdown_text") or "")
        chunks = args.get("chunks") or []
        if isinstance(chunks, str):
            chunks = json.loads(chunks)
        if text and chunks:
            raise _ApiError("invalid_arguments")
        pieces = [text] if text else [str(c.get("text") or "") for c in chunks if c.get("type") == "markdown_text"]
        if sum(len(p) for p in pieces) > self.MAX_STREAM_TEXT:
            raise _ApiError("msg_too_long")
        message["text"] += "".join(pieces)
        for chunk in chunks:
            if chunk.get("type") == "blocks":
                message["blocks"] = [*message.get("blocks", []), *_blocks(chunk.get("blocks"))]

    def _m_assistant_threads_setSuggestedPrompts(self, args: dict[str, Any]) -> dict[str, Any]:
        """Prompts for a DM (agent view: no ``thread_ts``) or for one assistant thread; at most four."""
        prompts = args.get("prompts")
        if isinstance(prompts, str):
            prompts = json.loads(prompts)
        if not args.get("channel_id") or not isinstance(prompts, list) or not 0 < len(prompts) <= 4:
            raise _ApiError("invalid_arguments")
        if any(not isinstance(p, dict) or not p.get("title") or not p.get("message") for p in prompts):
            raise _ApiError("invalid_arguments")
        self.suggested_prompts.append(dict(args, prompts=prompts))
        return {}

    def app_home_opened(self, channel: str, *, user: str = "U0ALICE", tab: str = "messages") -> dict[str, Any]:
        """The event Slack sends when someone opens the app's DM (agent view) or Home tab."""
        return {"type": "app_home_opened", "user": user, "channel": channel, "tab": tab, "event_ts": self._next_ts()}

    def assistant_thread_started(self, channel: str, *, user: str = "U0ALICE") -> dict[str, Any]:
        """The event an app with the older assistant view gets when someone opens a new assistant thread."""
        thread_ts = self._next_ts()
        self.messages.setdefault(channel, []).append(
            {"type": "message", "user": self.BOT_USER_ID, "bot_id": self.BOT_ID, "text": "Hi!", "ts": thread_ts}
        )
        thread = {"user_id": user, "channel_id": channel, "thread_ts": thread_ts, "context": {}}
        return {"type": "assistant_thread_started", "assistant_thread": thread, "event_ts": self._next_ts()}

    async def send_interactive(self, payload: dict[str, Any]) -> str:
        """Deliver an ``interactive`` envelope (button click, shortcut); returns its envelope id. Not redelivered."""
        payload = {"token": "fake-verification-token", "api_app_id": self.APP_ID, "is_enterprise_install": False,
                   "team": {"id": self.TEAM_ID, "domain": "fake"}, **payload}
        return await self._send_envelope("interactive", payload, retry_attempt=0, accepts_response_payload=False)

    async def click(
        self, channel: str, message_ts: str, action_id: str, value: str, *, user: str = "U0ALICE",
        kind: str = "button", user_team: str | None = None, ephemeral_in: str | None = None,
    ) -> str:
        """A person clicks a button (or a feedback button: ``kind="feedback_buttons"``) on a bot message, or on an
        ephemeral message the bot showed them in the thread ``ephemeral_in`` (``message_ts`` is then its own)."""
        message = {"ts": message_ts, "thread_ts": ephemeral_in} if ephemeral_in else self._find(channel, message_ts)
        rid = uuid.uuid4().hex[:12]
        container = {"type": "message", "message_ts": message_ts, "channel_id": channel,
                     "is_ephemeral": bool(ephemeral_in)}
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        action = {"type": kind, "action_id": action_id, "block_id": "b", "value": value, "action_ts": self._next_ts()}
        return await self.send_interactive({
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": user_team or self.TEAM_ID},
            "channel": {"id": channel, "name": "directmessage" if channel.startswith("D") else "general"},
            "container": container,
            "message": dict(message),
            "actions": [action],
            "response_url": f"{self.url}/commands/{rid}",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:8]}",
        })

    async def message_shortcut(
        self, channel: str, message_ts: str, callback_id: str, *, user: str = "U0ALICE", user_team: str | None = None
    ) -> str:
        """A person picks the app's message shortcut on a message (``message_action``)."""
        message = self._find(channel, message_ts)
        rid = uuid.uuid4().hex[:12]
        return await self.send_interactive({
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:8]}",
            "response_url": f"{self.url}/commands/{rid}",
            "action_ts": self._next_ts(),
            "message_ts": message_ts,
            "user": {"id": user, "name": user.lower(), "team_id": user_team or self.TEAM_ID},
            "channel": {"id": channel, "name": "directmessage" if channel.startswith("D") else "general"},
            "message": {**message, "type": "message"},
        })

    # internals: files and response_url -----------------------------------------------------------
    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["key"].rsplit("-", 1)[-1]
        file = self._files.get(file_id)
        authorized = request.headers.get("Authorization") == f"Bearer {self.BOT_TOKEN}"
        served = file is not None and authorized and not file.denied
        self.downloads.append((file_id, served))
        if file is not None and file.redirect is not None:
            raise web.HTTPFound(file.redirect)
        if not served or file is None:
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=file.content, content_type=file.info["mimetype"])

    async def _command_response(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.command_responses.append({"rid": request.match_info["rid"], **body})
        return web.Response(text="ok")


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Blocks as a call carries them (a JSON string in form posts, a list in JSON posts)."""
    if not value:
        return []
    blocks = json.loads(value) if isinstance(value, str) else value
    if not isinstance(blocks, list):
        raise _ApiError("invalid_blocks")
    return [dict(b) for b in blocks]


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def _after(ts: str, than: str, inclusive: bool) -> bool:
    return float(ts) >= float(than) if inclusive else float(ts) > float(than)


def slack_environment(
    fake: FakeSlack, *, fail_fast: bool = True, fast_watchdog: bool = False, **overrides: str
) -> dict[str, str]:
    """``SLACK_*`` variables that point the adapter at ``fake`` with test-sized intervals: edits at most every 0.05 s,
    no ``auth.test`` health pings. ``fail_fast``: one attempt to start (a broken set-up fails at once);
    ``fast_watchdog``: the connection is checked every 0.2 s."""
    env = {
        "SLACK_BOT_TOKEN": fake.BOT_TOKEN,
        "SLACK_APP_TOKEN": fake.APP_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "SLACK_UPDATE_INTERVAL_S": "0.05",
        "SLACK_AUTH_CHECK_INTERVAL_S": "0",
    }
    if fail_fast:
        env["SLACK_STARTUP_ATTEMPTS"] = "1"
    if fast_watchdog:
        env["SLACK_WATCHDOG_INTERVAL_S"] = "0.2"
    env.update(overrides)
    return env
