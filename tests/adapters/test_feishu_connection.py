"""The Feishu long connection and event intake against the loopback fake (no model involved)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.feishu import FeishuAdapter, FeishuStartupError
from bot.errors import FileAccessDenied, FileTooLarge
from bot.settings import Settings
from bot.types import ChatType, FileRef, IncomingMessage, MentionSegment, ReplyHandle
from tests.support.fake_feishu import FakeFeishu, feishu_environment


class RecordingCore:
    """Stands in for ``Application.handle``: dedupes like the core and keeps what it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.messages: list[IncomingMessage] = []
        self.calls = 0
        self.delay_s = delay_s
        self._seen: set[str] = set()

    async def __call__(self, message: IncomingMessage, reply: ReplyHandle) -> bool:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        keys = {f"e:{message.event_id}", f"m:{message.message_id}"}
        if keys & self._seen:
            return False
        self._seen |= keys
        self.messages.append(message)
        return True


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(ack_timeout_s=0.5) as server:
        yield server


def configure(monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu, **overrides: str) -> Settings:
    for key, value in feishu_environment(fake, fast_heartbeat=True, **overrides).items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
async def running(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu
) -> AsyncIterator[tuple[FeishuAdapter, RecordingCore]]:
    adapter = FeishuAdapter(configure(monkeypatch, fake))
    core = RecordingCore()
    await adapter.start(core)
    try:
        yield adapter, core
    finally:
        await adapter.stop()


def text_event(fake: FakeFeishu, text: str, **kwargs: object) -> dict:
    return fake.message_event(msg_type="text", content={"text": text}, **kwargs)  # type: ignore[arg-type]


async def until(predicate: Callable[[], object], fake: FakeFeishu, what: str, timeout: float = 10.0) -> None:
    await fake.wait_for(predicate, timeout=timeout, what=what)


async def test_event_is_translated_and_acked_with_code_200(running, fake: FakeFeishu) -> None:
    adapter, core = running
    event = text_event(fake, "hello there")
    transport_id = await fake.push_event(event)
    await until(lambda: fake.acks_for(transport_id), fake, "the ack")

    ack = fake.acks_for(transport_id)[0]
    assert ack.code == 200 and ack.biz_rt is not None and int(ack.biz_rt) >= 0
    [message] = core.messages
    chat_message_id = event["event"]["message"]["message_id"]
    assert message.message_id == chat_message_id != transport_id
    assert message.event_id == event["header"]["event_id"]
    assert message.chat_type is ChatType.DIRECT
    assert message.text == "hello there"
    assert message.user.key == "feishu:ou_alice"
    assert message.conversation.platform == "feishu"
    assert message.conversation.workspace == fake.tenant_key
    assert message.conversation.channel == "oc_dm"
    assert message.conversation.thread == chat_message_id
    health = await adapter.health()
    assert health.connected and health.connected_since is not None
    assert health.last_event_age_s is not None and health.last_pong_age_s is not None


async def test_fragmented_event_is_joined_and_handled_once(running, fake: FakeFeishu) -> None:
    _, core = running
    long_text = "please look at this " + "x" * 3000
    transport_id = await fake.push_event(text_event(fake, long_text), fragments=3)
    await until(lambda: fake.acks_for(transport_id), fake, "the ack")
    await asyncio.sleep(0.3)
    assert core.calls == 1
    assert core.messages[0].text == long_text
    assert len(fake.acks_for(transport_id)) == 1


async def test_same_event_again_and_same_message_with_new_event_id_reach_the_core_once(
    running, fake: FakeFeishu
) -> None:
    _, core = running
    event = text_event(fake, "what is this?")
    first = await fake.push_event(event)
    again = await fake.push_event(event)
    backfill = dict(event, header=dict(event["header"], event_id="a-new-event-id"))
    third = await fake.push_event(backfill)
    await until(lambda: all(fake.acks_for(t) for t in (first, again, third)), fake, "three acks")
    assert len(core.messages) == 1
    assert all(fake.acks_for(t)[0].code == 200 for t in (first, again, third))


