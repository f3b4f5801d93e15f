"""The Socket Mode connection and its watchdog: one owner for heartbeat checks and reconnects.

slack_sdk's aiohttp client pings and notices dead sessions, but its own reconnect path can end in a broken
state (python-slack-sdk #1446, #1922; bolt-python #1529). Here every reconnect — asked for by slack_sdk
(stale ping, CLOSE frame, ``disconnect`` message), by the watchdog, or by an admin — goes through
``SocketModeConnection``, which opens a *fresh* client, waits for its ``hello``, then retires the old one
(make before break). Failures back off with jitter; the backoff starts over after a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMessage
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.settings import SlackSettings
from bot.types import AdapterHealth

logger = logging.getLogger(__name__)

AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
    }
)
ENVELOPE_TYPES = frozenset({"events_api", "slash_commands", "interactive"})
LOCAL_CHECK_S = 0.25
"""Between its full checks the watchdog looks this often at what it can see locally: a socket that was reset
(slack_sdk notices only at its next ping, up to a ping interval later) and a connection silent for too long."""


class SlackStartupError(RuntimeError):
    """Slack refused to let peekbot connect (bad token, missing scope): retrying will not help."""


class OwnedSocketModeClient(SocketModeClient):
    """slack_sdk's aiohttp Socket Mode client, except that it never reconnects by itself.

    Where slack_sdk would call ``connect_to_new_endpoint`` (stale ping, CLOSE frame, ``disconnect``
    message) it tells its owner instead, who opens a fresh client.
    """

    def __init__(self, *, on_reconnect_wanted: Callable[[OwnedSocketModeClient, str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_reconnect_wanted = on_reconnect_wanted

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        if not self.closed:
            self._on_reconnect_wanted(self, "slack_sdk asked (disconnect message)" if force else "slack_sdk asked")


class _BoltHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler bound to a client we built (its own constructor would build another)."""

    def __init__(self, app: AsyncApp, client: OwnedSocketModeClient) -> None:
        self.app = app
        self.app_token = client.app_token
        self.client = client
        client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]


@dataclass(eq=False)
class _Session:
    client: OwnedSocketModeClient
    opened_at: float = field(default_factory=time.time)
    last_traffic_at: float = 0.0
    hello: asyncio.Event = field(default_factory=asyncio.Event)

    def last_alive_at(self) -> float:
        pong = self.client.last_ping_pong_time or 0.0
        return max(self.opened_at, self.last_traffic_at, pong)


def _error_code(exc: SlackApiError) -> str:
    try:
        return str(exc.response.get("error", ""))
    except Exception:
        return ""


