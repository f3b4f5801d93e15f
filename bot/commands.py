"""Chat commands (``/help``, ``/status``, admin commands). One implementation for every platform."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.types import IncomingMessage

if TYPE_CHECKING:
    from bot.app import Application

CommandHandler = Callable[["Application", IncomingMessage, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    handler: CommandHandler
    admin_only: bool = False


def parse_command(text: str) -> tuple[str, str]:
    """Split ``"/reconnect slack"`` (or ``"reconnect slack"``) into ``("reconnect", "slack")``."""
    line = text.strip().removeprefix("/")
    name, _, rest = line.partition(" ")
    return name.lower(), rest.strip()


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _fmt_seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


async def _help(app: Application, message: IncomingMessage, _: str) -> str:
    is_admin = app.is_admin(message.user)
    lines = [
        "I answer questions about screenshots, photos and PDFs. Send an image or a PDF with your question "
        "(in a channel, mention me). Follow-up questions in the same thread keep the context.",
        "",
        "Commands:",
    ]
    for command in app.commands.values():
        if command.admin_only and not is_admin:
            continue
        suffix = " (admin)" if command.admin_only else ""
        lines.append(f"• /{command.name} — {command.summary}{suffix}")
    return "\n".join(lines)


async def _status(app: Application, message: IncomingMessage, _: str) -> str:
    stats = app.engine.stats()
    state = "paused for maintenance" if app.paused else ("ready" if stats.ready else "starting")
    lines = [
        f"peekbot is {state}; up {_fmt_duration(time.time() - app.started_at)}.",
        f"Queue: {stats.queue_depth} waiting, {stats.in_flight} being answered.",
    ]
    if not app.is_admin(message.user):
        return "\n".join(lines)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.requests_by_outcome.items())) or "none yet"
    lines += [
        f"Model: {stats.model} on {stats.device}.",
        f"Requests: {outcomes}. Latency p50 {_fmt_seconds(stats.latency_p50_s)}, "
        f"p95 {_fmt_seconds(stats.latency_p95_s)} (last hour); {stats.tokens_per_s:.1f} tokens/s.",
    ]
    if stats.memory:
        lines.append("Memory: " + ", ".join(f"{k} {v:,.1f}" for k, v in sorted(stats.memory.items())))
    for name, health in (await app.adapter_health()).items():
        connected = "connected" if health.connected else "DISCONNECTED"
        age = "" if health.last_event_age_s is None else f", last event {health.last_event_age_s:.0f} s ago"
        lines.append(f"{name}: {connected}, {health.reconnects} reconnects{age}.")
    return "\n".join(lines)


async def _reset(app: Application, message: IncomingMessage, _: str) -> str:
    forgotten = app.memory.reset(message.conversation)
    return "Done: I forgot this thread's earlier questions." if forgotten else "There was nothing to forget here."


async def _pause(app: Application, _message: IncomingMessage, _: str) -> str:
    app.paused = True
    return "Paused: new questions get a polite 'back soon' until an admin runs /resume."


async def _resume(app: Application, _message: IncomingMessage, _: str) -> str:
    app.paused = False
    return "Resumed: I'm answering questions again."


async def _reconnect(app: Application, _message: IncomingMessage, argument: str) -> str:
    name = argument.strip().lower()
    adapter = app.adapters.get(name)
    if adapter is None:
        known = ", ".join(sorted(app.adapters)) or "none"
        return f"Unknown platform {name!r}. Connected platforms: {known}. Usage: /reconnect <platform>"
    await adapter.reconnect()
    return f"Reconnecting {name} now."


BUILTIN_COMMANDS: tuple[Command, ...] = (
    Command("help", "what I can do and the commands", _help),
    Command("status", "whether I'm up and how busy I am", _status),
    Command("reset", "forget the earlier questions of this thread", _reset),
    Command("pause", "maintenance mode: reply 'back soon' to new questions", _pause, admin_only=True),
    Command("resume", "leave maintenance mode", _resume, admin_only=True),
    Command("reconnect", "force a fresh connection: /reconnect slack|feishu", _reconnect, admin_only=True),
)