async def test_event_resent_while_the_first_copy_is_in_flight_is_acked_once_handled(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu
) -> None:
    adapter = FeishuAdapter(configure(monkeypatch, fake))
    core = RecordingCore(delay_s=1.2)  # slower than the fake's 0.5 s re-send timer
    await adapter.start(core)
    try:
        transport_id = await fake.push_event(text_event(fake, "slow core"))
        await until(lambda: len(fake.acks_for(transport_id)) >= 2, fake, "acks for both copies")
        assert core.calls == 1
        assert {a.code for a in fake.acks_for(transport_id)} == {200}
    finally:
        await adapter.stop()


async def test_group_messages_need_an_at_mention_of_the_bot(running, fake: FakeFeishu) -> None:
    _, core = running
    ignored = [
        text_event(fake, "@_user_1 have a look", chat_id="oc_team", chat_type="group",
                   mentions=[fake.mention(1, "ou_bob", "Bob")]),
        text_event(fake, "nobody mentioned", chat_id="oc_team", chat_type="group"),
        text_event(fake, "@_user_1 from a bot", chat_id="oc_team", chat_type="group", sender_open_id="ou_otherbot",
                   sender_type="app", mentions=[fake.mention(1, fake.bot_open_id, "peekbot")]),
        text_event(fake, "my own message", sender_open_id=fake.bot_open_id),
    ]
    transports = [await fake.push_event(event) for event in ignored]
    addressed = text_event(
        fake,
        "@_user_1 what is @_user_2 doing here?",
        chat_id="oc_team",
        chat_type="group",
        mentions=[fake.mention(1, fake.bot_open_id, "peekbot"), fake.mention(2, "ou_bob", "Bob")],
    )
    transports.append(await fake.push_event(addressed))
    await until(lambda: all(fake.acks_for(t) for t in transports), fake, "every event acked")

    [message] = core.messages
    assert message.chat_type is ChatType.GROUP and message.mentions_bot
    assert message.text == "what is @Bob doing here?"
    assert MentionSegment("ou_bob", is_self=False) in message.segments
    assert message.conversation.channel == "oc_team"


async def test_pong_timeout_reconnects_and_events_flow_again(running, fake: FakeFeishu) -> None:
    adapter, core = running
    fake.silent = True
    await until(lambda: fake.connections_opened >= 2, fake, "a reconnect after the pongs stopped")
    fake.silent = False

    async def healthy() -> bool:
        health = await adapter.health()
        return health.connected and health.reconnects >= 1

    deadline = time.monotonic() + 10
    while not await healthy():
        assert time.monotonic() < deadline, "never reconnected"
        await asyncio.sleep(0.05)
    transport_id = await fake.push_event(text_event(fake, "still there?"))
    await until(lambda: fake.acks_for(transport_id), fake, "the ack after reconnecting")
    assert [m.text for m in core.messages] == ["still there?"]


async def test_abrupt_close_and_failing_discovery_reconnect_and_answer_the_next_event(
    running, fake: FakeFeishu
) -> None:
    adapter, core = running
    fake.discovery_failures = 2
    await fake.drop_connections(abrupt=True)
    # The event is pushed while no connection is open: it waits for the next one, as Feishu's backfill does.
    transport_id = await fake.push_event(text_event(fake, "after the cut"))
    await until(lambda: fake.acks_for(transport_id), fake, "the event on the new connection")
    assert fake.discoveries >= 4  # the first connect, two refusals, the reconnect
    assert (await adapter.health()).reconnects == 1
    assert [m.text for m in core.messages] == ["after the cut"]


async def test_forced_reconnect_is_counted(running, fake: FakeFeishu) -> None:
    adapter, _ = running
    await adapter.reconnect()
    await until(lambda: fake.connections_opened == 2 and fake.open_connections == 1, fake, "a new connection")
    assert (await adapter.health()).reconnects == 1


async def test_server_client_config_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"PingInterval": 1, "ReconnectCount": 7, "ReconnectInterval": 3, "ReconnectNonce": 2}
    async with FakeFeishu(client_config=config) as fake:
        fake.pong_config = {"PingInterval": 2, "ReconnectCount": 9, "ReconnectInterval": 4, "ReconnectNonce": 1}
        env = feishu_environment(fake)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        adapter = FeishuAdapter(Settings())
        await adapter.start(RecordingCore())
        try:
            connection = adapter._connection
            assert connection is not None
            await until(lambda: connection.config.reconnect_count == 9, fake, "the pong's config")
            assert connection.config.ping_interval_s == 2
            assert connection.config.reconnect_interval_s == 4
            assert fake.calls_to("POST", "/callback/ws/endpoint") == []  # discovery is not an open-apis call
            assert fake.discoveries == 1
        finally:
            await adapter.stop()


