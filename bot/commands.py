"""Chat commands (``/help``, ``/status``, admin commands). One implementation for every platform."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import fmt
from bot.i18n import CATALOGUE, lang_for, say
from bot.instructions import instructions_command, status_line
from bot.store.base import AuditSummary
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

    def summary_in(self, lang: str) -> str:
        """``summary`` in ``lang``: the catalogue's ``help.cmd.<name>`` for a built-in command (``bot.i18n``)."""
        key = f"help.cmd.{self.name}"
        return say(key, lang) if key in CATALOGUE else self.summary


def looks_like_command(text: str) -> bool:
    """``/status`` or ``/reconnect slack`` — but not a question that starts with a path like ``/usr/bin/x``."""
    if not text.startswith("/"):
        return False
    name, _ = parse_command(text)
    return re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name) is not None


def parse_command(text: str) -> tuple[str, str]:
    """Split ``"/reconnect slack"`` (or ``"reconnect slack"``) into ``("reconnect", "slack")``."""
    line = text.strip().removeprefix("/")
    name, _, rest = line.partition(" ")
    return name.lower(), rest.strip()


async def _help(app: Application, message: IncomingMessage, _: str) -> str:
    is_admin = app.is_admin(message.user)
    lang = lang_for(message)
    lines = [say("help.intro", lang), "", say("help.commands", lang)]
    for command in app.commands.values():
        if command.admin_only and not is_admin:
            continue
        suffix = say("help.admin", lang) if command.admin_only else ""
        lines.append(f"• /{command.name} — {command.summary_in(lang)}{suffix}")
    return "\n".join(lines)


async def _status(app: Application, message: IncomingMessage, _: str) -> str:
    from bot.report import collect_status

    report = await collect_status(app)
    stats = report.engine
    lang = lang_for(message)
    lines = [
        say("status.state", lang, state=report.state, uptime=fmt.duration(report.uptime_s)),
        say("status.queue", lang, waiting=stats.queue_depth, running=stats.in_flight),
    ]
    instructions = await status_line(app, message)
    if instructions is not None:
        lines.append(instructions)
    if not app.is_admin(message.user):
        return "\n".join(lines)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.requests_by_outcome.items()) if v) or "none yet"
    in_progress = max(report.questions_in_flight - 1, 0)  # this /status command is one of them
    lines += [
        f"Model: {stats.model} on {stats.device}.",
        f"Questions: {report.answered} answered, {report.failed} failed, {in_progress} in progress; "
        f"engine requests: {outcomes}.",
        f"Latency (last hour): answers p50 {fmt.seconds(report.answer_latency_p50_s)}, "
        f"p95 {fmt.seconds(report.answer_latency_p95_s)}; engine p50 {fmt.seconds(stats.latency_p50_s)}, "
        f"p95 {fmt.seconds(stats.latency_p95_s)}; {stats.tokens_per_s:.1f} tokens/s.",
    ]
    if report.gpu_reserved_bytes is not None:
        lines.append(f"GPU memory: allocated {fmt.size(report.gpu_allocated_bytes)}, reserved "
                     f"{fmt.size(report.gpu_reserved_bytes)}, fragmentation {fmt.percent(report.gpu_fragmentation)}.")
    else:
        lines.append("GPU memory: no GPU in use.")
    lines.append(f"Host memory: RSS {fmt.size(report.host_rss_bytes)}.")
    if stats.image_cache:
        cache = stats.image_cache
        lines.append(f"Image cache: {fmt.size(cache['bytes'])} of {fmt.size(cache['budget_bytes'])} "
                     f"({cache['entries']:.0f} held); hit rate {fmt.percent(cache['hit_rate'])}.")
    if report.engine_alive is False:
        lines.append(f"Model worker: STUCK, it did not answer the last ping ({report.engine_stuck_count} missed).")
    elif report.engine_stuck_count:
        lines.append(f"Model worker: answers pings again ({report.engine_stuck_count} missed so far).")
    for adapter in report.adapters:
        health = adapter.health
        if health.connected:
            since = f" for {fmt.duration(time.time() - health.connected_since)}" if health.connected_since else ""
            connected = "connected" + since
        else:
            connected = "DISCONNECTED" + (f" ({health.detail})" if health.detail else "")
        age = "" if health.last_event_age_s is None else f", last event {fmt.age(health.last_event_age_s)}"
        forced = f" ({adapter.forced_reconnects} by the watchdog)" if adapter.forced_reconnects else ""
        lines.append(f"{adapter.name}: {connected}, {health.reconnects} reconnects{forced}{age}.")
    if report.jobs:
        lines.append("Scheduler jobs:")
        for job in report.jobs:
            if job.last is None:
                lines.append(f"• {job.name} (every {job.interval_s:g} s): not run yet")
                continue
            detail = f" — {job.last.detail}" if job.last.detail else ""
            failures = f"; {job.failures} failures so far" if job.failures else ""
            when = fmt.age(time.time() - job.last.started_at)
            lines.append(f"• {job.name} (every {job.interval_s:g} s): {job.last.outcome} {when}"
                         f" in {fmt.seconds(job.last.duration_s)}{detail}{failures}")
    else:
        lines.append("Scheduler: not running.")
    return "\n".join(lines)


