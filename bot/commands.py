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
from bot.maintenance import describe_cleanup
from bot.store.base import AuditSummary
from bot.types import IncomingMessage

if TYPE_CHECKING:
    from bot.app import Application
    from bot.report import AdapterReport, StatusReport

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
        say("status.state", lang, state=say(report.state_key, lang), uptime=fmt.duration(report.uptime_s)),
        say("status.queue", lang, waiting=stats.queue_depth, running=stats.in_flight),
    ]
    instructions = await status_line(app, message)
    if instructions is not None:
        lines.append(instructions)
    if not app.is_admin(message.user):
        return "\n".join(lines)
    lines += _admin_status_lines(report, lang)
    return "\n".join(lines)


def _admin_status_lines(report: StatusReport, lang: str) -> list[str]:
    """What only admins see in ``/status``: the model, counts, latency, memory, connections and the scheduler."""
    stats = report.engine
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.requests_by_outcome.items()) if v)
    in_progress = max(report.questions_in_flight - 1, 0)  # this /status command is one of them
    lines = [
        say("status.model", lang, model=stats.model, device=stats.device),
        say("status.questions", lang, answered=report.answered, failed=report.failed, in_progress=in_progress,
            outcomes=outcomes or say("status.none_yet", lang)),
        say("status.latency", lang, answer_p50=fmt.seconds(report.answer_latency_p50_s),
            answer_p95=fmt.seconds(report.answer_latency_p95_s), engine_p50=fmt.seconds(stats.latency_p50_s),
            engine_p95=fmt.seconds(stats.latency_p95_s), tokens_per_s=stats.tokens_per_s),
    ]
    if report.gpu_reserved_bytes is not None:
        lines.append(say("status.gpu", lang, allocated=fmt.size(report.gpu_allocated_bytes),
                         reserved=fmt.size(report.gpu_reserved_bytes),
                         fragmentation=fmt.percent(report.gpu_fragmentation)))
    else:
        lines.append(say("status.no_gpu", lang))
    lines.append(say("status.host", lang, rss=fmt.size(report.host_rss_bytes)))
    if stats.image_cache:
        cache = stats.image_cache
        lines.append(say("status.image_cache", lang, used=fmt.size(cache["bytes"]),
                         budget=fmt.size(cache["budget_bytes"]), entries=cache["entries"],
                         hit_rate=fmt.percent(cache["hit_rate"])))
    if report.engine_alive is False:
        lines.append(say("status.worker_stuck", lang, missed=report.engine_stuck_count))
    elif report.engine_stuck_count:
        lines.append(say("status.worker_back", lang, missed=report.engine_stuck_count))
    lines += [_adapter_line(adapter, lang) for adapter in report.adapters]
    if not report.jobs:
        return [*lines, say("status.no_scheduler", lang)]
    lines.append(say("status.jobs", lang))
    for job in report.jobs:
        if job.last is None:
            lines.append(say("status.job_not_run", lang, name=job.name, every=job.interval_s))
            continue
        lines.append(say(
            "status.job", lang, name=job.name, every=job.interval_s, outcome=job.last.outcome,
            when=_age(time.time() - job.last.started_at, lang), took=fmt.seconds(job.last.duration_s),
            detail=f" — {job.last.detail}" if job.last.detail else "",
            failures=say("status.job_failures", lang, count=job.failures) if job.failures else "",
        ))
    return lines


def _adapter_line(adapter: AdapterReport, lang: str) -> str:
    health = adapter.health
    if health.connected and health.connected_since:
        connected = say("status.connected_for", lang, duration=fmt.duration(time.time() - health.connected_since))
    elif health.connected:
        connected = say("status.connected", lang)
    elif health.detail:
        connected = say("status.disconnected_why", lang, detail=health.detail)
    else:
        connected = say("status.disconnected", lang)
    last = health.last_event_age_s
    age = "" if last is None else say("status.last_event", lang, age=_age(last, lang))
    forced = say("status.forced", lang, count=adapter.forced_reconnects) if adapter.forced_reconnects else ""
    return say("status.adapter", lang, name=adapter.name, connected=connected, reconnects=health.reconnects,
               forced=forced, age=age)


def _age(seconds: float, lang: str) -> str:
    """How long ago, in ``lang`` (``bot.fmt.age`` in English)."""
    if seconds < 60:
        return say("time.seconds_ago", lang, n=seconds)
    return say("time.ago", lang, duration=fmt.duration(seconds))


async def _cleanup(app: Application, message: IncomingMessage, _: str) -> str:
    maintenance = app.maintenance
    lang = lang_for(message)
    if maintenance is None:
        return say("cleanup.no_scheduler", lang)
    run = await maintenance.cleanup_now()
    if run.outcome == "ok":
        detail = describe_cleanup(run.data, lang) if "before" in run.data else run.detail
        return say("cleanup.done", lang, took=fmt.seconds(run.duration_s), detail=detail)
    return say("cleanup.other", lang, outcome=run.outcome, detail=run.detail)


async def _stats(app: Application, message: IncomingMessage, argument: str) -> str:
    days = 7
    lang = lang_for(message)
    if argument.strip():
        if not argument.strip().isdigit() or not 1 <= int(argument) <= app.usage.retention_days:
            return say("stats.usage", lang, limit=app.usage.retention_days)
        days = int(argument)
    per_day = app.usage.days(days)
    total = sum(usage.requests for _, usage in per_day)
    audit = await app.store.audit.summary(time.time() - days * 86400, top=10)
    if not total and not audit.questions:
        return say("stats.nothing", lang, days=days)
    failed = sum(usage.failed for _, usage in per_day)
    rated = await app.ratings.summary(days)
    lines = [say("stats.total", lang, days=days, total=total, failed=failed), rated.line(lang),
             say("stats.by_day", lang)]
    lines += [say("stats.day", lang, day=day, requests=usage.requests, failed=usage.failed,
                  tokens=usage.generated_tokens) for day, usage in per_day if usage.requests]
    lines.append(say("stats.top_channels", lang))
    lines += [f"• {channel}: {count}" for channel, count in app.usage.top("channels", 10, days)]
    lines.append(say("stats.top_users", lang))
    lines += [f"• {user}: {count}" for user, count in app.usage.top("users", 10, days)]
    lines += _audit_lines(audit, days, lang)
    return "\n".join(lines)


def _audit_lines(audit: AuditSummary, days: int, lang: str) -> list[str]:
    """The journal's view, which survives restarts: every question by outcome, including refusals."""
    if not audit.questions:
        return []
    outcomes = ", ".join(f"{count} {outcome.replace('_', ' ')}" for outcome, count in sorted(audit.by_outcome.items()))
    lines = [say("stats.audit", lang, days=days, questions=audit.questions, outcomes=outcomes)]
    if audit.mean_latency_s is not None and audit.p95_latency_s is not None:
        lines.append(say("stats.latency", lang, mean=fmt.seconds(audit.mean_latency_s),
                         p95=fmt.seconds(audit.p95_latency_s)))
    if audit.top_users:
        people = ", ".join(f"{user} ({count})" for user, count in audit.top_users[:5])
        lines.append(say("stats.most_active", lang, people=people))
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


async def _reconnect(app: Application, message: IncomingMessage, argument: str) -> str:
    name = argument.strip().lower()
    lang = lang_for(message)
    adapter = app.adapters.get(name)
    if adapter is None:
        known = ", ".join(sorted(app.adapters)) or say("reconnect.none", lang)
        return say("reconnect.unknown", lang, name=repr(name), known=known)
    await adapter.reconnect()
    return say("reconnect.now", lang, name=name)


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
