"""The bot as a real process (``peekbot run``) for end-to-end tests and benchmarks: start, signal, reap, read its log.

    bot = BotProcess(child_environment({"PEEKBOT_MODEL": ..., **slack_environment(fake)}), tmp_path / "bot.log")
    ...
    assert await bot.terminate(60) == 0
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN_PREFIXES = ("PEEKBOT_", "SLACK_", "FEISHU_", "WATCHDOG_")
"""Variables of the bot (and of systemd's watchdog) that the test's own environment must not leak into a child."""


def child_environment(values: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any of the bot's own variables, plus ``values``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(OWN_PREFIXES)}
    env.update(values)
    return env


class BotProcess:
    """One bot process (``python -m bot.cli run`` unless ``command`` says otherwise) in the repository, its output
    in the file ``log``; signalled, reaped and closed by the test."""

    def __init__(self, env: Mapping[str, str], log: Path, command: Sequence[str] = ("-m", "bot.cli", "run")) -> None:
        self.log = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout_s: float) -> int:
        """SIGTERM; its exit code (``subprocess.TimeoutExpired`` when it is still running after ``timeout_s``)."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout_s)

    async def wait(self, timeout_s: float) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    def close(self) -> None:
        """Kill it if it still runs; close the log."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    """The test appends the processes it starts; each is closed (killed if still running) at the end."""
    started: list[BotProcess] = []
    yield started
    for bot in started:
        bot.close()
