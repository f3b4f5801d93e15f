"""The Feishu/Lark long connection, owned in asyncio.

Endpoint discovery, pbbp2 protobuf frames (lark-oapi's ``Frame``), application-level ping/pong with a pong
timeout, fragment reassembly and reconnects with backoff and jitter. lark-oapi's own ``ws.Client`` is not
used: it blocks, cannot be stopped and never notices a connection whose pongs stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp
from lark_oapi.ws import const as wire
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

from adapters.feishu.settings import FeishuSettings

logger = logging.getLogger(__name__)

CONTROL = 0
DATA = 1
RETRYABLE_DISCOVERY_CODES = frozenset({wire.SYSTEM_BUSY, wire.INTERNAL_ERROR})


class FatalConnectionError(RuntimeError):
    """Retrying cannot help (credentials rejected, too many connections); the message says what to do."""


class TransientConnectionError(Exception):
    """Worth another attempt after a pause."""


def endpoint_problem(url: str, domain: str) -> str | None:
    """Why the long-connection URL that discovery returned must not be used, or None.

    Nothing secret is sent there (no header nor cookie: the URL carries the server's own one-time ticket), but it
    must be a WebSocket URL, and encrypted (``wss``) unless ``FEISHU_DOMAIN`` itself is plain http (a test server).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("ws", "wss") or not urlsplit(url).hostname:
        return "endpoint discovery returned something that is not a WebSocket URL"
    if scheme == "ws" and urlsplit(domain).scheme.lower() != "http":
        return "endpoint discovery returned an unencrypted (ws://) URL for an https FEISHU_DOMAIN; not connecting"
    return None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The server's connection advice (seconds), from discovery and from pong payloads."""

    ping_interval_s: float = 120.0
    reconnect_count: int = -1
    reconnect_interval_s: float = 120.0
    reconnect_nonce_s: float = 30.0

    def updated(self, raw: Mapping[str, Any] | None) -> ClientConfig:
        """A copy with the fields ``raw`` (``PingInterval`` …) sets; unknown or bad values are ignored."""
        if not raw:
            return self
        changes: dict[str, Any] = {}
        for key, attr, kind in (
            ("PingInterval", "ping_interval_s", float),
            ("ReconnectCount", "reconnect_count", int),
            ("ReconnectInterval", "reconnect_interval_s", float),
            ("ReconnectNonce", "reconnect_nonce_s", float),
        ):
            value = raw.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                changes[attr] = kind(value)
        if changes.get("ping_interval_s", 1.0) <= 0:
            del changes["ping_interval_s"]
        return replace(self, **changes)


class Ack(Protocol):
    """Answers a data frame on the connection it came from: ``{"code": code}``, plus ``data`` (a callback's JSON
    response, e.g. a card action's toast) base64-encoded as lark-oapi's client sends it. False if the connection is
    gone."""

    def __call__(self, code: int, data: bytes | None = None) -> Awaitable[bool]: ...


@dataclass(slots=True)
class InboundFrame:
    """One complete data frame (fragments joined): an ``event``, or a ``card`` callback."""

    kind: str
    payload: bytes
    transport_id: str
    trace_id: str
    ack: Ack


@dataclass(slots=True)
class _Partial:
    parts: list[bytes | None]
    expires_at: float


@dataclass(slots=True)
class FragmentBuffer:
    """Joins ``sum`` > 1 fragments by transport message id; incomplete ones expire after ``ttl_s``."""

    ttl_s: float
    _pending: dict[str, _Partial] = field(default_factory=dict)

    def add(self, message_id: str, total: int, seq: int, chunk: bytes) -> bytes | None:
        now = time.monotonic()
        self._drop_expired(now)
        if not 0 <= seq < total:
            logger.warning("fragment %d of %d for %s is out of range; dropped", seq, total, message_id)
            return None
        partial = self._pending.get(message_id)
        if partial is None or len(partial.parts) != total:
            partial = _Partial(parts=[None] * total, expires_at=now + self.ttl_s)
            self._pending[message_id] = partial
        partial.parts[seq] = chunk
        if any(part is None for part in partial.parts):
            return None
        del self._pending[message_id]
        return b"".join(part for part in partial.parts if part is not None)

    def __len__(self) -> int:
        return len(self._pending)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if p.expires_at <= now]:
            logger.warning("incomplete event %s expired before all fragments arrived", key)
            del self._pending[key]


