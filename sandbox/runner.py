"""``peekbot sandbox``: the real bot against an embedded Slack, and a page to use it from a browser.

In one process: the embedded Slack server (:class:`~sandbox.workspace.SandboxSlack`), the page and its API
(:class:`~sandbox.page.PageServer`), and the application that ``bot/wiring.py`` builds with the unchanged Slack
adapter pointed at the embedded server over Socket Mode, plus the status server on a free port. The sandbox's state
(the SQLite store) lives in a temporary directory: every start is a fresh workspace.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self

from adapters.slack.plugin import SLACK
from adapters.slack.settings import SlackSettings
from bot.http import StatusServer
from bot.store.sqlite import SQLiteStore
from bot.wiring import build_adapters, build_application
from sandbox import DEFAULT_PORT
from sandbox.feed import Feed
from sandbox.page import PageServer
from sandbox.workspace import PEOPLE, SandboxSlack, Workspace

if TYPE_CHECKING:
    from bot.app import Application
    from bot.engine import Engine
    from bot.settings import Settings

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
"""A sandbox stops quickly: answers in flight get this long at most."""
SLACK_STOP_S = 10.0
"""How long stopping waits for the embedded Slack (its connections and handlers) before leaving it."""


def configure(settings: Settings, slack: SandboxSlack) -> None:
    """Point the Slack adapter at ``slack`` with intervals a person can watch (edits every 0.3 s, a silent connection
    noticed within seconds), list the sandbox's admin in ``PEEKBOT_ADMINS`` and serve no fixed status port."""
    settings.use_section(
        SlackSettings(
            bot_token=slack.BOT_TOKEN,
            app_token=slack.APP_TOKEN,
            api_url=slack.api_url,
            update_interval_s=0.3,
            ping_interval_s=2.0,
            watchdog_interval_s=1.0,
            auth_check_interval_s=0,
            startup_attempts=3,
        )
    )
    core = settings.core
    core.admins = [*core.admins, *(f"slack:{p.id}" for p in PEOPLE if p.admin)]
    core.http_port = 0  # the sandbox adds its own status server on a free port (a running bot may hold 8080)
    core.drain_timeout_s = min(core.drain_timeout_s, DRAIN_TIMEOUT_S)


class Sandbox:
    """``async with Sandbox(settings, port=N) as sandbox:`` — ``sandbox.url`` is the page."""

    def __init__(self, settings: Settings, *, port: int = DEFAULT_PORT, engine: Engine | None = None) -> None:
        self.settings = settings
        self.slack = SandboxSlack()
        self.workspace = Workspace(self.slack)
        self.feed = Feed(self.workspace)
        self.page = PageServer(self.workspace, self.feed, status_url=None, port=port)
        self.app: Application | None = None
        self._engine = engine
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return self.page.url

    async def start(self) -> None:
        """The Slack server and the page first (a taken port fails before the model loads), then the bot."""
        try:
            await self.slack.start()
            await self.feed.start()
            await self.page.start()
            configure(self.settings, self.slack)
            self._state = tempfile.TemporaryDirectory(prefix="peekbot-sandbox-")
            app = build_application(
                self.settings,
                engine=self._engine,
                adapters=build_adapters(self.settings, [SLACK]),
                store=SQLiteStore(Path(self._state.name) / "sandbox.db"),
                resume_jobs=False,
            )
            status = StatusServer(app, port=0)
            app.services.append(status)
            await app.start()
            self.app = app
            self.page.status_url = f"{status.url}/status"
            logger.info("sandbox: page on %s, status on %s", self.page.url, status.url)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.feed.stop()
        await self.page.stop()
        app, self.app = self.app, None
        if app is not None:
            await app.stop()
        stopping = asyncio.ensure_future(self.slack.stop())
        _, late = await asyncio.wait({stopping}, timeout=SLACK_STOP_S)
        if late:  # Ctrl-C must end the sandbox even if a connection of the embedded Slack will not close
            stopping.cancel()
            logger.warning("sandbox: the embedded Slack did not stop within %.0f s; leaving it", SLACK_STOP_S)
        state, self._state = self._state, None
        if state is not None:
            state.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