async def _cleanup(app: Application, _message: IncomingMessage, _: str) -> str:
    maintenance = app.maintenance
    if maintenance is None:
        return "The scheduler is not running, so there is no memory cleanup to run."
    run = await maintenance.cleanup_now()
    if run.outcome == "ok":
        return f"Memory cleanup done in {fmt.seconds(run.duration_s)}: {run.detail}."
    return f"Memory cleanup {run.outcome}: {run.detail}."


async def _stats(app: Application, _message: IncomingMessage, argument: str) -> str:
    days = 7
    if argument.strip():
        if not argument.strip().isdigit() or not 1 <= int(argument) <= app.usage.retention_days:
            return f"Usage: /stats [days], with days from 1 to {app.usage.retention_days}."
        days = int(argument)
    per_day = app.usage.days(days)
    total = sum(usage.requests for _, usage in per_day)
    audit = await app.store.audit.summary(time.time() - days * 86400, top=10)
    if not total and not audit.questions:
        return f"No questions in the last {days} days."
    failed = sum(usage.failed for _, usage in per_day)
    rated = await app.ratings.summary(days)
    lines = [f"Usage over the last {days} days: {total} questions, {failed} failed.", rated.line(), "By day (UTC):"]
    lines += [f"• {day}: {usage.requests} questions, {usage.failed} failed, {usage.generated_tokens:,} tokens"
              for day, usage in per_day if usage.requests]
    lines.append("Top channels:")
    lines += [f"• {channel}: {count}" for channel, count in app.usage.top("channels", 10, days)]
    lines.append("Top users:")
    lines += [f"• {user}: {count}" for user, count in app.usage.top("users", 10, days)]
    lines += _audit_lines(audit, days)
    return "\n".join(lines)


def _audit_lines(audit: AuditSummary, days: int) -> list[str]:
    """The journal's view, which survives restarts: every question by outcome, including refusals."""
    if not audit.questions:
        return []
    outcomes = ", ".join(f"{count} {outcome.replace('_', ' ')}" for outcome, count in sorted(audit.by_outcome.items()))
    lines = [f"Audit log, last {days} days (kept across restarts): {audit.questions} questions — {outcomes}."]
    if audit.mean_latency_s is not None and audit.p95_latency_s is not None:
        lines.append(f"Latency: mean {fmt.seconds(audit.mean_latency_s)}, p95 {fmt.seconds(audit.p95_latency_s)}.")
    if audit.top_users:
        lines.append("Most active: " + ", ".join(f"{user} ({count})" for user, count in audit.top_users[:5]) + ".")
    return lines


async def _reset(app: Application, message: IncomingMessage, _: str) -> str:
    forgotten = await app.store.conversations.reset(str(message.conversation))
    return say("reset.done" if forgotten else "reset.nothing", lang_for(message))


async def _pause(app: Application, message: IncomingMessage, _: str) -> str:
    await app.set_paused(True)
    return say("pause.done", lang_for(message))


async def _resume(app: Application, message: IncomingMessage, _: str) -> str:
    await app.set_paused(False)
    return say("resume.done", lang_for(message))


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
    Command("cleanup", "free GPU and host memory now and report what was freed", _cleanup, admin_only=True),
    Command("stats", "usage by day, channel and user: /stats [days]", _stats, admin_only=True),
    Command(
        "instructions",
        "what I keep in mind in this channel: /instructions set <text> | show | clear",
        instructions_command,
        admin_only=True,
    ),
)
