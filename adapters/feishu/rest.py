"""The Feishu/Lark REST API: lark-oapi request and response models, sent through one long-lived HTTP client.

lark-oapi builds the requests (``ReplyMessageRequest`` …), fetches and caches the tenant token and parses the
answers, but its async calls open a new ``httpx.AsyncClient`` per call, and building one (a TLS context, the CA
bundle parsed) blocks the event loop for tens of milliseconds. ``LarkTransport`` sends the same request objects
through one client that lives from ``FeishuRest.start()`` to ``close()``. The tenant token is fetched through the
same client (lark-oapi's request model, cached in lark-oapi's ``TokenManager`` cache), so the loop and the long
connection's heartbeat never stall.

Credentials go to ``FEISHU_DOMAIN`` only: requests are sent to paths under it (an absolute URL elsewhere is refused
before anything is sent) and redirects are never followed, so neither the app secret nor the tenant token can be
passed on to another host.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import lark_oapi as lark
from lark_oapi.api.cardkit.v1 import (
    BatchUpdateCardRequest,
    BatchUpdateCardRequestBody,
    BatchUpdateCardResponse,
    ContentCardElementRequest,
    ContentCardElementRequestBody,
    ContentCardElementResponse,
    CreateCardRequest,
    CreateCardRequestBody,
    CreateCardResponse,
    IdConvertCardRequest,
    IdConvertCardRequestBody,
    IdConvertCardResponse,
    SettingsCardRequest,
    SettingsCardRequestBody,
    SettingsCardResponse,
)
from lark_oapi.api.im.v1 import (
    CreateMessageReactionRequest,
    CreateMessageReactionRequestBody,
    CreateMessageReactionResponse,
    DeleteMessageReactionRequest,
    DeleteMessageReactionResponse,
    DeleteMessageRequest,
    DeleteMessageResponse,
    Emoji,
    GetMessageRequest,
    GetMessageResourceRequest,
    GetMessageResourceResponse,
    GetMessageResponse,
    ListMessageReactionRequest,
    ListMessageReactionResponse,
    Message,
    MessageReaction,
    PatchMessageRequest,
    PatchMessageRequestBody,
    PatchMessageResponse,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
    ReplyMessageResponse,
    ReplyMessageResponseBody,
)
from lark_oapi.core.json import JSON
from lark_oapi.core.model import Config, RawResponse
from lark_oapi.core.token import TokenManager
from lark_oapi.core.token.access_token_response import AccessTokenResponse
from lark_oapi.core.token.create_self_tenant_token_request import (
    CreateSelfTenantTokenRequest,
    CreateSelfTenantTokenRequestBuilder,
)
from lark_oapi.core.token.create_token_request_body import CreateTokenRequestBody
from lark_oapi.core.utils import Files
from lark_oapi.core.utils.user_agent import build_user_agent

from adapters.feishu.settings import FeishuSettings
from adapters.kit import outbound
from adapters.kit.outbound import Failure, RetryPolicy, Verdict

logger = logging.getLogger(__name__)

RATE_LIMIT_CODE = 99991400
TOKEN_INVALID_CODES = frozenset({99991661, 99991663, 99991664, 99991665})
GONE_CODES = frozenset({230011, 231003, 300302})
"""Answers about a message or card that is not there any more (recalled, deleted; card not found)."""
TRANSIENT_ATTEMPTS = 3
RATE_LIMIT_WAIT_S = (0.05, 60.0)
"""The shortest and longest wait a rate-limited answer's ``x-ogw-ratelimit-reset`` or ``Retry-After`` may ask."""
MAX_CONNECTIONS = 32
"""Concurrent requests to Feishu; Feishu's own limits (5 QPS per chat for messages) bind long before."""
MAX_IDLE_CONNECTIONS = 16
IDLE_CONNECTION_EXPIRY_S = 30.0
CONNECT_TIMEOUT_S = 10.0
MAX_REACTION_PAGE = 50
"""The largest page ``GET /im/v1/messages/{id}/reactions`` answers with."""
MAX_ERROR_BODY_BYTES = 64 * 1024
"""How much of a failed download's (JSON error) body is read."""

R = TypeVar("R", bound=lark.BaseResponse)
Exchange = Callable[[str | None], Awaitable[R]]


def answered(response: Any, what: str, name: str) -> Any:
    """``response.data.<name>``: what a call must answer with; a ``FeishuApiError`` for ``what`` when it lacks it."""
    value = getattr(response.data, name, None) if response.data is not None else None
    if not value:
        raise FeishuApiError(what, code=response.code, message=f"no {name} in the answer")
    return value


