"""No credential reaches a person's eyes: credentials are fed through every output (``peekbot doctor``, log lines,
``/status``, ``/readyz`` JSON, the status page, an error reply) and the output is searched for them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from adapters.registry import platform_sections
from bot.engine import GenerationRequest
from bot.errors import EngineUnavailable
from bot.http import StatusServer
from bot.logs import setup_logging
from bot.redact import forget_all, redact, redact_url, remember, secret_values
from bot.settings import Settings
from bot.types import AdapterHealth
from bot.wiring import build_application
from tests.support.fake_openai import FakeOpenAI
from tests.support.ops_support import ControlledAdapter

ROOT = Path(__file__).resolve().parents[2]
URL_PASSWORD = "pa55-word-xyz"
QUERY_KEY = "sk-query-secret-123"
API_KEY = "sk-header-secret-456"
SLACK_BOT = "xoxb-1111-2222-botsecret"
SLACK_APP = "xapp-1-A0X-3333-appsecret"
FEISHU_SECRET = "feishu-app-secret-789"
TICKET = "T-one-time-ticket-42"
SECRETS = (URL_PASSWORD, QUERY_KEY, API_KEY, SLACK_BOT, SLACK_APP, FEISHU_SECRET, TICKET)


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


# the helper ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"https://admin:{URL_PASSWORD}@vllm:8000/v1?api_key={QUERY_KEY}&v=2",
         "https://admin:***@vllm:8000/v1?api_key=***&v=2"),
        ("https://sk-in-userinfo@gateway/v1", "https://***@gateway/v1"),
        (f"wss://msg-frontier.feishu.cn/ws/v2?device_id=7&ticket={TICKET}&service_id=1",
         "wss://msg-frontier.feishu.cn/ws/v2?device_id=7&ticket=***&service_id=1"),
        ("https://bucket.s3/x.png?X-Amz-Signature=abc123&X-Amz-Credential=AK%2F1&size=2",
         "https://bucket.s3/x.png?X-Amz-Signature=***&X-Amz-Credential=***&size=2"),
        (f"token {SLACK_BOT} and {SLACK_APP}", "token xoxb-*** and xapp-***"),
        (f"Authorization: Bearer {API_KEY}", "Authorization: Bearer ***"),
        (f'{{"AppID": "cli_1", "AppSecret": "{FEISHU_SECRET}"}}', '{"AppID": "cli_1", "AppSecret": "***"}'),
        (f"password={URL_PASSWORD} db=1", "password=*** db=1"),
        ("Bearer tokens are refused; see https://example.com/docs?page=2.", None),  # nothing to hide
        ("a monkey=5 and service_id=33", None),
        ("engine ready: {'api_key': 'set', 'model': 'm'} / {'api_key': 'not set'}", None),  # flags, not secrets
    ],
)  # fmt: skip
def test_redact_masks_credentials_and_keeps_the_rest(text: str, shown: str | None) -> None:
    assert redact(text) == (text if shown is None else shown)


def test_configured_secret_values_are_masked_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in environment(base_url="http://127.0.0.1:9/v1").items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    platform_sections(settings)  # as `peekbot` loads every platform's section at start
    values = secret_values(settings)
    assert {API_KEY, SLACK_BOT, SLACK_APP, FEISHU_SECRET} <= set(values)
    assert redact(f"the server said: bad key {API_KEY[3:]}..{API_KEY}", values).endswith("..***")
    assert redact_url("unix:///run/redis.sock?db=0") == "unix:///run/redis.sock?db=0"


# every output -------------------------------------------------------------------------------------
def environment(*, base_url: str, data_dir: Path | None = None, api_key: str = API_KEY) -> dict[str, str]:
    env = {
        "PEEKBOT_BACKEND": "openai",
        "PEEKBOT_OPENAI_BASE_URL": base_url,
        "PEEKBOT_OPENAI_MODEL": "fake/qwen2.5-vl",
        "PEEKBOT_OPENAI_API_KEY": api_key,
        "PEEKBOT_ADMINS": "slack:ADMIN",
        "PEEKBOT_HTTP_PORT": "0",
        "SLACK_BOT_TOKEN": SLACK_BOT,
        "SLACK_APP_TOKEN": SLACK_APP,
        "FEISHU_APP_ID": "cli_test",
        "FEISHU_APP_SECRET": FEISHU_SECRET,
    }
    if data_dir is not None:
        env["PEEKBOT_DATA_DIR"] = str(data_dir)
    return env


def credentialed(url: str) -> str:
    """``url`` with a password in its user-info and a key in its query."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://admin:{URL_PASSWORD}@{rest}?api_key={QUERY_KEY}"


