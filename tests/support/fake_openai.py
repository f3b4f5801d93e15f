"""A loopback OpenAI-compatible server: the part of vLLM's API the remote engine uses.

``GET /v1/models`` and ``POST /v1/chat/completions`` (streaming server-sent events with
``choices[0].delta.content`` chunks, a final usage chunk when ``stream_options.include_usage`` is set,
then ``data: [DONE]``; or one JSON completion without ``stream``). Like vLLM it checks the bearer key (401),
the model name (404) and the context length (400), and it decodes every ``data:`` image URL, so a test
sees what really arrived. Scripted faults (one per chat request, in order) reproduce what real servers do
under load: 5xx, 429 with Retry-After, a slow first token, a stall or a dropped connection mid-answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from aiohttp import web
from PIL import Image

from sandbox.loopback import LoopbackServer

FaultKind = Literal["status", "slow_first_token", "stall", "disconnect", "error_event"]


@dataclass(frozen=True, slots=True)
class Fault:
    """What goes wrong with one chat request."""

    kind: FaultKind
    status: int = 500
    message: str = "Internal Server Error"
    retry_after: str | None = None
    delay_s: float = 0.0
    after_chunks: int = 0

    @classmethod
    def http(cls, status: int, message: str = "Internal Server Error", retry_after: str | None = None) -> Fault:
        return cls("status", status=status, message=message, retry_after=retry_after)

    @classmethod
    def slow_first_token(cls, delay_s: float) -> Fault:
        return cls("slow_first_token", delay_s=delay_s)

    @classmethod
    def stall(cls, after_chunks: int, delay_s: float = 3600.0) -> Fault:
        """Send ``after_chunks`` chunks, then nothing for ``delay_s``."""
        return cls("stall", after_chunks=after_chunks, delay_s=delay_s)

    @classmethod
    def disconnect(cls, after_chunks: int) -> Fault:
        """Send ``after_chunks`` chunks, then drop the connection without ``[DONE]``."""
        return cls("disconnect", after_chunks=after_chunks)

    @classmethod
    def error_event(cls, after_chunks: int, message: str = "engine dead") -> Fault:
        """Send ``after_chunks`` chunks, then an ``{"error": …}`` event (vLLM does this when its engine dies)."""
        return cls("error_event", after_chunks=after_chunks, message=message)


@dataclass(slots=True)
class ReceivedImage:
    mime_type: str
    size: tuple[int, int]


@dataclass(slots=True)
class ChatRequest:
    """One ``POST /chat/completions`` as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    images: list[ReceivedImage] = field(default_factory=list)
    status: int = 200
    aborted: bool = False
    """The client went away before the answer was complete (cancel, deadline)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def image_urls(self) -> list[str]:
        urls = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):
                urls.extend(part["image_url"]["url"] for part in content if part.get("type") == "image_url")
        return urls


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def default_answer(request: ChatRequest) -> str:
    count = len(request.images)
    return f"I see {count} image{'' if count == 1 else 's'}. The dialog says: disk quota exceeded."


class FakeOpenAI(LoopbackServer):
    """``async with FakeOpenAI() as server``; point the engine at ``server.base_url``."""

    runner_options: ClassVar[Mapping[str, Any]] = {
        "access_log": None, "handler_cancellation": True, "shutdown_timeout": 0.5,
    }

    def __init__(
        self,
        *,
        model: str = "fake/qwen2.5-vl",
        api_key: str | None = "sk-test-key",
        answer: Callable[[ChatRequest], str] = default_answer,
        max_model_len: int = 8192,
        tokens_per_image: int = 256,
        chunk_delay_s: float = 0.0,
        ignores_stream: bool = False,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.answer = answer
        self.max_model_len = max_model_len
        self.tokens_per_image = tokens_per_image
        self.chunk_delay_s = chunk_delay_s
        self.ignores_stream = ignores_stream
        """Answer with one JSON completion even when asked to stream (some proxies and servers do)."""
        self.faults: deque[Fault] = deque()
        self.requests: list[ChatRequest] = []
        self.model_listings = 0
        self.hold: asyncio.Event | None = None
        """While set to an unset event, answers wait for it before their first chunk."""
        self.active = 0
        self.max_active = 0

    @property
    def base_url(self) -> str:
        assert self.port, "the server is not running"
        return f"{self.url}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self._models), web.post("/v1/chat/completions", self._chat)]

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        await super().stop()

    # ------------------------------------------------------------------ handlers

    def _refuse_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_api_key", "invalid_request_error")

    async def _models(self, request: web.Request) -> web.Response:
        self.model_listings += 1
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": int(time.time()), "owned_by": "fake",
             "max_model_len": self.max_model_len},
        ]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = ChatRequest(body=body, headers=dict(request.headers))
        self.requests.append(record)
        rejection = self._reject(request, record)
        if rejection is not None:
            record.status = rejection.status
            return rejection
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "status":
            record.status = fault.status
            response = _error(fault.status, fault.message, fault.status, "ServerError")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._answer(request, record, fault)
        except (asyncio.CancelledError, ConnectionResetError):
            record.aborted = True
            raise
        finally:
            self.active -= 1

    def _reject(self, request: web.Request, record: ChatRequest) -> web.Response | None:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        body = record.body
        if body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", 404, "NotFoundError")
        try:
            record.images = [_decode_image(url) for url in record.image_urls]
        except ValueError as exc:
            return _error(400, f"Invalid image: {exc}", 400, "BadRequestError")
        prompt = self._prompt_tokens(record)
        wanted = int(body.get("max_tokens") or 16)
        if prompt + wanted > self.max_model_len:
            return _error(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt + wanted} tokens ({prompt} in the messages, {wanted} in the completion). Please reduce "
                "the length of the messages or completion.",
                400,
                "BadRequestError",
            )
        return None

    def _prompt_tokens(self, record: ChatRequest) -> int:
        tokens = 0
        for message in record.messages:
            content = message.get("content")
            if isinstance(content, str):
                tokens += _count_tokens(content)
            elif isinstance(content, list):
                tokens += sum(_count_tokens(part.get("text", "")) for part in content if part.get("type") == "text")
        return tokens + self.tokens_per_image * len(record.images)

    async def _answer(self, request: web.Request, record: ChatRequest, fault: Fault | None) -> web.StreamResponse:
        body = record.body
        words = self.answer(record).split(" ")
        pieces = [word + " " for word in words[:-1]] + [words[-1]]
        max_tokens = int(body.get("max_tokens") or 16)
        finish = "length" if len(pieces) > max_tokens else "stop"
        pieces = pieces[:max_tokens]
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

        usage = {"prompt_tokens": self._prompt_tokens(record), "completion_tokens": len(pieces),
                 "total_tokens": self._prompt_tokens(record) + len(pieces)}
        if not body.get("stream") or self.ignores_stream:
            return web.json_response({
                "id": completion_id, "object": "chat.completion", "created": created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "finish_reason": finish}],
                "usage": usage,
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        if self.hold is not None:
            await self.hold.wait()
        if fault is not None and fault.kind == "slow_first_token":
            await asyncio.sleep(fault.delay_s)
        await _send(response, chunk({"role": "assistant", "content": ""}))
        for index, piece in enumerate(pieces):
            if fault is not None and index == fault.after_chunks:
                if fault.kind == "stall":
                    await asyncio.sleep(fault.delay_s)
                elif fault.kind == "disconnect":
                    await asyncio.sleep(0.1)  # let the client read what was sent, as over a real network
                    assert request.transport is not None
                    request.transport.close()
                    return response
                elif fault.kind == "error_event":
                    await _send(response, {"error": {"object": "error", "message": fault.message,
                                                     "type": "InternalServerError", "code": 500}})
                    await response.write_eof()
                    return response
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await _send(response, chunk({"content": piece}))
        await _send(response, chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await _send(response, {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                   "model": self.model, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


def _error(status: int, message: str, code: int | str, kind: str) -> web.Response:
    """An error body the way OpenAI-compatible servers send it."""
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status)


def _decode_image(url: str) -> ReceivedImage:
    """Checks a ``data:image/...;base64,`` URL really holds that image."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError(f"not a base64 image data URL: {url[:40]!r}")
    mime = header.removeprefix("data:").removesuffix(";base64")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from exc
    with Image.open(io.BytesIO(data)) as image:
        if Image.MIME.get(image.format or "") != mime:
            raise ValueError(f"{mime} URL holds a {image.format} image")
        image.load()
        return ReceivedImage(mime, image.size)
