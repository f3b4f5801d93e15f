"""The Feishu/Lark REST API through lark-oapi's async calls, with rate-limit backoff.

lark-oapi fetches the tenant token with a blocking HTTP call when its cache is empty; ``_ensure_token``
warms that cache on a worker thread so the event loop (and the long connection's heartbeat) never stalls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import lark_oapi as lark
from lark_oapi.api.cardkit.v1 import (
    ContentCardElementRequest,
    ContentCardElementRequestBody,
    CreateCardRequest,
    CreateCardRequestBody,
    SettingsCardRequest,
    SettingsCardRequestBody,
)
from lark_oapi.api.im.v1 import (
    CreateMessageReactionRequest,
    CreateMessageReactionRequestBody,
    DeleteMessageReactionRequest,
    Emoji,
    GetMessageRequest,
    GetMessageResourceRequest,
    Message,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.token import TokenManager

from bot.settings import FeishuSettings

logger = logging.getLogger(__name__)

RATE_LIMIT_CODE = 99991400
TOKEN_INVALID_CODES = frozenset({99991661, 99991663, 99991664, 99991665})
TRANSIENT_ATTEMPTS = 3

R = TypeVar("R", bound=lark.BaseResponse)


class FeishuApiError(Exception):
    """A REST call failed for good. ``code`` is Feishu's error code, ``status`` the HTTP status."""

    def __init__(self, what: str, *, code: int | None, message: str, status: int | None = None) -> None:
        super().__init__(f"{what} failed (code {code}, HTTP {status}): {message}")
        self.what = what
        self.code = code
        self.status = status
        self.message = message


class FeishuRateLimited(FeishuApiError):
    """Still rate limited after the longest wait allowed."""


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
    """Fill ``code``/``msg`` from a JSON error body the SDK left unread (binary downloads skip it)."""
    if response.code is not None or response.raw is None or not response.raw.content:
        return
    try:
        body = json.loads(response.raw.content)
    except ValueError:
        return
    if isinstance(body, dict):
        response.code = body.get("code") if isinstance(body.get("code"), int) else None
        response.msg = str(body.get("msg") or "")


