"""The health and metrics HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``, ``/status``.

Bound to ``PEEKBOT_HTTP_HOST`` (127.0.0.1 by default) and ``PEEKBOT_HTTP_PORT``; the composition root
(``bot/wiring.py``) leaves it out when that port is 0. Constructed directly, ``port=0`` binds a free port;
:attr:`StatusServer.port` tells which.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.errors import StartupError
from bot.metrics import AppMetrics
from bot.report import collect_status
from bot.status_page import render_status_page

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """The sentence for an address the server cannot listen on, naming the settings that choose it."""
    return (
        f"cannot serve health and metrics on {host}:{port} ({exc.strerror or exc}). Another program (or another "
        "peekbot) may be using it: stop it, choose a free PEEKBOT_HTTP_PORT (0 turns the server off), or set "
        "PEEKBOT_HTTP_HOST to an address of this machine."
    )


def address_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (checked by binding it for a moment), or None.

    ``peekbot run`` asks before it loads the model, so a taken port is reported in a second, not after minutes.
    """
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
                probe.bind(address)
    except OSError as exc:
        return cannot_listen(host, port, exc)
    return None


class StatusServer:
    """A :class:`bot.types.Service` serving the application's health, readiness, metrics and status page."""

    name = "http"

    def __init__(self, app: Application, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self.metrics = AppMetrics(app)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The bound port while running."""

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the HTTP server is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def web_app(self) -> web.Application:
        web_app = web.Application()
        web_app.add_routes([
            web.get("/", self._index),
            web.get("/healthz", self._healthz),
            web.get("/readyz", self._readyz),
            web.get("/metrics", self._metrics),
            web.get("/status", self._status),
        ])
        return web_app

    async def start(self) -> None:
        runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(cannot_listen(self._host, self._requested_port, exc)) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        logger.info("HTTP status server on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None

    # handlers ---------------------------------------------------------------------------------
    async def _index(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/status")

    async def _healthz(self, _request: web.Request) -> web.Response:
        """The process serves HTTP and its event loop turns: a scheduled callback runs (its delay is reported).

        503 once the process must be restarted (the model's worker hung for ``PEEKBOT_ENGINE_STUCK_EXIT_S``): it
        is then draining and about to exit, and a liveness probe that sees this restarts it in any case.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(0)
        body: dict[str, object] = {
            "status": "ok" if self._app.unhealthy is None else "failing",
            "uptime_s": round(time.time() - self._app.started_at, 3),
            "loop_turn_ms": round((loop.time() - started) * 1000, 3),
        }
        if self._app.unhealthy is not None:
            body["reason"] = self._app.unhealthy
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def _readyz(self, _request: web.Request) -> web.Response:
        report = await collect_status(self._app)
        reasons = report.not_ready_reasons()
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "engine": {"ready": report.engine.ready, "alive": report.engine_alive},
            "adapters": {a.name: a.health.connected for a in report.adapters},
        }
        return web.json_response(body, status=503 if reasons else 200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, _request: web.Request) -> web.Response:
        report = await collect_status(self._app)
        maintenance = self._app.maintenance
        if maintenance is not None:
            window = maintenance.history_s
            snapshots = maintenance.snapshots_since(report.generated_at - window)
        else:
            window, snapshots = 3600.0, []
        html = render_status_page(report, snapshots, window, ratings=await self._app.ratings.recent_days())
        return web.Response(text=html, content_type="text/html", charset="utf-8")
