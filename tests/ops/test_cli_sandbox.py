"""``peekbot sandbox`` as a person starts it: it serves its page and stops on Ctrl-C; a taken port is a sentence."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.ops.test_cli import ROOT, peekbot


def environment(tmp_path: Path, model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    env.update(
        PEEKBOT_DATA_DIR=str(tmp_path / "data"),
        PEEKBOT_MODEL=str(model),
        PEEKBOT_DEVICE="cpu",
        PEEKBOT_WARMUP="false",
        PEEKBOT_MAX_NEW_TOKENS="8",
    )
    return env


async def test_sandbox_serves_its_page_and_stops_on_ctrl_c(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "sandbox",
        "--port",
        "0",
        "--no-browser",
        cwd=ROOT,
        env=environment(tmp_path, tiny_qwen3_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        url, said = None, []
        while url is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
            assert line, "".join(said[-20:])
            said.append(line)
            found = re.search(r"open (http://127\.0\.0\.1:\d+)/ in a browser", line)
            url = found.group(1) if found else None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/") as page:
                assert page.status == 200 and "peekbot sandbox" in await page.text()
            async with session.get(f"{url}/api/channels") as response:
                assert (await response.json())["status_url"].endswith("/status")
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_sandbox_on_a_taken_port_says_so_before_loading_the_model(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = peekbot(
            "sandbox",
            "--port",
            str(port),
            "--no-browser",
            timeout=60,
            env={"PEEKBOT_DATA_DIR": str(tmp_path / "data"), "PEEKBOT_MODEL": str(tmp_path / "absent")},
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot serve the sandbox on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