async def test_bad_credentials_fail_start_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu) -> None:
    adapter = FeishuAdapter(configure(monkeypatch, fake, FEISHU_APP_SECRET="wrong"))
    with pytest.raises(FeishuStartupError, match="FEISHU_APP_SECRET") as caught:
        await adapter.start(RecordingCore())
    assert "app secret invalid" in str(caught.value)
    assert fake.discoveries == 0 and fake.connections_opened == 0


async def test_refused_long_connection_is_fatal_and_not_retried(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu
) -> None:
    fake.discovery_code = (1000040350, "exceed connection limit")
    adapter = FeishuAdapter(configure(monkeypatch, fake))
    with pytest.raises(FeishuStartupError, match="most connections"):
        await adapter.start(RecordingCore())
    await asyncio.sleep(0.3)
    assert fake.discoveries == 1


async def test_credentials_revoked_while_running_stop_the_retries(running, fake: FakeFeishu) -> None:
    adapter, _ = running
    fake.discovery_code = (10014, "app secret invalid")
    await fake.drop_connections()
    await until(lambda: fake.discoveries >= 2, fake, "the reconnect attempt")
    await asyncio.sleep(0.3)
    health = await adapter.health()
    assert not health.connected
    assert "FEISHU_APP_SECRET" in health.detail and "app secret invalid" in health.detail
    assert fake.discoveries == 2
    # Once the app is fixed, a reconnect (the watchdog's or an admin's /reconnect) brings it back.
    fake.discovery_code = None
    await adapter.reconnect()
    await until(lambda: fake.open_connections == 1, fake, "the revived connection")
    health = await adapter.health()
    assert health.connected and health.detail == "" and health.reconnects == 1


async def test_stop_closes_the_connection(running, fake: FakeFeishu) -> None:
    adapter, _ = running
    await until(lambda: fake.open_connections == 1, fake, "the connection")
    await adapter.stop()
    await until(lambda: fake.open_connections == 0, fake, "the connection to close", timeout=5)
    assert not (await adapter.health()).connected


async def test_downloads_return_bytes_or_a_clear_sentence(monkeypatch: pytest.MonkeyPatch, fake: FakeFeishu) -> None:
    adapter = FeishuAdapter(configure(monkeypatch, fake, PEEKBOT_MAX_FILE_BYTES="1000"))
    await adapter.start(RecordingCore())

    def ref(key: str, name: str = "shot.png", kind: str = "image") -> FileRef:
        return FileRef("feishu", key, name, "image/*", source={"message_id": "om_files", "type": kind})

    try:
        fake.add_resource("om_files", "img_ok", b"\x89PNG" + bytes(100))
        fake.add_resource("om_files", "img_big", bytes(5000))
        fake.add_resource("om_files", "img_secret", bytes(10), denied=True)
        assert await adapter.fetch(ref("img_ok")) == b"\x89PNG" + bytes(100)
        assert fake.calls_to("GET", "/messages/om_files/resources/img_ok$")[0].query == {"type": "image"}
        with pytest.raises(FileTooLarge) as too_large:
            await adapter.fetch(ref("img_big"))
        assert too_large.value.user_message == "“shot.png” is 5 KB; the limit is 1000 bytes."
        with pytest.raises(FileAccessDenied) as denied:
            await adapter.fetch(ref("img_secret"))
        assert denied.value.user_message.startswith("I'm not allowed to download “shot.png”.")
        assert "im:resource" in denied.value.user_message
        with pytest.raises(FileAccessDenied) as missing:
            await adapter.fetch(ref("file_gone", "gone.pdf", "file"))
        assert missing.value.user_message.startswith("I couldn't download “gone.pdf” from Feishu (File not in msg.)")
    finally:
        await adapter.stop()
