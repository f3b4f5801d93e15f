"""Start-up problems end in one sentence naming the setting to fix (exit 2, no traceback); ``peekbot bench --json``
works. The real console script runs in a subprocess. (``tests/ops/test_cli.py`` checks that ``peekbot chat --demo``
shows no library warnings.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import StartupError
from bot.http import StatusServer
from bot.settings import Settings
from bot.wiring import build_application

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("peekbot")  # the installed `peekbot` of the venv running the tests


def peekbot(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    full_env.update(env)
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """Enough for `peekbot run` to get past "no platform" (nothing is contacted before the checks under test)."""
    return {
        "PEEKBOT_DATA_DIR": str(tmp_path / "data"),
        "PEEKBOT_MODEL": str(tmp_path / "no-model-needed"),
        "PEEKBOT_HTTP_PORT": "0",
        "SLACK_BOT_TOKEN": "xoxb-1-2-startup",
        "SLACK_APP_TOKEN": "xapp-1-A1-3-startup",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def assert_clean_failure(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    message = next(line for line in done.stderr.splitlines() if line.startswith("peekbot: "))
    for word in words:
        assert word in message
    return message


def test_a_busy_http_port_is_named_before_the_model_loads(run_env: dict[str, str], taken_port: int) -> None:
    started = time.monotonic()
    done = peekbot("run", env={**run_env, "PEEKBOT_HTTP_PORT": str(taken_port)})
    assert_clean_failure(done, f"127.0.0.1:{taken_port}", "PEEKBOT_HTTP_PORT", "PEEKBOT_HTTP_HOST")
    assert time.monotonic() - started < 60


async def test_the_status_server_itself_names_the_settings_when_it_cannot_listen(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in {"PEEKBOT_BACKEND": "openai", "PEEKBOT_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                       "PEEKBOT_OPENAI_MODEL": "m", "PEEKBOT_DATA_DIR": str(tmp_path)}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    server = StatusServer(build_application(Settings(), adapters=[], services=False), port=taken_port)  # not started
    with pytest.raises(StartupError, match="PEEKBOT_HTTP_PORT") as refused:
        await server.start()
    assert "in use" in str(refused.value)


@pytest.mark.parametrize("command", [["run"], ["chat", "--demo", "hi"]], ids=" ".join)
def test_an_unwritable_data_dir_is_named(run_env: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = peekbot(*command, env={**run_env, "PEEKBOT_DATA_DIR": str(blocker / "data")})
    assert_clean_failure(done, str(blocker / "data"), "PEEKBOT_DATA_DIR")


def test_an_unreachable_redis_is_named_without_its_password(run_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = peekbot("run", env={**run_env, "PEEKBOT_STORE_URL": f"redis://admin:hunter2-pw@127.0.0.1:{port}/0"})
    message = assert_clean_failure(done, "PEEKBOT_STORE_URL", f"redis://admin:***@127.0.0.1:{port}/0")
    assert "hunter2" not in message


def test_an_invalid_setting_is_named(run_env: dict[str, str]) -> None:
    done = peekbot("run", env={**run_env, "PEEKBOT_HTTP_PORT": "eighty"})
    assert_clean_failure(done, "PEEKBOT_HTTP_PORT", "integer")


def test_bench_writes_its_json_through_the_console_script(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = peekbot(
        "bench", "--model", str(tiny_qwen3_dir), "--mode", "engine", "--requests", "1", "--concurrency", "1",
        "--max-new-tokens", "1", "--max-pixels", str(128 * 128), "--device", "cpu", "--extras", "off",
        "--threads", "1", "--worker-timeout", "120", "--json", str(out),
        env={"PEEKBOT_DATA_DIR": str(tmp_path / "data")}, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "generated tokens/s" in done.stdout and f"JSON written to {out}" in done.stdout
    assert '"engine"' in out.read_text()
