"""Driving ``peekbot sandbox`` in a test through its own API: a running sandbox on the tiny model, and its event
stream read as the page reads it (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.runner import Sandbox
from tests.support.ops_support import configure, tiny_engine

Event = tuple[str, dict[str, Any]]


@pytest.fixture
async def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen3_dir: Path) -> AsyncIterator[Sandbox]:
    """``peekbot sandbox`` on the tiny model, its page on a free port (no admins but the sandbox's own)."""
    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir, ADMINS="", DRAIN_TIMEOUT_S=2)
    async with Sandbox(settings, port=0, engine=tiny_engine(settings)) as running:
        yield running


class EventStream:
    """``GET /api/events``, read in the background; ``wait`` finds the first event (old or new) that matches."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self.events: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with self._session.get(f"{self._url}/api/events") as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            self._opened.set()
            name, data = "message", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data += line.partition(":")[2].strip()
                elif not line and data:
                    self.events.append((name, json.loads(data)))
                    name, data = "message", ""

    async def wait(self, predicate: Callable[[str, dict[str, Any]], bool], what: str, timeout: float = 30.0) -> Event:
        deadline = time.monotonic() + timeout
        looked = 0  # each event is shown to the predicate once, in order (it may keep state)
        while True:
            for event in self.events[looked:]:
                looked += 1
                if predicate(*event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; saw {self.events[-5:]}")
            await asyncio.sleep(0.02)

    def bot_messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Every state of the bot's messages in the thread (text, streaming, buttons…), in the order told."""
        return [
            data
            for name, data in self.events
            if name == "message" and data["bot"] and data["channel"] == channel and data["thread_ts"] == thread_ts
        ]


def answered(channel: str, ts: str) -> Callable[[str, dict[str, Any]], bool]:
    """The question's progress reaction came off: the bot finished answering it."""
    seen_reaction = False

    def check(name: str, data: dict[str, Any]) -> bool:
        nonlocal seen_reaction
        if name != "message" or data["channel"] != channel or data["ts"] != ts:
            return False
        seen_reaction = seen_reaction or "eyes" in data["reactions"]
        return seen_reaction and "eyes" not in data["reactions"]

    return check