class FeishuRest:
    """The calls the adapter needs. Every call retries rate limits (bounded) and brief network failures."""

    def __init__(self, settings: FeishuSettings) -> None:
        if not settings.app_id or settings.app_secret is None:
            raise ValueError("FEISHU_APP_ID and FEISHU_APP_SECRET must both be set")
        self._settings = settings
        self.client = (
            lark.Client.builder()
            .app_id(settings.app_id)
            .app_secret(settings.app_secret.get_secret_value())
            .domain(settings.domain.rstrip("/"))
            .timeout(settings.rest_timeout_s)
            .log_level(lark.LogLevel.WARNING)
            .build()
        )
        self._token_lock = asyncio.Lock()

    # token ---------------------------------------------------------------------------------------
    @property
    def _token_key(self) -> str:
        return f"self_tenant_token:{self._settings.app_id}"  # the key lark-oapi's TokenManager caches under

    async def _ensure_token(self) -> None:
        if TokenManager.cache.get(self._token_key):
            return
        config = self.client.config
        assert config is not None
        async with self._token_lock:
            if TokenManager.cache.get(self._token_key):
                return
            try:
                await asyncio.to_thread(TokenManager.get_self_tenant_token, config)
            except ObtainAccessTokenException as exc:
                raise FeishuApiError(
                    "getting the tenant access token", code=getattr(exc, "code", None), message=str(exc)
                ) from exc
            except Exception as exc:  # requests' network errors, a non-JSON answer
                raise FeishuApiError("getting the tenant access token", code=None, message=str(exc)) from exc

    def _forget_token(self) -> None:
        TokenManager.cache.set(self._token_key, "", 0)

    # the retry loop ------------------------------------------------------------------------------
    async def call(
        self, what: str, send: Callable[[], Awaitable[R]], *, max_wait_s: float | None = None
    ) -> R:
        """Run ``send`` until it succeeds; rate limits wait (up to ``max_wait_s`` in total) and retry."""
        max_wait = self._settings.rate_limit_max_wait_s if max_wait_s is None else max_wait_s
        delay = self._settings.rate_limit_backoff_s
        waited = 0.0
        transient_failures = 0
        token_refreshed = False
        while True:
            await self._ensure_token()
            try:
                response = await send()
            except (httpx.HTTPError, ValueError) as exc:  # network failure, or a body that is not JSON
                transient_failures += 1
                if transient_failures >= TRANSIENT_ATTEMPTS or waited + delay > max_wait:
                    raise FeishuApiError(what, code=None, message=f"{type(exc).__name__}: {exc}") from exc
                logger.info("feishu: %s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)
                continue
            if response.success():
                return response
            _read_error(response)
            code, status = response.code, _status(response)
            message = response.msg or ""
            if status == 429 or code == RATE_LIMIT_CODE:
                pause = self._rate_limit_pause(response, delay)
                if waited + pause > max_wait:
                    raise FeishuRateLimited(what, code=code, message=message or "rate limited", status=status)
                logger.info("feishu: %s rate limited; waiting %.1f s", what, pause)
                await asyncio.sleep(pause)
                waited += pause
                delay = min(delay * 2, 30.0)
                continue
            if code in TOKEN_INVALID_CODES and not token_refreshed:
                token_refreshed = True
                self._forget_token()
                continue
            if status is not None and status >= 500 and transient_failures + 1 < TRANSIENT_ATTEMPTS:
                transient_failures += 1
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)
                continue
            raise FeishuApiError(what, code=code, message=message, status=status)

    @staticmethod
    def _rate_limit_pause(response: lark.BaseResponse, fallback: float) -> float:
        for name in ("x-ogw-ratelimit-reset", "retry-after"):
            value = _header(response, name)
            if value:
                try:
                    return max(0.05, min(float(value), 60.0))
                except ValueError:
                    pass
        return fallback

    # calls ---------------------------------------------------------------------------------------
    async def bot_info(self) -> BotIdentity:
        """The bot's own identity (``GET /open-apis/bot/v3/info``; ``bot`` sits at the top level)."""

        def request() -> lark.BaseRequest:
            return (
                lark.BaseRequest.builder()
                .http_method(lark.HttpMethod.GET)
                .uri("/open-apis/bot/v3/info")
                .token_types({lark.AccessTokenType.TENANT})
                .build()
            )

        response = await self.call("reading the bot's identity", lambda: self.client.arequest(request()))
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
        response = await self.call(
            f"reading message {message_id}", lambda: self.client.im.v1.message.aget(request), max_wait_s=max_wait_s
        )
        items = response.data.items if response.data is not None else None
        return items[0] if items else None

    async def download(self, message_id: str, file_key: str, kind: str) -> Download:
        request = GetMessageResourceRequest.builder().message_id(message_id).file_key(file_key).type(kind).build()
        response = await self.call(
            f"downloading {kind} {file_key}", lambda: self.client.im.v1.message_resource.aget(request)
        )
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
        response = await self.call(f"replying to {message_id}", lambda: self.client.im.v1.message.areply(request))
        new_id = response.data.message_id if response.data is not None else None
        if not new_id:
            raise FeishuApiError(f"replying to {message_id}", code=response.code, message="no message_id in the answer")
        return new_id

    async def patch_message(self, message_id: str, content: str, *, max_wait_s: float | None = None) -> None:
        body = PatchMessageRequestBody.builder().content(content).build()
        request = PatchMessageRequest.builder().message_id(message_id).request_body(body).build()
        await self.call(
            f"updating message {message_id}", lambda: self.client.im.v1.message.apatch(request), max_wait_s=max_wait_s
        )

    async def add_reaction(self, message_id: str, emoji_type: str) -> str | None:
        body = CreateMessageReactionRequestBody.builder().reaction_type(
            Emoji.builder().emoji_type(emoji_type).build()
        ).build()
        request = CreateMessageReactionRequest.builder().message_id(message_id).request_body(body).build()
        response = await self.call(
            f"reacting to {message_id}", lambda: self.client.im.v1.message_reaction.acreate(request), max_wait_s=10.0
        )
        return response.data.reaction_id if response.data is not None else None

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        request = DeleteMessageReactionRequest.builder().message_id(message_id).reaction_id(reaction_id).build()
        await self.call(
            f"removing a reaction from {message_id}", lambda: self.client.im.v1.message_reaction.adelete(request)
        )

    async def create_card(self, card: dict[str, Any]) -> str:
        body = CreateCardRequestBody.builder().type("card_json").data(json.dumps(card, ensure_ascii=False)).build()
        request = CreateCardRequest.builder().request_body(body).build()
        response = await self.call("creating a card", lambda: self.client.cardkit.v1.card.acreate(request))
        card_id = response.data.card_id if response.data is not None else None
        if not card_id:
            raise FeishuApiError("creating a card", code=response.code, message="no card_id in the answer")
        return card_id

    async def set_card_text(
        self, card_id: str, element_id: str, text: str, sequence: int, *, max_wait_s: float | None = None
    ) -> None:
        body = ContentCardElementRequestBody.builder().content(text).sequence(sequence).build()
        request = (
            ContentCardElementRequest.builder().card_id(card_id).element_id(element_id).request_body(body).build()
        )
        await self.call(
            f"streaming into card {card_id}",
            lambda: self.client.cardkit.v1.card_element.acontent(request),
            max_wait_s=max_wait_s,
        )

    async def set_card_settings(self, card_id: str, settings: dict[str, Any], sequence: int) -> None:
        body = (
            SettingsCardRequestBody.builder()
            .settings(json.dumps(settings, ensure_ascii=False))
            .sequence(sequence)
            .build()
        )
        request = SettingsCardRequest.builder().card_id(card_id).request_body(body).build()
        await self.call(f"closing card {card_id}", lambda: self.client.cardkit.v1.card.asettings(request))

