"""A chat kept in memory, and the kit ``Surface`` of one reply in it: what the kit's streaming reply does, seen as a
person would see it (messages, their edits in time, a reaction), with faults a test can inject."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.kit.outbound import Failure, Verdict
from adapters.kit.replies import Surface


class ChatError(Exception):
    """A failed call of the memory chat; ``kind`` says what it means (``Surface.classify`` reads it)."""

    def __init__(self, kind: Failure, retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind} (retry after {retry_after_s})")
        self.kind = kind
        self.retry_after_s = retry_after_s


@dataclass
class Message:
    message_id: str
    text: str
    history: list[tuple[float, str]] = field(default_factory=list)
    part: int | None = None
    """For a further part of a long answer: its number (the platform's metadata on the message)."""
    """Every text the message showed, with the time it started showing it."""


@dataclass
class Call:
    op: str
    at: float
    text: str = ""
    ok: bool = True


class MemoryChat:
    """The messages posted in reply to one question, the reaction on it, and every call made."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.messages: dict[str, Message] = {}
        self.reacted = False
        self.calls: list[Call] = []
        self.latency_s = latency_s
        self._faults: dict[str, list[ChatError]] = {}
        self._ids = itertools.count(1)

    def fail(self, op: str, error: ChatError, times: int = 1) -> None:
        """The next ``times`` calls of ``op`` (``post``, ``edit``, ``delete``) raise ``error``."""
        self._faults.setdefault(op, []).extend([error] * times)

    def texts(self) -> list[str]:
        """What a person sees: the texts of the messages, oldest first."""
        return [m.text for m in self.messages.values()]

    def calls_of(self, op: str) -> list[Call]:
        return [c for c in self.calls if c.op == op]

    async def call(self, op: str, text: str = "") -> None:
        """Record a call of ``op``; raise an injected fault instead when one is due."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        call = Call(op, time.monotonic(), text)
        self.calls.append(call)
        faults = self._faults.get(op)
        if faults:
            call.ok = False
            raise faults.pop(0)

    def post(self, text: str, part: int | None = None) -> str:
        message = Message(f"m{next(self._ids)}", text, [(time.monotonic(), text)], part)
        self.messages[message.message_id] = message
        return message.message_id

    def edit(self, message_id: str, text: str) -> None:
        message = self.messages.get(message_id)
        if message is None:
            raise ChatError(Failure.GONE)
        message.text = text
        message.history.append((time.monotonic(), text))


class MemorySurface(Surface):
    """One reply's messages in a ``MemoryChat``; its state names the placeholder, the parts' ids and the reaction."""

    error_prefix = "! "

    def __init__(self, chat: MemoryChat, *, min_interval_s: float = 0.0) -> None:
        self.chat = chat
        self.label = "memory"
        self._min_interval_s = min_interval_s
        self.placeholder: str | None = None
        self.reacted = False
        self.closed_with: str | None = None

    @property
    def min_interval_s(self) -> float:
        return self._min_interval_s

    @property
    def has_placeholder(self) -> bool:
        return self.placeholder is not None

    def classify(self, error: BaseException) -> Verdict:
        if isinstance(error, ChatError):
            return Verdict(error.kind, error.retry_after_s)
        return Verdict(Failure.PERMANENT)

    def state(self) -> dict[str, str]:
        state = {"chat": "memory"}
        if self.placeholder is not None:
            state["placeholder"] = self.placeholder
        if self.reacted:
            state["reacted"] = "1"
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        self.placeholder = state.get("placeholder") or None
        self.reacted = state.get("reacted") == "1"

    async def post_placeholder(self, text: str) -> None:
        await self.chat.call("post", text)
        self.placeholder = self.chat.post(text)

    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        await self.chat.call("edit", text)
        assert self.placeholder is not None
        self.chat.edit(self.placeholder, text)

    def forget_placeholder(self) -> None:
        self.placeholder = None

    async def post_part(self, text: str, index: int) -> None:
        await self.chat.call("post", text)
        message_id = self.chat.post(text, part=index or None)
        if index == 0:
            self.placeholder = message_id

    async def parts_out(self, noted: int) -> int:
        posted = {m.part for m in self.chat.messages.values()}
        out = noted
        while out in posted:
            out += 1
        return out

    async def close(self, text: str) -> None:
        self.closed_with = text

    async def delete(self) -> None:
        await self.chat.call("delete")
        assert self.placeholder is not None
        self.chat.messages.pop(self.placeholder, None)

    async def react(self) -> None:
        self.chat.reacted = self.reacted = True

    async def unreact(self) -> None:
        if self.reacted:
            self.chat.reacted = self.reacted = False