def _headers(frame: Frame) -> dict[str, str]:
    return {h.key: h.value for h in frame.headers}


def ping_frame(service_id: int) -> Frame:
    frame = Frame(SeqID=0, LogID=0, service=service_id, method=CONTROL)
    header = frame.headers.add()
    header.key = wire.HEADER_TYPE
    header.value = "ping"
    return frame


def _describe_refusal(code: int, message: str) -> str:
    if code == wire.EXCEED_CONN_LIMIT:
        return (
            f"Feishu refused the long connection: the app already has the most connections it may open "
            f"(code {code}: {message}). Stop other running copies of the bot, then start it again."
        )
    return (
        f"Feishu refused the long connection (code {code}: {message}). Check FEISHU_APP_ID and "
        "FEISHU_APP_SECRET, and that the app's events are delivered through the long connection."
    )


class LongConnection:
    """One logical connection to Feishu that keeps itself alive until ``stop()``.

    ``on_event`` is called synchronously, in arrival order, for every complete event or card frame; it must not
    block and must make sure ``frame.ack(code)`` is awaited eventually. (lark-oapi's own client drops card frames.)
    """

    def __init__(self, settings: FeishuSettings, on_event: Callable[[InboundFrame], None]) -> None:
        if not settings.app_id or settings.app_secret is None:
            raise FatalConnectionError("FEISHU_APP_ID and FEISHU_APP_SECRET must both be set.")
        self._settings = settings
        self._on_event = on_event
        self._domain = settings.domain.rstrip("/")
        self.config = ClientConfig()
        self._fragments = FragmentBuffer(ttl_s=settings.fragment_ttl_s)
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._acks: set[asyncio.Task[bool]] = set()
        self._pong = asyncio.Event()
        self._force = asyncio.Event()
        self._first_outcome = asyncio.Event()
        self._stopping = False
        self.fatal_error: FatalConnectionError | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self.pong_timeouts = 0
        self._ever_connected = False
        self._last_pong_at: float | None = None
        self._last_event_at: float | None = None

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect; returns once connected (or after ``connect_timeout_s``, still retrying in the background).

        Raises ``FatalConnectionError`` when Feishu refuses the app.
        """
        if self._runner is not None:
            return
        self._stopping = False
        self._session = aiohttp.ClientSession()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="feishu-connection")
        try:
            await asyncio.wait_for(self._first_outcome.wait(), self._settings.connect_timeout_s)
        except TimeoutError:
            logger.warning(
                "feishu: not connected after %.0f s; still trying in the background", self._settings.connect_timeout_s
            )
        if self.fatal_error is not None:
            await self.stop()
            raise self.fatal_error

    async def stop(self) -> None:
        self._stopping = True
        self._force.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reconnect(self) -> None:
        """Drop the current connection and open a fresh one at once; after giving up, start trying again."""
        if self._stopping or self._session is None:
            return
        if self._runner is None or self._runner.done():
            logger.info("feishu: restarting the long connection")
            self.fatal_error = None
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="feishu-connection")
        elif self._ws is not None:
            logger.info("feishu: reconnect requested")
            self._force.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def last_pong_age_s(self) -> float | None:
        return None if self._last_pong_at is None else time.monotonic() - self._last_pong_at

    @property
    def last_event_age_s(self) -> float | None:
        return None if self._last_event_at is None else time.monotonic() - self._last_event_at

    @property
    def ping_interval_s(self) -> float:
        return self._settings.ping_interval_s or self.config.ping_interval_s

    # the loop ------------------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                ws, service_id = await self._open()
            except FatalConnectionError as exc:
                self._give_up(exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors, refusals worth retrying, answers we could not read
                if not isinstance(exc, TransientConnectionError | aiohttp.ClientError | TimeoutError | OSError):
                    logger.exception("feishu: unexpected error while connecting")
                failures += 1
                limit = self._reconnect_count()
                if 0 <= limit < failures:
                    self._give_up(FatalConnectionError(
                        f"Could not reach Feishu at {self._domain} after {failures} attempts (last error: {exc})."
                    ))
                    return
                delay = self._backoff(failures)
                logger.warning("feishu: connecting failed (%s); attempt %d, retrying in %.1f s", exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self._first_outcome.set()
            await self._serve(ws, service_id)
            if not self._stopping:
                delay = self._backoff(1) if not self._force.is_set() else 0.0
                self._force.clear()
                logger.info("feishu: connection closed; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)

    def _give_up(self, exc: FatalConnectionError) -> None:
        self.fatal_error = exc
        logger.error("feishu: giving up on the long connection: %s", exc)
        self._first_outcome.set()

    def _reconnect_count(self) -> int:
        if self._settings.reconnect_count is not None:
            return self._settings.reconnect_count
        return self.config.reconnect_count

    def _backoff(self, attempt: int) -> float:
        """Exponential from ``reconnect_initial_s``, capped by ReconnectInterval; jitter capped by ReconnectNonce."""
        cap = self._settings.reconnect_max_s
        if cap is None:
            cap = self.config.reconnect_interval_s
        base = min(cap, self._settings.reconnect_initial_s * 2 ** max(0, attempt - 1))
        nonce = self._settings.reconnect_jitter_s
        if nonce is None:
            nonce = self.config.reconnect_nonce_s
        return base + random.uniform(0.0, max(0.0, min(nonce, base)))

    async def _open(self) -> tuple[aiohttp.ClientWebSocketResponse, int]:
        url = await self._discover()
        problem = endpoint_problem(url, self._domain)
        if problem:
            raise TransientConnectionError(problem)
        query = parse_qs(urlsplit(url).query)
        try:
            service_id = int(query.get(wire.SERVICE_ID, ["0"])[0])
        except ValueError:
            service_id = 0
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(
                url,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                autoping=True,
                max_msg_size=16 * 1024 * 1024,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise self._handshake_error(exc) from exc
        logger.info(
            "feishu: connected (device %s, service %s)", query.get(wire.DEVICE_ID, ["?"])[0], service_id
        )
        return ws, service_id

    def _handshake_error(self, exc: aiohttp.WSServerHandshakeError) -> Exception:
        headers = exc.headers or {}
        status = headers.get(wire.HEADER_HANDSHAKE_STATUS)
        message = headers.get(wire.HEADER_HANDSHAKE_MSG, exc.message)
        if status is None:
            return TransientConnectionError(f"WebSocket handshake failed with HTTP {exc.status}")
        code = int(status)
        if code == wire.AUTH_FAILED:
            auth_code = int(headers.get(wire.HEADER_HANDSHAKE_AUTH_ERRCODE, "0") or 0)
            if auth_code == wire.EXCEED_CONN_LIMIT:
                return FatalConnectionError(_describe_refusal(auth_code, message))
        if code == wire.FORBIDDEN:
            return FatalConnectionError(_describe_refusal(code, message))
        return TransientConnectionError(f"WebSocket handshake refused (code {code}: {message})")

    async def _discover(self) -> str:
        assert self._session is not None and self._settings.app_secret is not None
        body = {"AppID": self._settings.app_id, "AppSecret": self._settings.app_secret.get_secret_value()}
        timeout = aiohttp.ClientTimeout(total=self._settings.discovery_timeout_s)
        # Never redirected: a 307/308 would send the app secret on to wherever it points.
        async with self._session.post(
            self._domain + wire.GEN_ENDPOINT_URI,
            json=body,
            headers={"locale": "zh"},
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            text = await response.text()
            if 300 <= response.status < 400:
                raise FatalConnectionError(
                    f"endpoint discovery at FEISHU_DOMAIN={self._domain} answered a redirect (HTTP {response.status}); "
                    "the app secret is never sent on to another address: set FEISHU_DOMAIN to the final one"
                )
            if response.status != 200:
                raise TransientConnectionError(f"endpoint discovery answered HTTP {response.status}")
        try:
            reply = json.loads(text)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise TransientConnectionError("endpoint discovery answered something that is not a JSON object")
        code = reply.get("code")
        message = str(reply.get("msg") or "")
        if code in RETRYABLE_DISCOVERY_CODES:
            raise TransientConnectionError(f"endpoint discovery: code {code}: {message or 'system busy'}")
        if code != wire.OK:
            raise FatalConnectionError(_describe_refusal(int(code or -1), message))
        data = reply.get("data") or {}
        url = data.get("URL")
        if not url:
            raise TransientConnectionError("endpoint discovery returned no URL")
        self._apply_config(data.get("ClientConfig"))
        return str(url)

    def _apply_config(self, raw: Mapping[str, Any] | None) -> None:
        new = self.config.updated(raw)
        if new != self.config:
            logger.info("feishu: server connection config %s", new)
            self.config = new

    # one connection ------------------------------------------------------------------------------
    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, service_id: int) -> None:
        self._ws = ws
        self.connected_since = time.time()
        self._last_pong_at = time.monotonic()
        self._pong.clear()
        if not self._stopping:
            self._force.clear()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(ws), name="feishu-read")
        heartbeat = loop.create_task(self._heartbeat(ws, service_id), name="feishu-heartbeat")
        forced = loop.create_task(self._force.wait(), name="feishu-force")
        try:
            await asyncio.wait({reader, heartbeat, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, heartbeat, forced):
                task.cancel()
            await asyncio.gather(reader, heartbeat, forced, return_exceptions=True)
            self._ws = None
            self.connected_since = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self._on_frame(ws, message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                logger.warning("feishu: WebSocket error: %s", ws.exception())
                break
        logger.info("feishu: server closed the connection (code %s)", ws.close_code)

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse, service_id: int) -> None:
        while True:
            self._pong.clear()
            sent_at = time.monotonic()
            await self._send(ws, ping_frame(service_id).SerializeToString())
            try:
                await asyncio.wait_for(self._pong.wait(), self._settings.pong_timeout_s)
            except TimeoutError:
                self.pong_timeouts += 1
                logger.warning(
                    "feishu: no pong within %.1f s; the connection is stale, reconnecting",
                    self._settings.pong_timeout_s,
                )
                return
            await asyncio.sleep(max(0.0, self.ping_interval_s - (time.monotonic() - sent_at)))

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        async with self._send_lock:
            await ws.send_bytes(data)

    def _on_frame(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        frame = Frame()
        try:
            frame.ParseFromString(data)
        except Exception:
            logger.warning("feishu: a frame could not be decoded (%d bytes); ignored", len(data))
            return
        headers = _headers(frame)
        kind = headers.get(wire.HEADER_TYPE, "")
        if frame.method == CONTROL:
            if kind == "pong":
                self._last_pong_at = time.monotonic()
                self._pong.set()
                if frame.payload:
                    try:
                        self._apply_config(json.loads(frame.payload))
                    except ValueError:
                        logger.warning("feishu: pong carried a config that is not JSON")
            return
        if frame.method != DATA:
            return
        received = time.monotonic()
        transport_id = headers.get(wire.HEADER_MESSAGE_ID, "")
        payload: bytes | None = frame.payload
        try:
            total = int(headers.get(wire.HEADER_SUM, "1") or 1)
            seq = int(headers.get(wire.HEADER_SEQ, "0") or 0)
        except ValueError:
            total, seq = 1, 0
        if total > 1:
            payload = self._fragments.add(transport_id, total, seq, frame.payload)
            if payload is None:
                return
        inbound = InboundFrame(
            kind=kind,
            payload=payload or b"",
            transport_id=transport_id,
            trace_id=headers.get(wire.HEADER_TRACE_ID, ""),
            ack=lambda code, data=None: self._ack(ws, frame, received, code, data),
        )
        if kind not in ("event", "card"):
            logger.debug("feishu: %s frame %s acknowledged without handling", kind, transport_id)
            task = asyncio.get_running_loop().create_task(inbound.ack(200))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)
            return
        self._last_event_at = received
        self._on_event(inbound)

    async def _ack(
        self, ws: aiohttp.ClientWebSocketResponse, frame: Frame, received: float, code: int, data: bytes | None
    ) -> bool:
        """Send ``frame`` back with ``{"code": code}`` (and ``data``) and the handling time; False if the
        connection is gone."""
        header = frame.headers.add()
        header.key = wire.HEADER_BIZ_RT
        header.value = str(int((time.monotonic() - received) * 1000))
        answer: dict[str, Any] = {"code": code}
        if data is not None:
            answer["data"] = base64.b64encode(data).decode("ascii")
        frame.payload = json.dumps(answer).encode()
        if ws.closed:
            logger.info("feishu: connection closed before an ack; the server will send that event again")
            return False
        try:
            await self._send(ws, frame.SerializeToString())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            logger.info("feishu: ack not sent (%s); the server will send that event again", exc)
            return False
        return True
