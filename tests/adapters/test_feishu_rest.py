"""The Feishu REST layer: one long-lived HTTP client, requests on the wire as lark-oapi makes them, capped downloads."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from lark_oapi.api.im.v1 import CreateImageRequest, CreateImageRequestBody, CreateImageResponse
from pydantic import SecretStr

from adapters.feishu import FeishuAdapter
from adapters.feishu.rest import DownloadTooLarge, FeishuApiError, FeishuRest
from adapters.feishu.settings import FeishuSettings
from bot.errors import FileAccessDenied
from bot.settings import Settings
from bot.types import FileRef, IncomingMessage, ReplyHandle
from sandbox.loopback import LoopbackServer
from tests.support.fake_feishu import FakeFeishu, feishu_environment

STREAMED_BYTES = 32 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture
def client_registry(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Every ``httpx.AsyncClient`` created while the test runs."""
    created: list[httpx.AsyncClient] = []
    original = httpx.AsyncClient.__init__

    def counting_init(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        created.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting_init)
    return created


def fake_settings(fake: FakeFeishu) -> FeishuSettings:
    return FeishuSettings(
        app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url,
        rate_limit_backoff_s=0.05, rest_timeout_s=5.0,
    )


async def test_every_call_goes_through_one_client_that_close_shuts(client_registry: list[httpx.AsyncClient]) -> None:
    async with FakeFeishu() as fake:
        question = fake.add_message(chat_id="oc_dm", msg_type="image", content={"image_key": "img_1"})
        fake.add_resource(question.message_id, "img_1", b"\x89PNG" + bytes(300))
        rest = FeishuRest(fake_settings(fake))
        await rest.start()
        try:
            identity = await rest.bot_info()
            reaction = await rest.add_reaction(question.message_id, "Typing")
            card_id = await rest.create_card({"schema": "2.0", "config": {"streaming_mode": True},
                                              "body": {"elements": [{"tag": "markdown", "element_id": "answer",
                                                                     "content": "…"}]}})
            await rest.reply(question.message_id, msg_type="interactive",
                             content=json.dumps({"type": "card", "data": {"card_id": card_id}}))
            download = await rest.download(question.message_id, "img_1", "image")
            parent = await rest.get_message(question.message_id)
            await rest.set_card_text(card_id, "answer", "the answer", 1)
            await rest.set_card_settings(card_id, {"config": {"streaming_mode": False}}, 2)
            assert reaction is not None
            await rest.delete_reaction(question.message_id, reaction)
        finally:
            await rest.close()

        assert identity.open_id == fake.bot_open_id
        assert download.data == b"\x89PNG" + bytes(300) and download.content_type == "image/png"
        assert download.file_name == "img_1"
        assert parent is not None and parent.message_id == question.message_id
        assert fake.cards[card_id].texts == {"answer": "the answer"} and not fake.cards[card_id].streaming
        assert fake.reactions[question.message_id] == {}
        rest_calls = [c for c in fake.calls if not c.path.startswith("/open-apis/auth/")]
        assert len(rest_calls) == 9
        assert len(client_registry) == 1  # one client for nine calls, not one per call
        assert client_registry[0].is_closed
        with pytest.raises(FeishuApiError, match="not running"):
            await rest.get_message(question.message_id)


