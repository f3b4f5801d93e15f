"""Admin and user commands through the dispatcher, as a person in a chat sees them; JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from bot.logs import setup_logging
from scheduler.service import CLEANUP, LIVENESS, WATCHDOG
from tests.support.ops_support import ControlledAdapter, configure, running_app, screenshot

ADMIN_ONLY = ("pause", "resume", "reconnect slack", "cleanup", "stats")


@pytest.fixture
async def bot(monkeypatch, tmp_path: Path, tiny_qwen3_dir: Path):  # type: ignore[no-untyped-def]
    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir)
    slack, feishu = ControlledAdapter("slack"), ControlledAdapter("feishu")
    async with running_app(settings, [slack, feishu]) as app:
        yield app, slack, feishu


async def command(adapter: ControlledAdapter, text: str, user: str = "ADMIN") -> str:
    reply = await adapter.ask(text, user=user)
    assert reply.error is None, reply.error
    assert reply.final is not None
    return reply.final


@pytest.mark.parametrize("line", ADMIN_ONLY)
async def test_admin_commands_refuse_other_people(bot, line: str) -> None:
    app, slack, _ = bot
    maintenance = app.maintenance
    assert maintenance is not None
    app.paused = line == "resume"  # so that an accepted /resume would show
    answer = await command(slack, f"/{line}", user="U_SOMEONE")
    assert answer == f"Sorry, /{line.split()[0]} is for peekbot admins only."
    assert app.paused is (line == "resume")
    assert slack.reconnect_calls == 0
    assert maintenance.jobs.state(CLEANUP).runs == 0


async def test_admin_commands_work_for_admins_on_any_platform(bot) -> None:
    app, slack, feishu = bot
    assert "Paused" in await command(feishu, "/pause")
    assert app.paused
    assert "Resumed" in await command(slack, "/resume")
    assert not app.paused
    assert await command(feishu, "/reconnect slack") == "Reconnecting slack now."
    assert slack.reconnect_calls == 1
    assert "Unknown platform 'irc'" in await command(slack, "/reconnect irc")


async def test_help_lists_admin_commands_only_to_admins(bot) -> None:
    _, slack, _ = bot
    for_admin = await command(slack, "/help")
    for_user = await command(slack, "/help", user="U2")
    assert "/cleanup" in for_admin and "/stats" in for_admin and "/status" in for_admin
    assert "/cleanup" not in for_user and "/stats" not in for_user and "/reset" in for_user


async def test_status_shows_everything_an_admin_needs(bot, tmp_path: Path) -> None:
    app, slack, feishu = bot
    maintenance = app.maintenance
    assert maintenance is not None
    assert (await slack.ask("what is this?", screenshot(tmp_path / "s.png"))).error is None
    feishu.drop()
    await maintenance.jobs.run_now(WATCHDOG)  # gives feishu's own reconnect a chance
    await maintenance.jobs.run_now(WATCHDOG)  # then forces one
    feishu.drop()
    await maintenance.jobs.run_now(CLEANUP)

    status = await command(slack, "/status")
    lines = status.splitlines()
    assert lines[0].startswith("peekbot is ready; up ")
    assert "Queue: 0 waiting, 0 being answered." in lines
    model = app.engine.stats().model
    assert f"Model: {model} on cpu." in lines
    assert "Questions: 1 answered, 0 failed, 0 in progress; engine requests: answered 1." in lines
    latency = next(line for line in lines if line.startswith("Latency (last hour): answers p50 "))
    assert "p95" in latency and "engine p50" in latency and "tokens/s" in latency and "–" not in latency
    assert "GPU memory: no GPU in use." in lines
    assert any(line.startswith("Host memory: RSS ") and line.endswith(("MiB.", "GiB.")) for line in lines)
    assert any(line.startswith("Image cache: ") and "(1 held); hit rate 0%." in line for line in lines)
    assert any(line.startswith("slack: connected for ") and "0 reconnects" in line for line in lines)
    assert "feishu: DISCONNECTED (socket closed), 1 reconnects (1 by the watchdog)." in lines
    jobs = lines[lines.index("Scheduler jobs:") + 1:]
    assert any(j.startswith("• memory-cleanup (every 60 s): ok ") and "gc collected" in j for j in jobs)
    assert any(j.startswith("• connection-watchdog (every 30 s): ok ") and "reconnected feishu" in j for j in jobs)
    assert "• engine-liveness (every 60 s): not run yet" in jobs

    public = await command(slack, "/status", user="U2")
    assert public.splitlines()[1] == "Queue: 0 waiting, 0 being answered."
    assert "Model:" not in public and "Scheduler" not in public


async def test_status_reports_a_stuck_model_worker(monkeypatch, tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir, LIVENESS_TIMEOUT_S=0.2)
    slack = ControlledAdapter("slack")
    async with running_app(settings, [slack]) as app:
        maintenance = app.maintenance
        assert maintenance is not None
        blocker = asyncio.create_task(app.engine.run_on_worker(lambda: time.sleep(0.8), 10))
        await asyncio.sleep(0.05)
        await maintenance.jobs.run_now(LIVENESS)
        status = await command(slack, "/status")
        assert status.startswith("peekbot is stuck (the model does not answer)")
        assert "Model worker: STUCK, it did not answer the last ping (1 missed)." in status
        assert "engine-liveness (every 60 s): failed" in status
        await blocker


async def test_cleanup_reports_what_it_freed(bot) -> None:
    app, slack, _ = bot
    maintenance = app.maintenance
    assert maintenance is not None
    answer = await command(slack, "/cleanup")
    assert answer.startswith("Memory cleanup done in ")
    assert "host RSS" in answer and "MiB" in answer and "freed" in answer and "gc collected" in answer
    state = maintenance.jobs.state(CLEANUP)
    assert state.runs == 1 and state.last is not None and state.last.outcome == "ok"


async def test_stats_counts_questions_by_day_channel_and_user(bot, tmp_path: Path) -> None:
    _, slack, feishu = bot
    assert await command(slack, "/stats") == "No questions in the last 7 days."
    image = screenshot(tmp_path / "s.png")
    await slack.ask("one", image, user="U1", channel="C-dev")
    await slack.ask("two", image, user="U1", channel="C-dev")
    await feishu.ask("three", image, user="ou_2", channel="oc_ops")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    await slack.ask("four", broken, user="U3", channel="C-dev")

    stats = await command(slack, "/stats")
    lines = stats.splitlines()
    assert lines[0] == "Usage over the last 7 days: 4 questions, 1 failed."
    day_lines = lines[lines.index("By day (UTC):") + 1 : lines.index("Top channels:")]
    assert len(day_lines) == 1 and ": 4 questions, 1 failed, " in day_lines[0]
    channels = lines[lines.index("Top channels:") + 1 : lines.index("Top users:")]
    assert channels == ["• slack:W1:C-dev: 3", "• feishu:W1:oc_ops: 1"]
    audit_at = next(i for i, line in enumerate(lines) if line.startswith("Audit log"))
    users = lines[lines.index("Top users:") + 1 : audit_at]
    assert users == ["• slack:U1: 2", "• feishu:ou_2: 1", "• slack:U3: 1"]
    # The journal's audit log (kept across restarts) counts the same questions by outcome.
    assert lines[audit_at] == "Audit log, last 7 days (kept across restarts): 4 questions — 3 answered, 1 failed."
    assert lines[-1] == "Most active: slack:U1 (2), feishu:ou_2 (1), slack:U3 (1)."
    assert (await command(slack, "/stats 1")).startswith("Usage over the last 1 days: 4 questions")
    assert (await command(slack, "/stats lots")).startswith("Usage: /stats [days]")


async def test_json_logs_carry_the_request_id_on_every_line(bot, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    app, slack, _ = bot
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    setup_logging("INFO", "json")
    try:
        reply = await slack.ask("what is this?", screenshot(tmp_path / "s.png"), message_id="slack-M-42")
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"garbage")
        failed = await slack.ask("and this?", broken, message_id="slack-M-43")
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_peekbot", False):
                root.removeHandler(handler)
        for handler in saved_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved_level)
    assert reply.error is None and failed.error
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert entries, "no JSON log lines"
    assert all({"ts", "level", "logger", "msg", "request_id", "platform", "conversation"} <= e.keys() for e in entries)
    first = [e for e in entries if e["request_id"] == "slack-M-42"]
    second = [e for e in entries if e["request_id"] == "slack-M-43"]
    assert any("queued engine request" in e["msg"] for e in first)
    assert any(e["logger"] == "bot.app" and "answered with an error" in e["msg"] for e in second)
    assert all(e["platform"] == "slack" and e["conversation"] == "slack:W1:C1:T1" for e in first + second)
    # Every line the question path wrote carries its request id.
    request_lines = [e for e in entries if e["logger"] in ("bot.questions", "bot.app") and "started" not in e["msg"]]
    assert request_lines and all(e["request_id"] in ("slack-M-42", "slack-M-43") for e in request_lines)
    assert app.counters["answered"] == 1


def test_a_gpu_cleanup_is_described_in_the_admins_language() -> None:
    from bot.maintenance import describe_cleanup

    gib = 2**30
    figures = {
        "emptied_cache": True, "reason": "fragmentation 0.40 >= 0.30", "reason_key": "fragmentation",
        "reason_values": {"fragmentation": 0.4, "threshold": 0.3}, "gc_collected": 12,
        "before": {"cuda_reserved_bytes": 6 * gib, "cuda_allocated_bytes": 4 * gib, "host_rss_bytes": 3 * gib},
        "after": {"cuda_reserved_bytes": 4 * gib, "cuda_allocated_bytes": 4 * gib, "cuda_fragmentation": 0.05,
                  "host_rss_bytes": 3 * gib},
    }  # fmt: skip
    english = describe_cleanup(figures)
    assert english == (
        "GPU reserved 6,144.0 MiB → 4,096.0 MiB (freed 2,048.0 MiB; allocated 4,096.0 MiB, fragmentation 5%); "
        "cache emptied: fragmentation 0.40 >= 0.30; host RSS 3,072.0 MiB → 3,072.0 MiB (freed 0.0 MiB); "
        "gc collected 12 objects"
    )
    chinese = describe_cleanup(figures, "zh")
    assert chinese.startswith("GPU 预留内存 6,144.0 MiB → 4,096.0 MiB（释放 2,048.0 MiB")
    assert "已清空缓存：碎片率 0.40 ≥ 0.30" in chinese and chinese.endswith("垃圾回收了 12 个对象")
    older = {**figures, "reason_key": None}  # figures of a release before reason keys: the reason as it was
    assert "已清空缓存：fragmentation 0.40 >= 0.30" in describe_cleanup(older, "zh")
