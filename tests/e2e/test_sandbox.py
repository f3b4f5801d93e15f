"""``peekbot sandbox`` through the API its page uses: the real bot, its unchanged Slack adapter on the embedded Slack
over Socket Mode, the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sandbox.runner import Sandbox
from tests.support.ops_support import screenshot
from tests.support.sandbox_support import EventStream, answered

ALICE, ADA, WEI = "U0ALICE", "U0ADMIN", "U0WEI"
ALICE_DM = "D0ALICE"
PROGRESS = ("Looking at it", "queue")


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(sandbox.url) as session:
        yield session


def multipart(user: str, channel: str, text: str, *files: Path) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in (("user", user), ("channel", channel), ("text", text)):
        form.add_field(name, value)
    for path in files:
        form.add_field("file", path.read_bytes(), filename=path.name, content_type="image/png")
    return form


async def ask(
    client: aiohttp.ClientSession, text: str, *files: Path, user: str = ALICE, channel: str = ALICE_DM
) -> str:
    async with client.post("/api/messages", data=multipart(user, channel, text, *files)) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["message"]["ts"]


async def test_a_screenshot_in_the_dm_gets_a_placeholder_then_an_answer_in_its_thread(
    sandbox: Sandbox, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with EventStream(client, sandbox.url) as stream:
        ts = await ask(client, "What does this error mean?", screenshot(tmp_path / "error.png"))
        question = await stream.wait(lambda n, d: n == "message" and d["ts"] == ts, "the question on the stream")
        assert question[1]["files"][0]["name"] == "error.png" and question[1]["user"] == ALICE
        await stream.wait(answered(ALICE_DM, ts), "the answer (the progress reaction removed)")
        replies = stream.bot_messages(ALICE_DM, ts)
        first, last = replies[0], replies[-1]
        assert first["streaming"] or any(marker in first["text"] for marker in PROGRESS), first  # the placeholder
        assert not last["streaming"] and last["text"].strip(), last
        assert not any(marker in last["text"] for marker in PROGRESS), last

        # 👎, then the "what was wrong?" choice only Alice sees, then her reason.
        thumbs_down = next(b for b in last["buttons"] if b["label"] == "👎")
        action = {"user": ALICE, "channel": ALICE_DM, "ts": last["ts"], **thumbs_down}
        async with client.post("/api/actions", json={**action, "value": "forged"}) as response:
            assert response.status == 404 and "not on that message" in (await response.json())["error"]
        async with client.post("/api/actions", json=action) as response:
            assert response.status == 200
        _, choice = await stream.wait(lambda n, d: n == "ephemeral" and d["buttons"], "the what-was-wrong choice")
        assert choice["user"] == ALICE and choice["thread_ts"] == ts
        reason = {"user": ALICE, "channel": ALICE_DM, "ephemeral": True, **choice["buttons"][0]}
        async with client.post("/api/actions", json=reason) as response:
            assert response.status == 200
        _, thanks = await stream.wait(lambda n, d: n == "ephemeral" and not d["buttons"], "the thanks for the reason")
        assert thanks["user"] == ALICE and thanks["text"]

        async with client.get(question[1]["files"][0]["url"]) as preview:  # the page shows the screenshot back
            assert preview.status == 200 and (await preview.read())[:4] == b"\x89PNG"
        async with client.get("/api/messages", params={"channel": ALICE_DM}) as history:
            messages = (await history.json())["messages"]
        assert [m["ts"] for m in messages if m["bot"]] and all(m["thread_ts"] == ts for m in messages if m["bot"])


async def test_peekbot_status_shows_more_to_the_admin_than_to_a_normal_user(
    sandbox: Sandbox, client: aiohttp.ClientSession
) -> None:
    async with EventStream(client, sandbox.url) as stream:
        for user in (ALICE, ADA, WEI):
            async with client.post(
                "/api/commands", json={"user": user, "channel": "C0GENERAL", "text": "/peekbot status"}
            ) as response:
                assert response.status == 200
        _, normal = await stream.wait(lambda n, d: n == "ephemeral" and d["user"] == ALICE, "Alice's reply")
        _, admin = await stream.wait(lambda n, d: n == "ephemeral" and d["user"] == ADA, "Ada's reply")
        _, chinese = await stream.wait(lambda n, d: n == "ephemeral" and d["user"] == WEI, "Wei's reply")
    assert normal["channel"] == admin["channel"] == chinese["channel"] == "C0GENERAL"
    assert "队列：" in chinese["text"] and "Queue:" not in chinese["text"]  # Wei's Slack is set to Chinese
    assert "Queue:" in normal["text"] and "Model:" not in normal["text"]
    assert "Model:" in admin["text"] and "slack: connected" in admin["text"]


async def test_after_the_socket_is_killed_the_next_question_is_still_answered(
    sandbox: Sandbox, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with EventStream(client, sandbox.url) as stream:
        async with client.post("/api/faults/kill-socket") as response:
            assert response.status == 200 and "Killed" in (await response.json())["done"]
        # A slash command is not redelivered: with no connection to take it, Slack tells the person.
        async with client.post("/api/commands", json={"user": ALICE, "channel": "C0GENERAL", "text": "help"}):
            pass
        # Asked at once, before the bot reconnected: Slack redelivers the lost event on the new connection.
        ts = await ask(client, "<@U0PEEKBOT> and this one?", screenshot(tmp_path / "s.png"), channel="C0GENERAL")
        await stream.wait(answered("C0GENERAL", ts), "the answer after the reconnect")
        await stream.wait(lambda n, d: n == "socket" and d["connections_opened"] >= 2 and d["live"], "a reconnect")
        _, failed = await stream.wait(lambda n, d: n == "ephemeral" and d["from_slack"], "Slack's dispatch_failed")
        assert failed["text"] == '/peekbot failed with the error "dispatch_failed"' and failed["user"] == ALICE
    assert stream.bot_messages("C0GENERAL", ts)[-1]["text"].strip()


async def test_mentions_are_written_as_people_type_them_and_bad_input_gets_a_sentence(
    sandbox: Sandbox, client: aiohttp.ClientSession
) -> None:
    ts = await ask(client, "@peekbot hello", channel="C0DESIGN")
    async with client.get("/api/messages", params={"channel": "C0DESIGN"}) as history:
        assert (await history.json())["messages"][0]["text"] == "<@U0PEEKBOT> hello"
    assert ts

    async with client.post("/api/messages", data=multipart(ALICE, ALICE_DM, "  ")) as response:
        assert response.status == 400 and (await response.json())["error"] == "Write a message or attach a file."
    async with client.post("/api/messages", data=multipart(ALICE, "D0ADMIN", "hi")) as response:
        assert response.status == 403 and "someone else's" in (await response.json())["error"]
    async with client.post("/api/faults/unplug-the-sun") as response:
        assert response.status == 404 and "kill-socket" in (await response.json())["error"]
    async with client.get("/api/channels") as response:
        workspace = await response.json()
    assert {c["id"] for c in workspace["channels"]} == {"D0ALICE", "D0ADMIN", "D0WEI", "C0GENERAL", "C0DESIGN"}
    assert workspace["status_url"].startswith("http://127.0.0.1:") and workspace["status_url"].endswith("/status")
