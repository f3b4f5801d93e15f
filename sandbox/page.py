"""The sandbox's web page and the API it uses (documented in the README, "Sandbox"), on 127.0.0.1 only.

    GET  /                     the page (sandbox/web/: index.html, app.js, style.css)
    GET  /api/channels         people, channels, the bot, the bot's status page
    GET  /api/messages?channel=C0GENERAL
    POST /api/messages         multipart (or JSON): user, channel, text, thread_ts?, file (repeatable)
    POST /api/commands         JSON (or form): user, channel, text ("status" or "/peekbot status")
    POST /api/actions          JSON (or form): user, channel, ts, action_id, value, kind (a button of a message;
                               ``"ephemeral": true`` and no ts for a button of a message only that person sees)
    POST /api/faults/<name>    kill-socket, go-silent, disconnect, redeliver, rate-limit-update
    GET  /api/socket           the Socket Mode side: connections, envelopes acked, lost, redelivered
    GET  /api/events           server-sent events: message, deleted, ephemeral, status, socket (sandbox/feed.py)
    GET  /api/files/<id>       a posted file, for previews

Bad input gets HTTP 4xx with ``{"error": "<a sentence for the person>"}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_sse import sse_response

from sandbox.feed import Feed
from sandbox.loopback import LoopbackServer
from sandbox.workspace import CHANNELS, FAULTS, PEOPLE, SandboxError, Upload, Workspace

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
ACTION_FIELDS = ("user", "channel", "ts", "action_id", "value", "kind")
"""What ``POST /api/actions`` takes: who presses which button (as ``buttons`` in a message) on which message
(besides ``ephemeral``)."""


class PageServer(LoopbackServer):
    """Serves the page and its API at ``url`` (``port`` 0: a free port)."""

    client_max_size = MAX_UPLOAD_BYTES

    def __init__(self, workspace: Workspace, feed: Feed, *, status_url: str | None = None, port: int = 0) -> None:
        self.workspace = workspace
        self.feed = feed
        self.status_url = status_url
        """The bot's status page (None until the bot runs)."""
        self.requested_port = port

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._index),
            web.static("/static", WEB_DIR),  # type: ignore[list-item]
            web.get("/api/channels", self._channels),
            web.get("/api/messages", self._messages),
            web.post("/api/messages", self._post_message),
            web.post("/api/commands", self._command),
            web.post("/api/actions", self._action),
            web.post("/api/faults/{name}", self._fault),
            web.get("/api/socket", self._socket),
            web.get("/api/events", self._events),
            web.get("/api/files/{id}", self._file),
        ]

    def middlewares(self) -> list[Middleware]:
        return [_polite_errors]

    async def _index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def _channels(self, _request: web.Request) -> web.Response:
        slack = self.workspace.slack
        return web.json_response(
            {
                "people": [p.json() for p in PEOPLE],
                "channels": [c.json() for c in CHANNELS],
                "bot": {"id": slack.BOT_USER_ID, "name": "peekbot"},
                "faults": list(FAULTS),
                "status_url": self.status_url,
            }
        )

    async def _messages(self, request: web.Request) -> web.Response:
        return web.json_response({"messages": self.workspace.history(request.query.get("channel", ""))})

    async def _post_message(self, request: web.Request) -> web.Response:
        fields, uploads = await _form(request)
        view = await self.workspace.post(
            str(fields.get("user", "")),
            str(fields.get("channel", "")),
            str(fields.get("text", "")),
            uploads,
            thread_ts=str(fields.get("thread_ts") or "") or None,
        )
        return web.json_response({"message": view})

    async def _command(self, request: web.Request) -> web.Response:
        fields, _ = await _form(request)
        envelope_id = await self.workspace.command(
            str(fields.get("user", "")), str(fields.get("channel", "")), str(fields.get("text", ""))
        )
        return web.json_response({"envelope_id": envelope_id})

    async def _action(self, request: web.Request) -> web.Response:
        fields, _ = await _form(request)
        user, channel, ts, action_id, value, kind = (str(fields.get(name, "")) for name in ACTION_FIELDS)
        if fields.get("ephemeral"):
            envelope_id = await self.workspace.press_ephemeral(user, channel, action_id, value, kind)
        else:
            envelope_id = await self.workspace.press(user, channel, ts, action_id, value, kind)
        return web.json_response({"envelope_id": envelope_id})

    async def _fault(self, request: web.Request) -> web.Response:
        return web.json_response({"done": await self.workspace.inject(request.match_info["name"])})

    async def _socket(self, _request: web.Request) -> web.Response:
        return web.json_response(self.workspace.socket_state())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        async with sse_response(request) as stream:
            async for name, data in self.feed.subscribe():
                await stream.send(json.dumps(data), event=name)
        return stream

    async def _file(self, request: web.Request) -> web.Response:
        upload = self.workspace.files.get(request.match_info["id"])
        if upload is None:
            raise SandboxError("That file is not here (any more).", status=404)
        return web.Response(body=upload.content, content_type=upload.mimetype)


async def _form(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """The fields of a JSON, urlencoded or multipart body, and its files."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise SandboxError("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise SandboxError("Send a JSON object.")
        return body, []
    fields: dict[str, Any] = {}
    uploads: list[Upload] = []
    for key, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            uploads.append(Upload.of(value.filename or "file", value.file.read(), value.content_type))
        else:
            fields[key] = value
    return fields, uploads


@web.middleware
async def _polite_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SandboxError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            {"error": f"That file is too large for the sandbox (at most {MAX_UPLOAD_BYTES // 2**20} MiB)."},
            status=413,
        )
