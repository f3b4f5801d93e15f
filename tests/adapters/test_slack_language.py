"""Slack end to end (real slack-bolt/slack_sdk → loopback fake Slack → SlackAdapter → Application → FakeEngine): a
question in Chinese gets peekbot's own words in Chinese (status line, Stop button, refusal), one in English English;
and the "what was wrong?" choice after a 👎 (Slack and Feishu) in the language of the sentence the core said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.feishu.buttons import reason_row
from adapters.kit.ratings import REASONS
from adapters.slack import SlackAdapter
from adapters.slack.buttons import reason_blocks
from bot.app import Application
from sandbox.slack_server import FakeSlack, slack_environment
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine

pytestmark = pytest.mark.timeout(60)


async def start(start_app: AppStarter, fake: FakeSlack, tmp_path: Path, **env: object) -> Application:
    return await start_app(
        {**peekbot_environment(http_port=0, data_dir=tmp_path / "state", **env), **slack_environment(fake)},
        engine=lambda _: FakeEngine(lambda _request: "答案 / the answer"),
        adapters=lambda settings: [SlackAdapter(settings)],
    )


def statuses(fake: FakeSlack, question: dict[str, Any]) -> list[str]:
    """The status lines the bot showed in the question's thread (its "looking at it" line)."""
    return [
        str(call.args.get("status") or "")
        for call in fake.calls("assistant.threads.setStatus")
        if call.args.get("thread_ts") == question["ts"]
    ]


def stop_labels(fake: FakeSlack) -> list[str]:
    """The Stop button labels in the messages the bot started streaming, in order."""
    return [
        element["text"]["text"]
        for call in fake.calls("chat.startStream")
        for chunk in call.args.get("chunks") or []
        for block in chunk.get("blocks", [])
        for element in block.get("elements", [])
        if element.get("action_id") == "peekbot_stop"
    ]


async def test_a_chinese_question_gets_a_chinese_status_line_and_stop_button(
    start_app: AppStarter, tmp_path: Path
) -> None:
    async with FakeSlack() as fake:
        await start(start_app, fake, tmp_path)
        chinese = fake.user_message("D0ALICE", "这个报错是什么意思？")
        await fake.send_event(chinese)
        assert await fake.wait_answered(chinese) == ["答案 / the answer"]
        english = fake.user_message("D0BOB", "what does this error mean?", user="U0BOB")
        await fake.send_event(english)
        assert await fake.wait_answered(english) == ["答案 / the answer"]

        assert statuses(fake, chinese)[0] == "正在查看…"
        assert stop_labels(fake) == ["停止", "Stop"]  # the Chinese question's Stop button, then the English one's


