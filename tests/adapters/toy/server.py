"""A loopback server of "Toy chat", a made-up platform: JSON over a WebSocket in, JSON over HTTP out.

Protocol (every request carries ``Authorization: Bearer <token>``):

- ``GET /events`` opens the WebSocket. The server sends ``{"delivery": D, "event": E}``; the bot answers
  ``{"ack": D, "ok": true}`` once it took the event, ``"ok": false`` to have it sent again. A delivery not acked
  ``ok`` within ``ack_timeout_s`` is sent again (at most ``max_resends`` times). ``E`` is
  ``{"id", "type": "message", "message": {"id", "chat", "user", "text"}}`` or
  ``{"id", "type": "deleted", "message": {"id", "chat"}}``.
- ``POST /messages`` ``{"chat", "reply_to", "text"}`` → ``{"id"}``; ``PUT /messages/{id}`` ``{"text"}``;
  ``DELETE /messages/{id}``. A refused call answers 429 ``{"error": "slow_down"}`` with ``Retry-After`` (seconds),
  an unknown message 404 ``{"error": "not_found"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

TOKEN = "toy-secret"


@dataclass
class ToyMessage:
    id: str
    chat: str
    text: str
    user: str = ""
    reply_to: str = ""
    deleted: bool = False


@dataclass
class Ack:
    delivery: str
    ok: bool
    at: float = field(default_factory=time.monotonic)


class ToyServer:
    """``async with ToyServer() as toy:`` — ``toy.url`` is where the adapter connects."""

    def __init__(self, *, ack_timeout_s: float = 0.5, max_resends: int = 5) -> None:
        self.ack_timeout_s = ack_timeout_s
        self.max_resends = max_resends
        self.messages: dict[str, ToyMessage] = {}
        self.acks: list[Ack] = []
        self.refusals = 0
        self._refuse: dict[str, list[float]] = {}
        self._acked: dict[str, asyncio.Event] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: TestServer | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/events", self._events)
        app.router.add_post("/messages", self._post)
        app.router.add_put("/messages/{id}", self._edit)
        app.router.add_delete("/messages/{id}", self._delete)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ws in self._sockets:
            await ws.close()
        if self._server is not None:
            await self._server.close()

    # what a person does ------------------------------------------------------------------------------
    def say(self, text: str, *, chat: str = "alice", user: str = "alice") -> dict[str, Any]:
        """A person writes to the bot; returns the event (deliver it with ``deliver``)."""
        message = ToyMessage(f"m{next(self._ids)}", chat, text, user=user)
        self.messages[message.id] = message
        fields = {"id": message.id, "chat": chat, "user": user, "text": text}
        return {"id": f"ev-{uuid.uuid4().hex[:8]}", "type": "message", "message": fields}

    def delete(self, message_id: str) -> dict[str, Any]:
        """Its author deletes a message; returns the ``deleted`` event."""
        message = self.messages[message_id]
        message.deleted = True
        fields = {"id": message_id, "chat": message.chat}
        return {"id": f"ev-{uuid.uuid4().hex[:8]}", "type": "deleted", "message": fields}

    async def deliver(self, event: dict[str, Any]) -> str:
        """Send ``event`` to the bot until it is acked ``ok``; returns the delivery id."""
        delivery = uuid.uuid4().hex[:12]
        self._acked[delivery] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._send_until_acked(delivery, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)
        return delivery

    # what tests read -------------------------------------------------------------------------------
    def replies_to(self, message_id: str) -> list[ToyMessage]:
        return [m for m in self.messages.values() if m.reply_to == message_id and not m.deleted]

    def refuse(self, method: str, *, times: int = 1, retry_after_s: float = 0.2) -> None:
        """The next ``times`` calls with this HTTP method answer 429."""
        self._refuse.setdefault(method.upper(), []).extend([retry_after_s] * times)

    # server side -----------------------------------------------------------------------------------
    async def _send_until_acked(self, delivery: str, event: dict[str, Any]) -> None:
        frame = json.dumps({"delivery": delivery, "event": event})
        for _ in range(self.max_resends + 1):
            for ws in [s for s in self._sockets if not s.closed][-1:]:
                await ws.send_str(frame)
            try:
                await asyncio.wait_for(self._acked[delivery].wait(), self.ack_timeout_s)
                return
            except TimeoutError:
                continue

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "not_authed"}, status=401)
        waits = self._refuse.get(request.method)
        if waits and request.path.startswith("/messages"):
            self.refusals += 1
            return web.json_response({"error": "slow_down"}, status=429, headers={"Retry-After": f"{waits.pop(0)}"})
        return await handler(request)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                answer = json.loads(frame.data)
                ack = Ack(str(answer.get("ack")), answer.get("ok") is True)
                self.acks.append(ack)
                if ack.ok and ack.delivery in self._acked:
                    self._acked[ack.delivery].set()
        return ws

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = ToyMessage(
            f"b{next(self._ids)}", str(body["chat"]), str(body["text"]), reply_to=str(body.get("reply_to") or "")
        )
        self.messages[message.id] = message
        return web.json_response({"id": message.id})

    async def _edit(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["id"])
        if message is None or message.deleted:
            return web.json_response({"error": "not_found"}, status=404)
        message.text = str((await request.json())["text"])
        return web.json_response({"id": message.id})

    async def _delete(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["id"])
        if message is None:
            return web.json_response({"error": "not_found"}, status=404)
        message.deleted = True
        return web.json_response({})