class FeishuApiError(Exception):
    """A REST call failed for good. ``code`` is Feishu's error code, ``status`` the HTTP status; ``retry_after_s``
    the wait a rate-limited answer asked for."""

    def __init__(
        self, what: str, *, code: int | None, message: str, status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{what} failed (code {code}, HTTP {status}): {message}")
        self.what = what
        self.code = code
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class FeishuRateLimited(FeishuApiError):
    """Still rate limited after the longest wait allowed."""


class DownloadTooLarge(Exception):
    """A download was refused for its size. ``size`` is the announced size, when the server sent one."""

    def __init__(self, limit: int, size: int | None) -> None:
        super().__init__(f"download over the limit of {limit} bytes (announced size: {size})")
        self.limit = limit
        self.size = size


class TransportClosed(RuntimeError):
    """A call after ``close()`` (or before ``start()``)."""


class ForeignUrl(RuntimeError):
    """A request addressed outside ``FEISHU_DOMAIN``: it would carry the tenant token elsewhere, so it is not sent."""


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port or ''}"


@dataclass(frozen=True, slots=True)
class BotIdentity:
    open_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Download:
    data: bytes
    content_type: str
    file_name: str | None


def _header(response: lark.BaseResponse, name: str) -> str | None:
    raw = response.raw
    if raw is None or not raw.headers:
        return None
    for key, value in raw.headers.items():
        if key.lower() == name:
            return value
    return None


def _status(response: lark.BaseResponse) -> int | None:
    return response.raw.status_code if response.raw is not None else None


def _read_error(response: lark.BaseResponse) -> None:
    """Fill ``code``/``msg`` from a JSON error body the parser left unread (binary downloads skip it)."""
    if response.code is not None or response.raw is None or not response.raw.content:
        return
    try:
        body = json.loads(response.raw.content)
    except ValueError:
        return
    if isinstance(body, dict):
        response.code = body.get("code") if isinstance(body.get("code"), int) else None
        response.msg = str(body.get("msg") or "")


def classify(error: BaseException) -> Verdict:
    """A REST failure as the kit's outbound helper reads it."""
    if isinstance(error, FeishuApiError):
        if error.status == 429 or error.code == RATE_LIMIT_CODE:
            return Verdict(Failure.RATE_LIMITED, error.retry_after_s)
        if error.status is not None and error.status >= 500:
            return Verdict(Failure.RETRYABLE)
        return Verdict(Failure.GONE if error.code in GONE_CODES else Failure.PERMANENT)
    if isinstance(error, httpx.HTTPError | ValueError):  # network failure, or a body that is not JSON
        return Verdict(Failure.RETRYABLE)
    return Verdict(Failure.PERMANENT)


def _failure(what: str, response: lark.BaseResponse) -> FeishuApiError:
    """The error a failed answer means; a rate limit carries the wait Feishu asked for."""
    code, status, message = response.code, _status(response), response.msg or ""
    if status != 429 and code != RATE_LIMIT_CODE:
        return FeishuApiError(what, code=code, message=message, status=status)
    headers = response.raw.headers if response.raw is not None else None
    wait = outbound.retry_after(headers, "x-ogw-ratelimit-reset", "retry-after")
    if wait is not None:
        wait = min(max(wait, RATE_LIMIT_WAIT_S[0]), RATE_LIMIT_WAIT_S[1])
    return FeishuRateLimited(what, code=code, message=message or "rate limited", status=status, retry_after_s=wait)


def _is_success(status: int) -> bool:
    return 200 <= status < 300


def _raw(response: httpx.Response, content: bytes) -> RawResponse:
    raw = RawResponse()
    raw.status_code = response.status_code
    raw.headers = dict(response.headers)  # httpx gives lower-case names
    raw.content = content
    return raw


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_response(raw: RawResponse, response_type: type[R]) -> R:
    """lark-oapi's model of an answer, as its own async calls build it.

    A typed answer is always JSON (a successful answer that is not raises ``ValueError``: a transient failure);
    a failed answer that is not JSON (a gateway's error page) keeps only its status. A raw ``BaseRequest`` that
    succeeds may answer anything.
    """
    status = raw.status_code or 0
    content = raw.content or b""
    content_type = raw.headers.get("content-type", "")
    if response_type is lark.BaseResponse and not content_type.startswith("application/json"):
        response = response_type()
        response.code = 0 if _is_success(status) else None
    else:
        try:
            response = JSON.unmarshal(str(content, "utf-8"), response_type)
        except ValueError:
            if _is_success(status):
                raise
            response = response_type()
    response.raw = raw
    return response