def test_doctor_shows_where_but_not_the_credentials(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    runs = [  # a password in the URL (HTTP Basic), or a bearer key: a request has room for one of them
        (credentialed("https://vllm.internal:8000/v1"), "", "https://admin:***@vllm.internal:8000/v1?api_key=***"),
        (f"https://vllm.internal:8000/v1?api_key={QUERY_KEY}", API_KEY, "https://vllm.internal:8000/v1?api_key=***"),
    ]
    for url, api_key, shown in runs:
        env = {**base, **environment(base_url=url, data_dir=tmp_path, api_key=api_key)}
        done = subprocess.run([sys.executable, "-m", "bot.cli", "doctor"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        assert f"remote OpenAI-compatible server {shown}, model" in done.stdout
        assert leaked(done.stdout + done.stderr) == []


class LeakyAdapter(ControlledAdapter):
    """An adapter whose health detail carries what a connection error might: a ticket URL and a token."""

    def __init__(self) -> None:
        super().__init__("slack")

    async def health(self) -> AdapterHealth:
        return AdapterHealth(connected=False, detail=f"wss://push.example/ws?ticket={TICKET} refused {SLACK_BOT}")


class FailingEngine:
    """The remote engine, except that every question fails with a message naming the server's full URL."""

    def __init__(self, inner: object, url: str) -> None:
        self.inner = inner
        self.url = url

    def submit(self, request: GenerationRequest) -> object:
        raise EngineUnavailable(f"the model server at {self.url} cannot be reached")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def project_logging() -> Iterator[None]:
    """``setup_logging`` changes the root logger and the warnings hook; put both back afterwards."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, warnings.showwarning
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    warnings.showwarning = hook
    forget_all()


async def test_log_lines_status_page_json_and_error_replies_hide_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, project_logging: None
) -> None:
    for fmt in ("text", "json"):
        setup_logging("INFO", fmt)
        async with FakeOpenAI(api_key=None) as model:
            url = credentialed(model.base_url)
            # A password in the URL (HTTP Basic) leaves no room for a bearer key: the key only appears in a log line.
            for key, value in environment(base_url=url, data_dir=tmp_path / fmt, api_key="").items():
                monkeypatch.setenv(key, value)
            settings = Settings()
            platform_sections(settings)
            remember(secret_values(settings))
            adapter = LeakyAdapter()
            app = build_application(settings, adapters=[adapter])
            server = StatusServer(app, port=0)
            app.services.append(server)
            async with app:
                log = logging.getLogger("tests.redaction")
                log.warning("calling %s with Authorization: Bearer %s", url, API_KEY)
                try:
                    raise RuntimeError(f"connect to {url} failed ({SLACK_APP})")
                except RuntimeError:
                    log.exception("start-up problem")

                status = await adapter.ask("/status", user="ADMIN")
                async with aiohttp.ClientSession() as session:
                    async with session.get(server.url + "/readyz") as response:
                        ready = await response.json()
                    async with session.get(server.url + "/status") as response:
                        page = await response.text()
                app.engine = FailingEngine(app.engine, url)  # type: ignore[assignment]
                failed = await adapter.ask("what is this?", user="U1")
        err = capsys.readouterr().err
        assert "engine ready" in err and "base_url" in err  # the lines were written …
        assert "start-up problem" in err and "Traceback" in err
        assert leaked(err) == [], fmt  # … without the credentials
        if fmt == "json":
            assert all(json.loads(line)["msg"] for line in err.splitlines() if line.startswith("{"))

        assert status.final is not None and f"on remote 127.0.0.1:{urlsplit(url).port}." in status.final
        assert leaked(status.final) == []
        assert ready["ready"] is False and any("ticket=***" in reason for reason in ready["reasons"])
        assert leaked(json.dumps(ready)) == []
        assert "ticket=***" in page and leaked(page) == []
        assert failed.error is not None and "the model server at http://admin:***@127.0.0.1" in failed.error
        assert leaked(failed.error) == []


def test_a_terminal_session_shows_no_library_chatter(capsys: pytest.CaptureFixture[str], project_logging: None) -> None:
    setup_logging("WARNING", "text", library_level="ERROR")  # what `peekbot chat` sets up
    logging.getLogger("transformers.generation").warning("Setting pad_token_id to eos_token_id")
    logging.getLogger("bot.questions").warning("the project's own warning")
    logging.getLogger("slack_sdk").error("a library's error")
    warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "the project's own warning" in err and "a library's error" in err
    assert "pad_token_id" not in err and "Warning" not in err

    setup_logging("DEBUG", "text")  # `-v`: everything, the warning as a debug line
    warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=1)
    assert "DEBUG py.warnings [- - -] FutureWarning: `past_key_values` is deprecated" in capsys.readouterr().err