async def test_a_chinese_question_is_refused_in_chinese(start_app: AppStarter, tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        await start(start_app, fake, tmp_path, access_mode="dm_only")
        mention = f"<@{FakeSlack.BOT_USER_ID}>"
        chinese = fake.user_message("C0DEV", f"{mention} 这个截图里的报错是什么意思？")
        await fake.send_event(chinese)
        refusal = await fake.wait_for(
            lambda calls: [c for c in calls if c.method == "chat.postMessage" and "私信" in str(c.args.get("text"))],
            what="the refusal",
        )
        assert "我在这里只回答私信" in str(refusal[0].args["text"])


def test_the_reason_choice_after_a_thumbs_down_speaks_the_sentence_language() -> None:
    chinese = reason_blocks("谢谢 — 已记下。哪里不对？", "D0ALICE:1.0")
    assert chinese[0]["text"]["text"] == "谢谢 — 已记下。哪里不对？"
    assert [b["text"]["text"] for b in chinese[1]["elements"]] == ["回答错误", "回答不完整", "没有读文件", "其他问题"]
    english = reason_blocks("Thanks — noted.", "D0ALICE:1.0")
    assert english[0]["text"]["text"] == "Thanks — noted. What was wrong?"
    assert [b["text"]["text"] for b in english[1]["elements"]] == [label for _, label in REASONS]
    assert REASONS[0] == ("wrong", "It is wrong")  # the English labels are unchanged
    row = reason_row("om_1", card_id="c1", sequence=2, drawn_at=0.0, lang="zh")
    cells = [column["elements"][0] for column in row["columns"]]
    assert cells[0]["content"] == "哪里不对？" and cells[1]["text"]["content"] == "回答错误"


async def test_the_slack_locale_from_users_info_chooses_chinese_for_an_english_question(
    start_app: AppStarter, tmp_path: Path
) -> None:
    async with FakeSlack() as fake:
        fake.locales["U0CHEN"] = "zh-CN"
        await start(start_app, fake, tmp_path, admins="slack:U0CHEN")
        english = fake.user_message("D0CHEN", "what does this error mean?", user="U0CHEN")
        await fake.send_event(english)
        assert await fake.wait_answered(english) == ["答案 / the answer"]
        assert statuses(fake, english)[0] == "正在查看…" and stop_labels(fake) == ["停止"]
        lookups = fake.calls("users.info")
        assert [c.args.get("user") for c in lookups] == ["U0CHEN"]

        envelope = await fake.send_command("status", user_id="U0CHEN")  # an admin command: its reply too
        await fake.wait_for_ack(envelope)
        await fake.wait_until(lambda: fake.command_responses, 10, "the reply to /peekbot status")
        status = str(fake.command_responses[-1]["text"])
        assert status.startswith("peekbot 状态：") and "队列：" in status and "模型：" in status
        assert "slack：已连接" in status and "Model:" not in status
        assert len(fake.calls("users.info")) == 1  # the locale is remembered, not asked again


async def test_a_failed_locale_lookup_falls_back_to_the_question_language(
    start_app: AppStarter, tmp_path: Path
) -> None:
    async with FakeSlack() as fake:
        fake.fail("users.info", error="missing_scope")
        await start(start_app, fake, tmp_path)
        chinese = fake.user_message("D0ALICE", "这个报错是什么意思？")
        await fake.send_event(chinese)
        assert await fake.wait_answered(chinese) == ["答案 / the answer"]
        assert statuses(fake, chinese)[0] == "正在查看…"
        assert [c.error for c in fake.calls("users.info")] == ["missing_scope"]


async def test_a_slow_users_info_never_holds_the_answer_and_the_cache_is_bounded() -> None:
    import asyncio
    import time

    from adapters.slack.locales import UserLocales

    class SlowSlack:  # a Web API that takes far longer than the lookup may wait, except for U2 and U3
        def __init__(self) -> None:
            self.asked: list[str] = []

        async def users_info(self, *, user: str, include_locale: bool) -> dict[str, Any]:
            self.asked.append(user)
            if user == "U1":
                await asyncio.sleep(5)
            return {"user": {"id": user, "locale": "zh-CN" if include_locale else None}}

    slack = SlowSlack()
    locales = UserLocales(slack, ttl_s=60, timeout_s=0.1, max_people=2)  # type: ignore[arg-type]
    started = time.monotonic()
    assert await locales.of("U1") == "" and time.monotonic() - started < 1.0  # unknown: the question decides
    assert await locales.of("U1") == ""  # remembered, not asked again
    assert [await locales.of(user) for user in ("U2", "U3", "U2")] == ["zh-CN"] * 3
    assert slack.asked == ["U1", "U2", "U3"]
    await locales.of("U1")  # U1 was forgotten (two people at most): asked again
    assert slack.asked == ["U1", "U2", "U3", "U1"]

    # A failed lookup is tried again sooner than the TTL; an answered one is kept for the whole TTL.
    slack = SlowSlack()
    locales = UserLocales(slack, ttl_s=3600, timeout_s=0.1, retry_failed_after_s=0.2)  # type: ignore[arg-type]
    assert [await locales.of(user) for user in ("U1", "U2")] == ["", "zh-CN"]
    await asyncio.sleep(0.3)
    assert [await locales.of(user) for user in ("U1", "U2")] == ["", "zh-CN"]
    assert slack.asked == ["U1", "U2", "U1"]