class LarkTransport:
    """Sends lark-oapi ``BaseRequest`` objects (path, query, headers, JSON body or files) over one shared client.

    The URL, headers and body are made the way lark-oapi's ``Transport.aexecute`` makes them; the caller
    supplies the tenant token for requests that need one.
    """

    def __init__(self, config: Config, *, timeout_s: float) -> None:
        self._config = config
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._user_agent = build_user_agent(source=config.source, extra_tags=config.extra_ua_tags)

    @property
    def started(self) -> bool:
        return self._client is not None and not self._closed

    async def start(self) -> None:
        """Create the client (on a worker thread: creating one reads the CA bundle)."""
        if self._client is not None or self._closed:
            return
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_IDLE_CONNECTIONS,
            keepalive_expiry=IDLE_CONNECTION_EXPIRY_S,
        )
        client = await asyncio.to_thread(
            httpx.AsyncClient, timeout=self._timeout, limits=limits, follow_redirects=False
        )
        if self._closed:  # closed while it was being made
            await client.aclose()
            return
        self._client = client

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _live_client(self) -> httpx.AsyncClient:
        if self._client is None or self._closed:
            raise TransportClosed("the Feishu client is not running")
        return self._client

    def url(self, request: lark.BaseRequest) -> str:
        uri = request.uri or ""
        for key, value in (request.paths or {}).items():
            uri = uri.replace(":" + key, urllib.parse.quote("" if value is None else str(value), safe=""))
        if uri.startswith(("http://", "https://")):
            if _origin(uri) != _origin(self._config.domain):
                raise ForeignUrl(f"refusing to send a Feishu request outside FEISHU_DOMAIN (to {_origin(uri)})")
            return uri
        return self._config.domain + uri

    def headers(self, request: lark.BaseRequest, token: str | None) -> dict[str, str]:
        headers = dict(request.headers or {})
        headers["User-Agent"] = self._user_agent
        if request.token_types:
            if lark.AccessTokenType.TENANT not in request.token_types:
                raise TypeError("only tenant-token requests are supported")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def body(self, request: lark.BaseRequest, headers: dict[str, str]) -> dict[str, Any]:
        """httpx arguments for the body: multipart when the request carries files, else JSON."""
        if request.files is None:  # an upload's body holds its file objects; lark-oapi moves them out the same way
            request.files = Files.extract_files(request.body) or None
        if request.files:
            for file in request.files.values():
                if isinstance(file, io.IOBase) and file.seekable():
                    file.seek(0)  # a retry sends the whole file again
            data = json.loads(JSON.marshal(request.body)) if request.body is not None else None
            return {"files": request.files, "data": data}
        if request.body is None:
            return {}
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json; charset=utf-8"
        return {"content": JSON.marshal(request.body).encode("utf-8")}

    async def send(self, request: lark.BaseRequest, token: str | None) -> RawResponse:
        client = self._live_client()
        headers = self.headers(request, token)
        body = self.body(request, headers)
        method = request.http_method.name if request.http_method is not None else "GET"
        response = await client.request(method, self.url(request), headers=headers, params=request.queries, **body)
        return _raw(response, response.content)

    async def download(
        self, request: lark.BaseRequest, token: str | None, *, max_bytes: int | None
    ) -> GetMessageResourceResponse:
        """Stream a resource; more than ``max_bytes`` raises ``DownloadTooLarge`` without reading the rest."""
        client = self._live_client()
        headers = self.headers(request, token)
        method = request.http_method.name if request.http_method is not None else "GET"
        async with client.stream(method, self.url(request), headers=headers, params=request.queries) as response:
            if not _is_success(response.status_code):
                error_body = bytearray()
                async for chunk in response.aiter_bytes():
                    error_body += chunk
                    if len(error_body) >= MAX_ERROR_BODY_BYTES:
                        break
                return parse_response(_raw(response, bytes(error_body)), GetMessageResourceResponse)
            announced = _content_length(response)
            if max_bytes is not None and announced is not None and announced > max_bytes:
                raise DownloadTooLarge(max_bytes, announced)
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if max_bytes is not None and len(data) > max_bytes:
                    raise DownloadTooLarge(max_bytes, announced)
            raw = _raw(response, bytes(data))
        result = GetMessageResourceResponse()
        result.code = 0
        result.file = io.BytesIO(raw.content or b"")
        disposition = raw.headers.get("content-disposition")
        result.file_name = Files.parse_file_name({"Content-Disposition": disposition} if disposition else {})
        result.raw = raw
        return result