class RecordingCore:
    async def __call__(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        return True


async def test_adapter_keeps_one_client_from_start_to_stop(
    monkeypatch: pytest.MonkeyPatch, client_registry: list[httpx.AsyncClient]
) -> None:
    async with FakeFeishu() as fake:
        for key, value in feishu_environment(fake, fast_heartbeat=True).items():
            monkeypatch.setenv(key, value)
        adapter = FeishuAdapter(Settings())
        await adapter.start(RecordingCore())
        ref = FileRef("feishu", "img_a", "a.png", "image/*", source={"message_id": "om_a", "type": "image"})
        try:
            fake.add_resource("om_a", "img_a", b"\x89PNG" + bytes(50))
            for _ in range(3):
                assert await adapter.fetch(ref) == b"\x89PNG" + bytes(50)
        finally:
            await adapter.stop()
        assert len(client_registry) == 1 and client_registry[0].is_closed
        with pytest.raises(FileAccessDenied, match="not connected"):
            await adapter.fetch(ref)


class WireRecorder(LoopbackServer):
    """A few Feishu endpoints that record exactly what arrives: raw path, headers, body, multipart fields."""

    def __init__(self) -> None:
        self.app_id = f"cli_{uuid.uuid4().hex[:16]}"
        self.requests: list[dict[str, Any]] = []
        self.uploads_to_refuse = 1
        self.gateway_errors = 1
        self.streamed = 0
        self.stream_done = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        messages = "/open-apis/im/v1/messages/{message_id}"
        return [
            web.post("/open-apis/auth/v3/tenant_access_token/internal", self._token),
            web.post(f"{messages}/reply", self._reply),
            web.post("/open-apis/im/v1/images", self._upload),
            web.patch(messages, self._behind_a_flaky_gateway),
            web.get(f"{messages}/resources/{{file_key}}", self._stream),
        ]

    def settings(self) -> FeishuSettings:
        return FeishuSettings(app_id=self.app_id, app_secret=SecretStr("s3cret"), domain=self.url,
                              rate_limit_backoff_s=0.05, rest_timeout_s=5.0)

    async def _token(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "msg": "ok", "tenant_access_token": "t-wire", "expire": 7200})

    async def _reply(self, request: web.Request) -> web.Response:
        self.requests.append({"raw_path": request.raw_path, "headers": dict(request.headers),
                              "body": await request.json()})
        return web.json_response({"code": 0, "msg": "success", "data": {"message_id": "om_new"}})

    async def _upload(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {}
        async for part in await request.multipart():
            assert part.name is not None
            fields[part.name] = (part.filename, await part.read())  # type: ignore[union-attr]
        self.requests.append({"raw_path": request.raw_path, "headers": dict(request.headers), "fields": fields})
        if self.uploads_to_refuse > 0:
            self.uploads_to_refuse -= 1
            return web.json_response({"code": 99991400, "msg": "request trigger frequency limit"}, status=429,
                                     headers={"x-ogw-ratelimit-reset": "0.05"})
        return web.json_response({"code": 0, "msg": "success", "data": {"image_key": "img_uploaded"}})

    async def _behind_a_flaky_gateway(self, request: web.Request) -> web.Response:
        self.requests.append({"raw_path": request.raw_path, "body": await request.json()})
        if self.gateway_errors > 0:
            self.gateway_errors -= 1
            return web.Response(status=502, text="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """A file of unannounced size (chunked), written until the client hangs up."""
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while self.streamed < STREAMED_BYTES:
                await response.write(bytes(CHUNK))
                self.streamed += CHUNK
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.stream_done.set()
        return response


@pytest.fixture
async def wire() -> AsyncIterator[WireRecorder]:
    async with WireRecorder() as recorder:
        yield recorder


async def test_json_call_on_the_wire(wire: WireRecorder) -> None:
    async with FeishuRest(wire.settings()) as rest:
        new_id = await rest.reply("om_a/b?c", msg_type="text", content='{"text":"hi"}', uuid="u-1")
    assert new_id == "om_new"
    [sent] = wire.requests
    assert sent["raw_path"] == "/open-apis/im/v1/messages/om_a%2Fb%3Fc/reply"  # path parameters are encoded
    assert sent["headers"]["Authorization"] == "Bearer t-wire"
    assert sent["headers"]["User-Agent"].startswith("oapi-sdk-python/")
    assert sent["headers"]["Content-Type"].startswith("application/json")
    assert sent["body"] == {"msg_type": "text", "content": '{"text":"hi"}', "reply_in_thread": False, "uuid": "u-1"}


async def test_upload_is_multipart_and_a_retry_sends_the_whole_file(wire: WireRecorder) -> None:
    image = b"\x89PNG" + bytes(range(256)) * 40
    body = CreateImageRequestBody.builder().image_type("message").image(io.BytesIO(image)).build()
    request = CreateImageRequest.builder().request_body(body).build()
    async with FeishuRest(wire.settings()) as rest:
        response = await rest.call("uploading an image", request, CreateImageResponse)
    assert response.data is not None and response.data.image_key == "img_uploaded"
    refused, accepted = wire.requests
    for sent in (refused, accepted):
        assert sent["headers"]["Content-Type"].startswith("multipart/form-data")
        assert sent["headers"]["Authorization"] == "Bearer t-wire"
    assert accepted["fields"]["image_type"] == (None, b"message")
    assert accepted["fields"]["image"][1] == image


async def test_a_gateway_error_page_is_retried_like_a_server_error(wire: WireRecorder) -> None:
    async with FeishuRest(wire.settings()) as rest:
        await rest.patch_message("om_card", '{"elements": []}')
        wire.gateway_errors = 5
        with pytest.raises(FeishuApiError) as failed:
            await rest.patch_message("om_card", '{"elements": []}')
    assert failed.value.status == 502 and failed.value.code is None
    assert len(wire.requests) == 2 + 3  # one retry for the first call; three attempts for the second
    assert all(sent["body"] == {"content": '{"elements": []}'} for sent in wire.requests)


async def test_oversized_download_is_refused_without_reading_it_all(wire: WireRecorder) -> None:
    async with FeishuRest(wire.settings()) as rest:
        with pytest.raises(DownloadTooLarge) as too_large:
            await rest.download("om_big", "file_big", "file", max_bytes=200_000)
        await asyncio.wait_for(wire.stream_done.wait(), 10)
        assert too_large.value.size is None and too_large.value.limit == 200_000
        assert wire.streamed < STREAMED_BYTES  # the client hung up; the rest of the file was never sent
        # The same client serves the next call.
        assert await rest.reply("om_after", msg_type="text", content='{"text":"ok"}') == "om_new"
