"""The base of the loopback fake servers: an aiohttp app on 127.0.0.1 at a free port, its routes from a table.

    class FakeThing(LoopbackServer):
        def routes(self) -> list[web.RouteDef]:
            return [web.get("/things/{id}", self._thing), web.post("/things", self._add)]

    async with FakeThing() as server:
        ...  # point the client at server.url

A subclass that holds more (connections, tasks) extends ``stop`` and calls ``super().stop()`` last.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from aiohttp import web
from aiohttp.typedefs import Middleware


class LoopbackServer:
    """Starts with ``start`` (or ``async with``), stops with ``stop``; ``url`` is where clients connect."""

    runner_options: ClassVar[Mapping[str, Any]] = {"access_log": None, "shutdown_timeout": 2.0}
    """Keyword arguments of ``web.AppRunner`` (a subclass may override them). Stopping waits at most
    ``shutdown_timeout`` seconds for handlers still running (an open WebSocket or event stream), not aiohttp's 60."""
    ssl_context: ssl.SSLContext | None = None
    """Serve HTTPS with this context (plain HTTP when ``None``)."""
    port: int = 0
    """The bound port (0 until started)."""
    requested_port: int = 0
    """The port to bind: 0 takes a free one."""
    client_max_size: int = 1024**2
    """The largest request body accepted, in bytes (aiohttp's default: 1 MiB)."""
    _runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        """The server's routes (``web.get``, ``web.post``, ``web.route``, …)."""
        raise NotImplementedError

    def middlewares(self) -> list[Middleware]:
        return []

    async def start(self) -> None:
        app = web.Application(middlewares=self.middlewares(), client_max_size=self.client_max_size)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, **self.runner_options)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, "127.0.0.1", self.requested_port, ssl_context=self.ssl_context).start()
        except BaseException:  # the port is taken: leave nothing running
            await self.stop()
            raise
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"