class FeishuRest:
    """The calls the adapter needs. Every call retries rate limits (bounded) and brief network failures.

    Use ``async with FeishuRest(settings) as rest`` (or ``start()`` and ``close()``): the HTTP client lives
    between the two.
    """

    def __init__(self, settings: FeishuSettings) -> None:
        if not settings.app_id or settings.app_secret is None:
            raise ValueError("FEISHU_APP_ID and FEISHU_APP_SECRET must both be set")
        self._settings = settings
        client = (
            lark.Client.builder()
            .app_id(settings.app_id)
            .app_secret(settings.app_secret.get_secret_value())
            .domain(settings.domain.rstrip("/"))
            .timeout(settings.rest_timeout_s)
            .log_level(lark.LogLevel.WARNING)
            .build()
        )
        assert client.config is not None
        self._config: Config = client.config
        self._transport = LarkTransport(self._config, timeout_s=settings.rest_timeout_s)
        self._token_lock = asyncio.Lock()
        self._policy = RetryPolicy(
            max_wait_s=settings.rate_limit_max_wait_s,
            transient_attempts=TRANSIENT_ATTEMPTS,
            backoff_s=settings.rate_limit_backoff_s,
        )

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # token ---------------------------------------------------------------------------------------
    @property
    def _token_key(self) -> str:
        return f"self_tenant_token:{self._settings.app_id}"  # the key lark-oapi's TokenManager caches under

    async def _tenant_token(self) -> str:
        """The cached tenant token, or a new one from ``FEISHU_DOMAIN``."""
        token = TokenManager.cache.get(self._token_key)
        if token:
            return token
        async with self._token_lock:
            token = TokenManager.cache.get(self._token_key)
            if token:
                return token
            return await self._fetch_tenant_token()

    async def _fetch_tenant_token(self) -> str:
        """``POST /open-apis/auth/v3/tenant_access_token/internal`` through the shared client: never redirected, so
        the app secret reaches ``FEISHU_DOMAIN`` only. Cached where lark-oapi's ``TokenManager`` keeps it."""
        what = "getting the tenant access token"
        body = CreateTokenRequestBody.builder().app_id(self._config.app_id).app_secret(self._config.app_secret).build()
        request = CreateSelfTenantTokenRequestBuilder(CreateSelfTenantTokenRequest()).request_body(body).build()
        try:
            raw = await self._transport.send(request, None)
            reply = JSON.unmarshal(str(raw.content or b"", "utf-8"), AccessTokenResponse)
        except (TransportClosed, ForeignUrl) as exc:
            raise FeishuApiError(what, code=None, message=str(exc)) from exc
        except (httpx.HTTPError, ValueError) as exc:  # network failure, or a body that is not JSON (a redirect …)
            raise FeishuApiError(what, code=None, message=f"{type(exc).__name__}: {exc}") from exc
        token = reply.tenant_access_token
        if not _is_success(raw.status_code) or not reply.success() or not token:
            raise FeishuApiError(what, code=reply.code, message=reply.msg or "no token", status=raw.status_code)
        expire = time.time() + (reply.expire or 0) - 10 * 60  # renewed 10 minutes early, as lark-oapi does
        TokenManager.cache.set(self._token_key, token, int(expire))
        return token

    def _forget_token(self) -> None:
        TokenManager.cache.set(self._token_key, "", 0)

    # the retry loop ------------------------------------------------------------------------------
    async def call(
        self, what: str, request: lark.BaseRequest, response_type: type[R], *, max_wait_s: float | None = None
    ) -> R:
        """Send ``request`` until it succeeds; rate limits wait (up to ``max_wait_s`` in total) and retry."""

        async def exchange(token: str | None) -> R:
            return parse_response(await self._transport.send(request, token), response_type)

        return await self._retrying(what, request, exchange, max_wait_s=max_wait_s)

    async def _retrying(
        self, what: str, request: lark.BaseRequest, exchange: Exchange[R], *, max_wait_s: float | None = None
    ) -> R:
        """``exchange`` through the kit's outbound helper: rate limits wait (at most ``max_wait_s`` in all, else
        ``FEISHU_RATE_LIMIT_MAX_WAIT_S``), network and server errors are tried ``TRANSIENT_ATTEMPTS`` times, and a
        refused tenant token is renewed once."""
        token_renewed = False

        async def attempt() -> R:
            nonlocal token_renewed
            if not self._transport.started:
                raise TransportClosed("the Feishu client is not running")
            while True:
                response = await exchange(await self._tenant_token() if request.token_types else None)
                if response.success():
                    return response
                _read_error(response)
                if response.code not in TOKEN_INVALID_CODES or token_renewed:
                    raise _failure(what, response)
                token_renewed = True
                self._forget_token()

        try:
            return await outbound.call(
                attempt, what=f"feishu: {what}", classify=classify, policy=self._policy.within(max_wait_s)
            )
        except (TransportClosed, ForeignUrl) as exc:
            raise FeishuApiError(what, code=None, message=str(exc)) from exc
        except (httpx.HTTPError, ValueError) as exc:  # network failure, or a body that is not JSON
            raise FeishuApiError(what, code=None, message=f"{type(exc).__name__}: {exc}") from exc

    # calls ---------------------------------------------------------------------------------------
    async def bot_info(self) -> BotIdentity:
        """The bot's own identity (``GET /open-apis/bot/v3/info``; ``bot`` sits at the top level)."""
        request = (
            lark.BaseRequest.builder()
            .http_method(lark.HttpMethod.GET)
            .uri("/open-apis/bot/v3/info")
            .token_types({lark.AccessTokenType.TENANT})
            .build()
        )
        response = await self.call("reading the bot's identity", request, lark.BaseResponse)
        body: dict[str, Any] = {}
        if response.raw is not None and response.raw.content:
            body = json.loads(response.raw.content)
        bot = body.get("bot") or {}
        open_id = bot.get("open_id")
        if not open_id:
            raise FeishuApiError("reading the bot's identity", code=response.code, message="no open_id in the answer")
        return BotIdentity(open_id=str(open_id), name=str(bot.get("app_name") or ""))

    async def get_message(self, message_id: str, *, max_wait_s: float | None = None) -> Message | None:
        request = GetMessageRequest.builder().message_id(message_id).build()
        response = await self.call(f"reading message {message_id}", request, GetMessageResponse, max_wait_s=max_wait_s)
        items = response.data.items if response.data is not None else None
        return items[0] if items else None

    async def download(self, message_id: str, file_key: str, kind: str, *, max_bytes: int | None = None) -> Download:
        """A message's image or file. More than ``max_bytes`` raises ``DownloadTooLarge`` before it is all read."""
        request = GetMessageResourceRequest.builder().message_id(message_id).file_key(file_key).type(kind).build()

        async def exchange(token: str | None) -> GetMessageResourceResponse:
            return await self._transport.download(request, token, max_bytes=max_bytes)

        response = await self._retrying(f"downloading {kind} {file_key}", request, exchange)
        data = response.file.read() if response.file is not None else b""
        return Download(data=data, content_type=_header(response, "content-type") or "", file_name=response.file_name)

    async def reply(
        self, message_id: str, *, msg_type: str, content: str, in_thread: bool = False, uuid: str | None = None
    ) -> str:
        """Reply to ``message_id``; returns the new message's id. ``uuid`` makes retries idempotent."""
        body = ReplyMessageRequestBody.builder().msg_type(msg_type).content(content).reply_in_thread(in_thread)
        if uuid:
            body = body.uuid(uuid)
        request = ReplyMessageRequest.builder().message_id(message_id).request_body(body.build()).build()
        what = f"replying to {message_id}"
        return answered(await self.call(what, request, ReplyMessageResponse), what, "message_id")

    async def reply_message(
        self, message_id: str, *, msg_type: str, content: str, in_thread: bool = False, uuid: str | None = None
    ) -> ReplyMessageResponseBody:
        """Like ``reply``, but returns the whole message Feishu answered with. For a ``uuid`` Feishu has seen
        within its dedupe window that is the message the first request sent, not a new one."""
        body = ReplyMessageRequestBody.builder().msg_type(msg_type).content(content).reply_in_thread(in_thread)
        if uuid:
            body = body.uuid(uuid)
        request = ReplyMessageRequest.builder().message_id(message_id).request_body(body.build()).build()
        what = f"replying to {message_id}"
        response = await self.call(what, request, ReplyMessageResponse)
        answered(response, what, "message_id")
        return response.data

    async def card_id_of(self, message_id: str) -> str:
        """The CardKit card entity a card message shows (``POST /cardkit/v1/cards/id_convert``)."""
        body = IdConvertCardRequestBody.builder().message_id(message_id).build()
        request = IdConvertCardRequest.builder().request_body(body).build()
        what = f"finding the card of {message_id}"
        return answered(await self.call(what, request, IdConvertCardResponse), what, "card_id")

    async def patch_message(self, message_id: str, content: str, *, max_wait_s: float | None = None) -> None:
        body = PatchMessageRequestBody.builder().content(content).build()
        request = PatchMessageRequest.builder().message_id(message_id).request_body(body).build()
        await self.call(f"updating message {message_id}", request, PatchMessageResponse, max_wait_s=max_wait_s)

    async def delete_message(self, message_id: str) -> None:
        """Recall a message the bot sent (``DELETE /im/v1/messages/{id}``; ``im:message:send_as_bot`` allows it)."""
        request = DeleteMessageRequest.builder().message_id(message_id).build()
        await self.call(f"recalling message {message_id}", request, DeleteMessageResponse)

    async def add_reaction(self, message_id: str, emoji_type: str) -> str | None:
        body = CreateMessageReactionRequestBody.builder().reaction_type(
            Emoji.builder().emoji_type(emoji_type).build()
        ).build()
        request = CreateMessageReactionRequest.builder().message_id(message_id).request_body(body).build()
        response = await self.call(
            f"reacting to {message_id}", request, CreateMessageReactionResponse, max_wait_s=10.0
        )
        return response.data.reaction_id if response.data is not None else None

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        request = DeleteMessageReactionRequest.builder().message_id(message_id).reaction_id(reaction_id).build()
        await self.call(f"removing a reaction from {message_id}", request, DeleteMessageReactionResponse)

    async def list_reactions(
        self, message_id: str, emoji_type: str, *, page_size: int = MAX_REACTION_PAGE, max_wait_s: float | None = None
    ) -> list[MessageReaction]:
        """The first page (at most ``page_size``, up to 50) of a message's reactions of one emoji type, each with
        its ``reaction_id`` and ``operator`` (``operator_type`` "app" with the app id, or "user")."""
        request = (
            ListMessageReactionRequest.builder()
            .message_id(message_id)
            .reaction_type(emoji_type)
            .page_size(max(1, min(page_size, MAX_REACTION_PAGE)))
            .build()
        )
        response = await self.call(
            f"listing {emoji_type} reactions on {message_id}", request, ListMessageReactionResponse,
            max_wait_s=max_wait_s,
        )
        return list(response.data.items or []) if response.data is not None else []

    async def create_card(self, card: dict[str, Any]) -> str:
        body = CreateCardRequestBody.builder().type("card_json").data(json.dumps(card, ensure_ascii=False)).build()
        request = CreateCardRequest.builder().request_body(body).build()
        return answered(await self.call("creating a card", request, CreateCardResponse), "creating a card", "card_id")

    async def set_card_text(
        self, card_id: str, element_id: str, text: str, sequence: int, *, max_wait_s: float | None = None
    ) -> None:
        body = ContentCardElementRequestBody.builder().content(text).sequence(sequence).build()
        request = (
            ContentCardElementRequest.builder().card_id(card_id).element_id(element_id).request_body(body).build()
        )
        await self.call(
            f"streaming into card {card_id}", request, ContentCardElementResponse, max_wait_s=max_wait_s
        )

    async def set_card_settings(self, card_id: str, settings: dict[str, Any], sequence: int) -> None:
        body = (
            SettingsCardRequestBody.builder()
            .settings(json.dumps(settings, ensure_ascii=False))
            .sequence(sequence)
            .build()
        )
        request = SettingsCardRequest.builder().card_id(card_id).request_body(body).build()
        await self.call(f"closing card {card_id}", request, SettingsCardResponse)

    async def update_card(
        self, card_id: str, actions: list[dict[str, Any]], sequence: int, *, max_wait_s: float | None = None
    ) -> None:
        """Several changes to a card in one call (``POST /cardkit/v1/cards/{id}/batch_update``): its settings
        (``partial_update_setting``), elements replaced (``update_element``) or removed (``delete_elements``)."""
        body = (
            BatchUpdateCardRequestBody.builder()
            .actions(json.dumps(actions, ensure_ascii=False))
            .sequence(sequence)
            .build()
        )
        request = BatchUpdateCardRequest.builder().card_id(card_id).request_body(body).build()
        await self.call(f"updating card {card_id}", request, BatchUpdateCardResponse, max_wait_s=max_wait_s)
