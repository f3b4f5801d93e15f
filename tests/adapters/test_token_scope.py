"""Credentials go only where they belong: the Slack bot token to Slack, the model server's key to its server,
the Feishu app secret and tenant token to ``FEISHU_DOMAIN``.

A second loopback server plays the foreign host and records every request it gets; the real adapters and the
real application run against the loopback fakes.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme
from aiohttp import web
from lark_oapi.api.im.v1 import GetMessageRequest, GetMessageResponse
from PIL import Image
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from adapters.feishu import FeishuAdapter, FeishuStartupError
from adapters.feishu.connection import endpoint_problem
from adapters.feishu.rest import FeishuApiError, FeishuRest
from adapters.feishu.settings import FeishuSettings
from adapters.slack import SlackAdapter
from adapters.slack.events import file_ref
from adapters.slack.files import MAX_REDIRECTS, FileFetcher, TokenScope
from bot.errors import EngineUnavailable, FileAccessDenied
from bot.settings import CoreSettings, EngineSettings, Settings
from bot.wiring import build_application
from inference.remote import OpenAIEngine
from sandbox.loopback import LoopbackServer
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import peekbot_environment, set_environment
from tests.support.fake_feishu import FakeFeishu, feishu_environment
from tests.support.fake_openai import FakeOpenAI

MENTION = f"<@{FakeSlack.BOT_USER_ID}>"
OUTSIDE = "I can't open files stored outside Slack"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class ForeignHost(LoopbackServer):
    """A loopback server that records every request: serves a PNG at ``/shot.png``, redirects ``/to?url=…``; any
    other path is redirected (307) to ``send_to`` + path when that is set, else 404."""

    ssl_context: ssl.SSLContext | None = None
    send_to: str | None = None
    requests: list[Seen] = field(default_factory=list)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/shot.png", self._shot), web.get("/to", self._to), web.route("*", "/{tail:.*}", self._any)]

    def saw_token(self, token: str) -> bool:
        return any(
            token in value
            for seen in self.requests
            for value in (seen.path, seen.body.decode(errors="replace"), *seen.headers.values())
        )

    async def _shot(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path_qs, dict(request.headers)))
        return web.Response(body=png(), content_type="image/png")

    async def _to(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path_qs, dict(request.headers)))
        raise web.HTTPFound(request.query["url"])

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path_qs, dict(request.headers), await request.read()))
        if self.send_to is None:
            raise web.HTTPNotFound()
        raise web.HTTPTemporaryRedirect(self.send_to + request.path_qs)


# the rule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.png", True),
        ("https://FILES.slack.com./files-pri/T1-F1/a.png", True),
        ("http://files.slack.com/files-pri/T1-F1/a.png", False),  # never in clear text
        ("https://files.slack.com:8443/files-pri/T1-F1/a.png", False),
        ("https://files.slack.com.evil.example/files-pri/a.png", False),
        ("https://files.slack.com@evil.example/a.png", False),  # user-info, the host is evil.example
        ("https://evil.example/files.slack.com/a.png", False),
        ("https://slack.com/api/files.info", True),  # the API itself
        ("https://slack.com:444/api/", False),
        ("https://drive.google.com/file/d/1/view", False),
        ("ftp://files.slack.com/a.png", False),
        ("not a url", False),
    ],
)
def test_the_token_goes_only_to_slack_file_hosts_and_the_configured_api(url: str, allowed: bool) -> None:
    assert TokenScope("https://slack.com/api/").allows(url) is allowed


def test_a_loopback_api_url_is_trusted_for_its_exact_host_and_port_only() -> None:
    scope = TokenScope("http://127.0.0.1:5000/api/", ["files.slack.com", "files.slack-gov.com"])
    assert scope.allows("http://127.0.0.1:5000/files-pri/T-F1/a.png")
    assert not scope.allows("http://127.0.0.1:5001/files-pri/T-F1/a.png")
    assert not scope.allows("https://127.0.0.1:5000/files-pri/T-F1/a.png")
    assert not scope.allows("http://localhost:5000/files-pri/T-F1/a.png")
    assert scope.allows("https://files.slack-gov.com/files-pri/T-F1/a.png")  # SLACK_FILE_HOSTS


# through the whole bot ----------------------------------------------------------------------------
@dataclass
class Bot:
    slack: FakeSlack
    model: FakeOpenAI
    foreign: ForeignHost


@pytest.fixture
async def bot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Bot]:
    """The real application with the Slack adapter; the model is a loopback OpenAI-compatible server."""
    async with FakeSlack(ack_timeout_s=1.0) as slack, FakeOpenAI() as model, ForeignHost() as foreign:
        set_environment(monkeypatch, {
            **peekbot_environment(backend="openai", openai_base_url=model.base_url, openai_model=model.model,
                                  openai_api_key=model.api_key or "", data_dir=tmp_path / "data", http_port=0,
                                  max_pixels=128 * 128),
            **slack_environment(slack),
        })
        settings = Settings()
        async with build_application(settings, adapters=[SlackAdapter(settings)], services=False):
            yield Bot(slack, model, foreign)


async def ask(bot: Bot, file: dict[str, Any]) -> str:
    question = bot.slack.user_message("C0GENERAL", f"{MENTION} what does this say?", files=[file])
    await bot.slack.send_event(question)
    return "\n".join(await bot.slack.wait_answered(question))


async def test_a_file_stored_outside_slack_gets_a_reply_and_no_request(bot: Bot) -> None:
    file = bot.slack.add_file("shot.png", png(), "image/png")
    file["url_private"] = file["url_private_download"] = f"{bot.foreign.url}/shot.png"
    answer = await ask(bot, file)
    assert OUTSIDE in answer and "shot.png" in answer
    assert bot.foreign.requests == []  # not even a request without the token
    assert bot.model.requests == []


async def test_a_redirect_away_from_slack_is_followed_without_the_token(bot: Bot) -> None:
    file = bot.slack.add_file("shot.png", b"unused", "image/png", redirect=f"{bot.foreign.url}/shot.png")
    answer = await ask(bot, file)
    assert "disk quota exceeded" in answer  # the image from the other host reached the model
    assert len(bot.model.requests[0].images) == 1
    assert [seen.path for seen in bot.foreign.requests] == ["/shot.png"]
    assert "Authorization" not in bot.foreign.requests[0].headers
    assert not bot.foreign.saw_token(bot.slack.BOT_TOKEN)
    assert bot.slack.downloads == [(file["id"], True)]  # Slack itself got the token


async def test_a_hop_back_to_slack_after_leaving_it_gets_no_token_either(bot: Bot) -> None:
    inner = bot.slack.add_file("inner.png", png(), "image/png")
    file = bot.slack.add_file(
        "shot.png", b"unused", "image/png", redirect=f"{bot.foreign.url}/to?url={inner['url_private_download']}"
    )
    answer = await ask(bot, file)
    assert "invite" in answer  # Slack answered the token-less hop with its sign-in page
    assert bot.slack.downloads == [(file["id"], True), (inner["id"], False)]
    assert not bot.foreign.saw_token(bot.slack.BOT_TOKEN)


# redirects, hop by hop ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


Fetch = Callable[[str, str], Awaitable[bytes]]


@pytest.fixture
async def fetch_from(authority: trustme.CA) -> AsyncIterator[Callable[[str], Fetch]]:
    """``fetch_from(api_url)(url, name)``: a FileFetcher whose session trusts the test CA."""
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context)) as session:

        def make(api_url: str) -> Fetch:
            web_client = AsyncWebClient(token=FakeSlack.BOT_TOKEN, base_url=api_url)
            fetcher = FileFetcher(web_client, session, bot_token=FakeSlack.BOT_TOKEN, max_bytes=10**6, timeout_s=10)

            async def fetch(url: str, name: str) -> bytes:
                slim = {"id": "F1", "name": name, "url_private_download": url}
                return await fetcher.fetch(file_ref(slim))

            return fetch

        yield make


async def test_https_to_plain_http_is_refused_before_any_request(
    authority: trustme.CA, fetch_from: Callable[[str], Fetch]
) -> None:
    async with ForeignHost(server_context(authority)) as slack, ForeignHost() as plain:
        fetch = fetch_from(f"{slack.url}/api/")  # an https "Slack" on loopback
        with pytest.raises(FileAccessDenied) as refused:
            await fetch(f"{slack.url}/to?url={plain.url}/shot.png", "shot.png")
    assert "not secure (https)" in refused.value.user_message
    assert len(slack.requests) == 1 and slack.requests[0].headers["Authorization"].startswith("Bearer xoxb-")
    assert plain.requests == []


async def test_an_https_hop_to_another_host_carries_no_token(
    authority: trustme.CA, fetch_from: Callable[[str], Fetch]
) -> None:
    async with ForeignHost(server_context(authority)) as slack, ForeignHost(server_context(authority)) as cdn:
        fetch = fetch_from(f"{slack.url}/api/")
        assert await fetch(f"{slack.url}/to?url={cdn.url}/shot.png", "shot.png") == png()
    assert "Authorization" not in cdn.requests[0].headers
    assert not cdn.saw_token(FakeSlack.BOT_TOKEN)


async def test_redirects_are_bounded(fetch_from: Callable[[str], Fetch]) -> None:
    async with ForeignHost() as slack:
        fetch = fetch_from(f"{slack.url}/api/")
        loop = f"{slack.url}/shot.png"
        for _ in range(MAX_REDIRECTS + 1):
            loop = f"{slack.url}/to?url={quote(loop, safe='')}"
        with pytest.raises(FileAccessDenied) as refused:
            await fetch(loop, "loop.png")
    assert f"more than {MAX_REDIRECTS} times" in refused.value.user_message
    assert len(slack.requests) == MAX_REDIRECTS + 1


# Feishu --------------------------------------------------------------------------------------------
def feishu_settings(fake: FakeFeishu) -> FeishuSettings:
    return FeishuSettings(app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url,
                          rest_timeout_s=5.0, rate_limit_backoff_s=0.05)  # fmt: skip


async def test_a_redirected_feishu_token_request_sends_the_app_secret_nowhere_else() -> None:
    async with FakeFeishu() as fake, ForeignHost() as foreign:
        fake.redirects["/open-apis/auth/v3/tenant_access_token/internal"] = f"{foreign.url}/steal"
        async with FeishuRest(feishu_settings(fake)) as rest:
            with pytest.raises(FeishuApiError, match="tenant access token"):
                await rest.bot_info()
    assert foreign.requests == []


async def test_a_feishu_request_addressed_outside_the_domain_is_not_sent() -> None:
    async with FakeFeishu() as fake, ForeignHost() as foreign:
        message = fake.add_message(chat_id="oc_dm", msg_type="text", content={"text": "hi"})
        async with FeishuRest(feishu_settings(fake)) as rest:
            request = GetMessageRequest.builder().message_id(message.message_id).build()
            assert await rest.call("reading a message", request, GetMessageResponse)  # the tenant token is fetched
            request.uri = f"{foreign.url}/open-apis/im/v1/messages/:message_id"
            with pytest.raises(FeishuApiError, match="outside FEISHU_DOMAIN"):
                await rest.call("reading a message", request, GetMessageResponse)
    assert foreign.requests == []


async def test_a_redirected_long_connection_discovery_sends_the_app_secret_nowhere_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeFeishu() as fake, ForeignHost() as foreign:
        fake.redirects["/callback/ws/endpoint"] = f"{foreign.url}/callback/ws/endpoint"
        for key, value in feishu_environment(fake).items():
            monkeypatch.setenv(key, value)
        adapter = FeishuAdapter(Settings())
        with pytest.raises(FeishuStartupError, match="FEISHU_DOMAIN"):
            await adapter.start(lambda *_: asyncio.sleep(0, True))  # type: ignore[arg-type,return-value]
    assert foreign.requests == []
    assert not foreign.saw_token(fake.app_secret)


@pytest.mark.parametrize(
    ("url", "domain", "fine"),
    [
        ("wss://msg-frontier.feishu.cn/ws/v2?device_id=1&ticket=t", "https://open.feishu.cn", True),
        ("ws://msg-frontier.feishu.cn/ws/v2?device_id=1", "https://open.feishu.cn", False),  # a downgrade
        ("ws://127.0.0.1:9000/ws?device_id=1", "http://127.0.0.1:9000", True),  # a plain test server
        ("https://msg-frontier.feishu.cn/ws/v2", "https://open.feishu.cn", False),
        ("javascript:alert(1)", "https://open.feishu.cn", False),
    ],
)
def test_the_long_connection_url_must_be_a_websocket_no_weaker_than_the_domain(
    url: str, domain: str, fine: bool
) -> None:
    assert (endpoint_problem(url, domain) is None) is fine


# the remote model server ---------------------------------------------------------------------------
async def test_a_redirecting_model_server_is_reported_and_nothing_is_sent_on() -> None:
    async with ForeignHost() as elsewhere, ForeignHost(send_to=elsewhere.url) as server:
        core = CoreSettings(backend="openai", openai_base_url=f"{server.url}/v1", openai_model="m",
                            openai_api_key=SecretStr("sk-remote-key-123"), openai_connect_timeout_s=2)  # fmt: skip
        engine = OpenAIEngine(core, EngineSettings())
        with pytest.raises(EngineUnavailable, match="PEEKBOT_OPENAI_BASE_URL"):
            await engine.start()
    assert [seen.path for seen in server.requests] == ["/v1/models"]
    assert server.requests[0].headers["Authorization"] == "Bearer sk-remote-key-123"  # the configured server
    assert elsewhere.requests == []
