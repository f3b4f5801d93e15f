"""The HTTP server: health, readiness, Prometheus metrics and the status page, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import ENGINE_STUCK_EXIT_CODE, Application
from bot.engine import GenerationRequest
from bot.http import StatusServer
from bot.settings import Settings
from bot.wiring import build_application
from scheduler.service import LIVENESS, MaintenanceScheduler
from tests.support.ops_support import ControlledAdapter, block_worker, configure, running_app, screenshot
from tests.support.waiting import eventually


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen3_dir: Path) -> Settings:
    return configure(monkeypatch, tmp_path, tiny_qwen3_dir, SNAPSHOT_INTERVAL_S=0.1, LIVENESS_TIMEOUT_S=1.0)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Application, StatusServer, ControlledAdapter]]:
    slack = ControlledAdapter("slack")
    async with running_app(settings, [slack, ControlledAdapter("feishu")],
                           extra_services=lambda app: [StatusServer(app, port=0)]) as app:
        server = next(s for s in app.services if isinstance(s, StatusServer))
        yield app, server, slack


async def get(server: StatusServer, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(server: StatusServer, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        return response.status, await response.json()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_composition_root_adds_maintenance_and_the_http_server_by_the_port(
    monkeypatch, tmp_path, tiny_qwen3_dir
) -> None:
    from tests.support.ops_support import tiny_engine

    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir, HTTP_PORT=0)
    app = build_application(settings, engine=tiny_engine(settings), adapters=[])
    assert [type(s) for s in app.services] == [MaintenanceScheduler]
    assert app.maintenance is app.services[0]  # handed to the application, which /status and /metrics read

    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir, HTTP_PORT=18080, HTTP_HOST="0.0.0.0")
    app = build_application(settings, engine=tiny_engine(settings), adapters=[])
    assert [type(s) for s in app.services] == [MaintenanceScheduler, StatusServer]
    assert app.maintenance is app.services[0]


async def test_healthz_reports_the_process_alive(served) -> None:
    _, server, _ = served
    status, body = await get_json(server, "/healthz")
    assert status == 200 and body["status"] == "ok" and body["uptime_s"] >= 0


async def test_readyz_flips_when_an_adapter_disconnects_or_the_engine_hangs(served) -> None:
    app, server, slack = served
    status, body = await get_json(server, "/readyz")
    assert status == 200 and body["ready"] is True and body["adapters"] == {"slack": True, "feishu": True}

    slack.drop()
    status, body = await get_json(server, "/readyz")
    assert status == 503 and body["ready"] is False
    assert body["reasons"] == ["slack is not connected: socket closed"]

    await slack.reconnect()
    assert (await get_json(server, "/readyz"))[0] == 200

    blocker = await block_worker(app, 2.0)
    maintenance = app.maintenance
    assert maintenance is not None
    assert (await maintenance.jobs.run_now(LIVENESS)).outcome == "failed"
    status, body = await get_json(server, "/readyz")
    assert status == 503 and body["reasons"] == [
        "the engine does not answer its liveness ping (model worker stuck or model server down)"
    ]
    await blocker
    assert (await maintenance.jobs.run_now(LIVENESS)).outcome == "ok"
    assert (await get_json(server, "/readyz"))[0] == 200


async def test_healthz_fails_only_once_the_worker_was_stuck_for_the_set_time(
    monkeypatch, tmp_path: Path, tiny_qwen3_dir: Path
) -> None:
    settings = configure(monkeypatch, tmp_path, tiny_qwen3_dir, LIVENESS_TIMEOUT_S=0.3, ENGINE_STUCK_EXIT_S=1.2)
    async with running_app(settings, [ControlledAdapter("slack")],
                           extra_services=lambda app: [StatusServer(app, port=0)]) as app:
        server = next(s for s in app.services if isinstance(s, StatusServer))
        maintenance = app.maintenance
        assert maintenance is not None
        gates: list[threading.Event] = []

        async def ping_while_hung() -> str:
            gates.append(threading.Event())
            hung = asyncio.create_task(app.engine.run_on_worker(gates[-1].wait, 60))
            run = await maintenance.jobs.run_now(LIVENESS)
            assert run.outcome == "failed" and not hung.done()
            return run.detail

        try:
            first_hang = time.monotonic()
            await ping_while_hung()
            status, body = await get_json(server, "/healthz")
            assert status == 200 and body["status"] == "ok", "stuck for less than the set time is still healthy"

            # The worker comes back and generates a long answer: the ping is served between two steps (or, on a
            # loaded machine, the tokens produced meanwhile count as progress); either way the timer is reset.
            gates[-1].set()
            stream = app.engine.submit(GenerationRequest("count", max_new_tokens=4000, min_new_tokens=4000))
            await eventually(lambda: app.engine.stats().in_flight == 1, what="the engine to start generating")
            busy = await maintenance.jobs.run_now(LIVENESS)
            assert busy.outcome == "ok", busy.detail
            assert maintenance.liveness.stuck_since is None
            stream.cancel()
            await eventually(lambda: app.engine.stats().in_flight == 0, what="the engine to go idle")

            # Hung again, longer after the first hang than the limit: counted from the new hang, so still healthy.
            await asyncio.sleep(max(0.0, 1.3 - (time.monotonic() - first_hang)))
            await ping_while_hung()
            assert (await get_json(server, "/healthz"))[0] == 200 and not app.exit_requested.is_set()

            await asyncio.sleep(1.0)
            detail = await ping_while_hung()  # the same hang, now past the limit
            status, body = await get_json(server, "/healthz")
            assert status == 503 and body["status"] == "failing", detail
            assert body["reason"].startswith("the model's worker thread has been stuck for")
            assert app.exit_requested.is_set() and app.exit_code == ENGINE_STUCK_EXIT_CODE
            assert (await get_json(server, "/readyz"))[0] == 503
        finally:
            for gate in gates:
                gate.set()


async def test_metrics_parse_and_move_with_requests(served, tmp_path: Path) -> None:
    app, server, slack = served
    status, content_type, text = await get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    before = samples(text)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "peekbot_requests", "peekbot_request_latency_seconds", "peekbot_queue_wait_seconds", "peekbot_queue_depth",
        "peekbot_engine_in_flight", "peekbot_tokens", "peekbot_engine_generated_tokens", "peekbot_host_rss_bytes",
        "peekbot_adapter_connected", "peekbot_adapter_reconnects", "peekbot_watchdog_reconnects",
        "peekbot_deduplicated_events", "peekbot_errors", "peekbot_engine_ready", "peekbot_job_runs",
    } <= names
    assert before[("peekbot_adapter_connected", (("adapter", "slack"),))] == 1.0

    image = screenshot(tmp_path / "shot.png")
    first = slack.message("what is this?", image)
    reply = await slack.ask("what is this?", image, event_id=first.event_id, message_id=first.message_id)
    assert reply.error is None
    assert slack.handler is not None
    assert not await slack.handler(first, reply)  # redelivered: dropped
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    bad = await slack.ask("and this?", junk)
    assert bad.error
    await slack.reconnect()

    after = samples((await get(server, "/metrics"))[2])
    answered = ("peekbot_requests_total", (("outcome", "answered"), ("platform", "slack")))
    failed = ("peekbot_requests_total", (("outcome", "failed"), ("platform", "slack")))
    assert after[answered] == before.get(answered, 0) + 1
    assert after[failed] == before.get(failed, 0) + 1
    assert sum(v for (name, labels), v in after.items() if name == "peekbot_errors_total") == 1
    latency_count = ("peekbot_request_latency_seconds_count", (("platform", "slack"),))
    assert after[latency_count] == 1 and after[("peekbot_request_latency_seconds_sum", (("platform", "slack"),))] > 0
    assert after[("peekbot_queue_wait_seconds_count", ())] == 1
    assert after[("peekbot_tokens_total", (("kind", "generated"),))] >= 1
    assert after[("peekbot_tokens_total", (("kind", "prompt"),))] > 10
    assert after[("peekbot_engine_generated_tokens_total", ())] > before[("peekbot_engine_generated_tokens_total", ())]
    assert after[("peekbot_engine_step_p95_seconds", ())] > 0  # the engine's own step timing
    assert after[("peekbot_engine_prefill_unit_p95_seconds", (("kind", "vision"),))] > 0
    assert after[("peekbot_deduplicated_events_total", ())] == before[("peekbot_deduplicated_events_total", ())] + 1
    assert after[("peekbot_adapter_reconnects_total", (("adapter", "slack"),))] == 1
    assert app.counters["answered"] == 1


async def test_status_page_draws_the_last_hour_as_inline_svg(served, tmp_path: Path) -> None:
    app, server, slack = served
    maintenance = app.maintenance
    assert maintenance is not None
    assert (await slack.ask("what is this?", screenshot(tmp_path / "s.png"))).error is None
    await eventually(lambda: len(maintenance.ring) >= 3 and any(s.requests for s in maintenance.ring),
                     what="snapshots around an answer")
    status, content_type, html = await get(server, "/status")
    assert status == 200 and content_type.startswith("text/html")
    assert html.count("<svg") >= 3
    assert 'class="series" d="M' in html and " L" in html  # lines, not just points
    assert "Answer latency" in html and "Queue" in html and "Host memory" in html
    for name in ("slack", "feishu", "memory-cleanup", "engine-liveness", "connection-watchdog", "metrics-snapshot"):
        assert name in html
    without_namespace = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_namespace and "https://" not in without_namespace  # no external assets
    assert "<script" not in html
    async with aiohttp.ClientSession() as session, session.get(server.url + "/", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/status"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium (.ci/run installs it)")
async def test_status_page_renders_in_a_headless_browser(served, tmp_path: Path) -> None:
    app, server, slack = served
    maintenance = app.maintenance
    assert maintenance is not None
    assert (await slack.ask("what is this?", screenshot(tmp_path / "s.png"))).error is None
    await eventually(lambda: len(maintenance.ring) >= 3, what="snapshots")
    shot = tmp_path / "status.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-component-update",
              "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
              "--v=0", "--window-size=1280,1400"]
    process = await asyncio.create_subprocess_exec(
        *common, "--dump-dom", "--virtual-time-budget=2000", f"{server.url}/status",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    dom, log = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, log.decode(errors="replace")[-2000:]
    rendered = dom.decode()
    assert rendered.count("<svg") >= 3 and 'class="series" d="M' in rendered
    console_errors = [line for line in log.decode(errors="replace").splitlines()
                      if "CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line)]
    assert console_errors == []
    process = await asyncio.create_subprocess_exec(
        *common, f"--screenshot={shot}", f"{server.url}/status",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(process.communicate(), 90)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