class SocketModeConnection:
    """Opens, watches and renews the Socket Mode connection for one Bolt app."""

    def __init__(self, app: AsyncApp, *, app_token: str, web: AsyncWebClient, settings: SlackSettings) -> None:
        self._app = app
        self._app_token = app_token
        self._web = web
        self._settings = settings
        self._session: _Session | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._reconnect_lock = asyncio.Lock()
        self._wanted: tuple[_Session, str] | None = None
        self._wake = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._retiring: dict[_Session, asyncio.Task[None]] = {}
        self._last_auth_check = 0.0
        self.connected_since: float | None = None
        self.reconnects = 0
        self.last_event_at: float | None = None

    @property
    def stale_after_s(self) -> float:
        return self._settings.stale_after_pings * self._settings.ping_interval_s

    # lifecycle -----------------------------------------------------------------------------------
    async def open(self) -> None:
        """First connection. Raises SlackStartupError when Slack refuses the app token."""
        self._closing = False
        self._closed.clear()
        attempts = max(self._settings.startup_attempts, 1)
        last_error: BaseException | None = None
        for attempt in range(attempts):
            try:
                self._session = await self._open_session()
                break
            except SlackApiError as exc:
                code = _error_code(exc)
                if code in AUTH_ERRORS:
                    raise SlackStartupError(
                        f"Slack refused SLACK_APP_TOKEN ({code}). It must be an app-level token (xapp-…) with the "
                        "connections:write scope, and Socket Mode must be on: see deploy/slack/README.md."
                    ) from exc
                last_error = exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last_error = exc
            if attempt + 1 < attempts:
                delay = self._backoff(attempt)
                logger.warning("slack: connecting failed (%s); retrying in %.1f s", last_error, delay)
                await asyncio.sleep(delay)
        else:
            raise SlackStartupError(f"Could not open a Socket Mode connection to Slack: {last_error}") from last_error
        self.connected_since = time.time()
        self._last_auth_check = time.monotonic()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="slack-watchdog")
        logger.info("slack: Socket Mode connected")

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        async with self._reconnect_lock:
            session, self._session = self._session, None
        retiring = list(self._retiring.items())
        self._retiring.clear()
        for _, task in retiring:
            task.cancel()
        await asyncio.gather(*(task for _, task in retiring), return_exceptions=True)
        for old, _ in retiring:
            await self._dispose(old)
        if session is not None:
            await self._dispose(session)
        self.connected_since = None

    async def reconnect(self, reason: str = "requested") -> None:
        """Open a fresh connection now (admin command, scheduler watchdog)."""
        await self._replace_session(reason, only_if=None)

    # health --------------------------------------------------------------------------------------
    async def is_connected(self) -> bool:
        session = self._session
        if session is None or self._closing or not session.hello.is_set():
            return False
        return bool(await session.client.is_connected())

    async def health(self) -> AdapterHealth:
        now = time.time()
        session = self._session
        pong = session.client.last_ping_pong_time if session is not None else None
        connected = await self.is_connected()
        return AdapterHealth(
            connected=connected,
            connected_since=self.connected_since if connected else None,
            reconnects=self.reconnects,
            last_event_age_s=None if self.last_event_at is None else now - self.last_event_at,
            last_pong_age_s=None if pong is None else max(now - pong, 0.0),
            detail="Socket Mode" if connected else "Socket Mode: reconnecting",
        )

    # sessions ------------------------------------------------------------------------------------
    async def _open_session(self) -> _Session:
        client = OwnedSocketModeClient(
            app_token=self._app_token,
            web_client=self._web,
            ping_interval=self._settings.ping_interval_s,
            logger=logging.getLogger("slack_sdk.socket_mode.aiohttp"),
            on_reconnect_wanted=self._on_reconnect_wanted,
        )
        session = _Session(client)
        client.on_message_listeners.append(lambda message: self._on_ws_message(session, message))
        _BoltHandler(self._app, client)
        timeout = self._settings.connect_timeout_s
        try:
            client.wss_uri = await client.issue_new_wss_url()
            await asyncio.wait_for(client.connect(), timeout)
            await asyncio.wait_for(session.hello.wait(), timeout)
        except BaseException:
            await self._dispose(session)
            raise
        session.opened_at = time.time()
        return session

    async def _on_ws_message(self, session: _Session, message: WSMessage) -> None:
        now = time.time()
        session.last_traffic_at = now
        data = message.data
        if not isinstance(data, str) or not data.startswith("{"):
            return
        try:
            payload = json.loads(data)
        except ValueError:
            return
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "hello":
            session.hello.set()
        elif kind in ENVELOPE_TYPES:
            self.last_event_at = now
        elif kind == "disconnect":
            logger.info("slack: server sent disconnect (%s)", payload.get("reason"))

    def _on_reconnect_wanted(self, client: OwnedSocketModeClient, reason: str) -> None:
        session = self._session
        if self._closing or session is None or session.client is not client:
            return  # a retired client's last words
        self._wanted = (session, reason)
        self._wake.set()

    async def _replace_session(self, reason: str, *, only_if: _Session | None) -> None:
        async with self._reconnect_lock:
            if self._closing or (only_if is not None and only_if is not self._session):
                return
            logger.warning("slack: reconnecting: %s", reason)
            attempt = 0
            while True:
                try:
                    fresh = await self._open_session()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    code = _error_code(exc) if isinstance(exc, SlackApiError) else ""
                    delay = self._backoff(attempt)
                    attempt += 1
                    log = logger.error if code in AUTH_ERRORS else logger.warning
                    log("slack: reconnect attempt %d failed (%s); next in %.1f s", attempt, code or exc, delay)
                    await self._pause(delay)
                    if self._closing:
                        return
            old, self._session = self._session, fresh
            self.reconnects += 1
            self.connected_since = time.time()
            self._wanted = None
            logger.info("slack: reconnected (%d reconnects so far)", self.reconnects)
            if old is not None:
                self._retiring[old] = asyncio.get_running_loop().create_task(self._retire(old))

    async def _retire(self, session: _Session) -> None:
        """Let the old connection finish acking what it already received, then close it."""
        client = session.client
        client.auto_reconnect_enabled = False
        if client.current_session_monitor is not None:
            client.current_session_monitor.cancel()  # its pings and verdicts no longer matter
        try:
            await asyncio.sleep(min(1.0, self._settings.ping_interval_s))
            await self._dispose(session)
        finally:
            self._retiring.pop(session, None)

    @staticmethod
    async def _dispose(session: _Session) -> None:
        client = session.client
        client.closed = True
        client.auto_reconnect_enabled = False
        for task in (client.current_session_monitor, client.message_receiver, client.message_processor):
            if task is not None:
                task.cancel()
        websocket = client.current_session
        if websocket is not None and not websocket.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), timeout=2.0)
        with contextlib.suppress(Exception):
            await client.aiohttp_client_session.close()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the connection is being closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._settings.reconnect_max_s, self._settings.reconnect_initial_s * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # watchdog ------------------------------------------------------------------------------------
    async def _watch(self) -> None:
        interval = self._settings.watchdog_interval_s
        next_full_check = time.monotonic() + interval
        while not self._closing:
            timeout = min(LOCAL_CHECK_S, max(next_full_check - time.monotonic(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            if self._closing:
                return
            try:
                wanted, self._wanted = self._wanted, None
                if wanted is not None:
                    await self._replace_session(wanted[1], only_if=wanted[0])
                    continue
                session = self._session
                if session is None:
                    reason: str | None = "no connection"
                elif time.monotonic() >= next_full_check:
                    next_full_check = time.monotonic() + interval
                    reason = await self._diagnose(session)
                else:
                    reason = self._local_diagnosis(session)
                if reason:
                    await self._replace_session(reason, only_if=session)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("slack: watchdog check failed")

    def _local_diagnosis(self, session: _Session) -> str | None:
        """What can be seen without the network: a reset socket, or a connection silent for too long."""
        websocket = session.client.current_session
        if websocket is None or websocket.closed:
            return "the socket was closed"
        silent_for = time.time() - session.last_alive_at()
        if silent_for > self.stale_after_s:
            return f"no traffic or pong for {silent_for:.1f} s"
        return None

    async def _diagnose(self, session: _Session) -> str | None:
        """Why the session needs replacing, or None when it looks healthy."""
        local = self._local_diagnosis(session)
        if local:
            return local
        if not await session.client.is_connected():
            return "slack_sdk reports the session is down"
        every = self._settings.auth_check_interval_s
        if every > 0 and time.monotonic() - self._last_auth_check >= every:
            self._last_auth_check = time.monotonic()
            try:
                await asyncio.wait_for(self._web.auth_test(), timeout=self._settings.rest_timeout_s)
            except Exception as exc:
                return f"auth.test failed: {exc}"
        return None
