"""peekbot's own sentences in the asker's language: the catalogue is complete, and a Chinese question (or a Chinese
platform locale) gets Chinese refusals, errors, command replies and progress lines while English stays as it was."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.console.adapter import terminal_locale
from adapters.kit.replies import ReplyConfig, StreamingReply
from adapters.kit.text import is_looking, is_progress_text, progress_text
from bot.access import DM_ONLY_REPLY
from bot.errors import DeadlineExceeded, EngineUnavailable, TooManyPending
from bot.i18n import CATALOGUE, LANGS, lang_for, lang_of_locale, lang_of_text, placeholders, say
from bot.questions import answer_question
from bot.ratelimit import quota_reply, rate_limit_reply
from bot.settings import Settings
from bot.store.codec import decode_message, encode_message
from bot.store.sqlite import SQLiteStore
from bot.types import AnswerAction, AnswerActionKind, IncomingMessage
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.corpus import make_pdf
from tests.support.engines import FakeEngine
from tests.support.helpers import LocalFilesAdapter, RecordingReply, handled, local_image, message
from tests.support.memory_surface import MemoryChat, MemorySurface

SAMPLE = {
    "name": "status", "position": 3, "word": "workspace", "contact": "the admins", "reference": "msg1", "attempts": 3,
    "depth": 9, "limit": 8, "seconds": 42.4, "reason": "warming up", "length": 5000, "count": 5, "n": 2,
    "parts": "2 older images", "wait": "a minute", "quota": 50, "state": "running", "uptime": "3 h",
    "waiting": 1, "running": 0, "action": "frob", "named": " “a.png”", "why": "a redirect", "size": "3 MB",
    "preview": "answer in Japanese", "by": "slack:U1", "places": "3 of a.pdf", "numbers": "3, 5",
    "document": "a.pdf", "listed": "pages 4, 9", "total": 12, "done": 3, "searchable": 10,
    "when": "2026-12-06 10:00 UTC", "who": "set by slack:U1",
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_every_key_exists_in_every_language_with_the_same_placeholders(key: str) -> None:
    texts = CATALOGUE[key]
    assert set(texts) == set(LANGS)
    english = placeholders(texts["en"])
    for lang in LANGS:
        assert texts[lang].strip(), (key, lang)
        assert placeholders(texts[lang]) == english, (key, lang)
        rendered = say(key, lang, **{name: SAMPLE.get(name, 7) for name in english})  # 7: any number fits
        assert rendered.strip() and "{" not in rendered, (key, lang, rendered)


def test_the_language_comes_from_the_locale_else_from_the_question() -> None:
    assert lang_of_text("这个报错是什么意思？") == "zh"
    assert lang_of_text("请看一下这个 error 日志") == "zh"  # Chinese with a technical word
    assert lang_of_text("what does this error mean?") == "en"
    assert lang_of_text("what does 错误 mean in this dialog?") == "en"  # English with one Chinese word
    assert lang_of_text("このエラーは何ですか") == "en"  # Japanese (kana): not in the catalogue
    assert lang_of_text("") == "en"
    assert [lang_of_locale(x) for x in ("zh-CN", "zh_TW", "en-US", "ja-JP", "")] == ["zh", "zh", "en", None, None]
    english_from_a_chinese_locale = replace(message("what is this?"), locale="zh-CN")
    assert lang_for(english_from_a_chinese_locale) == "zh"
    assert lang_for(replace(message("这是什么？"), locale="en-US")) == "en"
    assert lang_for(replace(message("这是什么？"), locale="ja-JP")) == "zh"  # unknown locale: the text decides


def test_the_terminal_tells_its_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert terminal_locale() == "zh_CN" and lang_of_locale(terminal_locale()) == "zh"
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert lang_of_locale(terminal_locale()) is None  # no language: the question's text decides


def test_english_sentences_are_unchanged_and_chinese_ones_differ() -> None:
    assert progress_text(None) == "Looking at it…" and progress_text(3) == "Queued — 3 questions ahead of yours."
    assert progress_text(None, "zh") == "正在查看…"
    assert progress_text(3, "zh") == "排队中 — 前面还有 3 个问题。"
    assert all(is_progress_text(progress_text(n, lang)) for n in (None, 1, 4) for lang in LANGS)
    assert is_looking(progress_text(None, "zh")) and not is_looking(progress_text(2, "zh"))
    timeout = DeadlineExceeded(42)
    assert timeout.user_message.startswith("Sorry, answering took longer than 42 s")
    assert timeout.text("en") == timeout.user_message and timeout.text("zh").startswith("抱歉，回答用时超过了 42 秒")
    assert EngineUnavailable().text("zh") == "抱歉，我现在无法回答：模型没有在运行。"
    assert EngineUnavailable().user_message == "Sorry, I can't answer right now: the model is not running."
    assert TooManyPending(2, 1).user_message == (
        "You already have 1 question waiting; I'll take more once some are answered."
    )
    assert rate_limit_reply(60, "zh") == "你提问的速度太快了 — 请等大约 1 分钟后再问。"
    assert quota_reply(50, 1800) == (
        "You've used today's 50 questions. Your quota resets at midnight (in about 30 minutes)."
    )
    assert say("progress.looking", "fr") == "Looking at it…"  # a language the catalogue lacks: English


ask = handled


async def test_a_chinese_question_gets_chinese_refusals_and_an_english_one_english(
    start_app: AppStarter, tmp_path: Path
) -> None:
    env = peekbot_environment(http_port=0, data_dir=tmp_path / "state", access_mode="dm_only")
    app = await start_app(env, engine=lambda _: FakeEngine())
    chinese = await ask(app, message("这个截图里的报错是什么意思？", user="U1"))
    english = await ask(app, message("what does the error in this screenshot mean?", user="U2"))
    assert chinese.error == "我在这里只回答私信 — 请私信我。"
    assert english.error == DM_ONLY_REPLY
    assert app.engine.requests == []  # type: ignore[attr-defined]


async def test_chinese_errors_and_command_replies_and_the_locale_wins_over_the_text(
    start_app: AppStarter, tmp_path: Path
) -> None:
    env = peekbot_environment(http_port=0, data_dir=tmp_path / "state", admins="local:ADMIN", max_question_chars=20)
    app = await start_app(env, engine=lambda _: FakeEngine())
    too_long = await ask(app, message("请问" * 15))
    assert too_long.error == "你的问题有 30 个字符；上限为 20。"
    assert (await ask(app, message("x" * 30))).error == "Your question is 30 characters long; the limit is 20."

    in_chinese = replace(message("/help"), locale="zh-CN")  # a command carries no language; the locale does
    help_text = (await ask(app, in_chinese)).final or ""
    assert help_text.startswith("我可以回答关于截图、照片、PDF")
    assert "/status — 我是否在线以及有多忙" in help_text
    assert ((await ask(app, message("/help"))).final or "").startswith("I answer questions about screenshots")
    refused = await ask(app, replace(message("/pause"), locale="zh-CN"))
    assert refused.final == "抱歉，/pause 仅限 peekbot 管理员使用。" and not app.paused
    english_text_chinese_locale = await ask(app, replace(message("what is on this page, please?"), locale="zh-CN"))
    assert english_text_chinese_locale.error == "你的问题有 29 个字符；上限为 20。"
    assert (await ask(app, replace(message("/frobnicate"), locale="zh_CN"))).final == (
        "我不认识命令 /frobnicate。输入 /help 查看我能做什么。"
    )


async def test_the_placeholder_and_the_queue_position_speak_the_question_language() -> None:
    chat = MemoryChat()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro):  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        return task

    question = message("这个报错是什么意思？")
    reply = StreamingReply(MemorySurface(chat), ReplyConfig(update_interval_s=0.01), spawn=spawn)
    reply.speaking(lang_for(question))
    await reply.start_progress(2)
    assert chat.texts() == ["排队中 — 前面还有 2 个问题。"]
    await reply.start_progress(None)
    assert chat.texts() == ["正在查看…"]
    await reply.finish("答案")
    assert chat.texts() == ["答案"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_button_press_is_answered_in_the_language_of_the_question(
    start_app: AppStarter, tmp_path: Path
) -> None:
    app = await start_app(peekbot_environment(http_port=0, data_dir=tmp_path / "state"), engine=lambda _: FakeEngine())
    chinese, english = message("这个截图里的报错是什么意思？"), message("what does this error mean?")
    for question in (chinese, english):
        assert (await ask(app, question)).final

    def press(question: IncomingMessage, kind: AnswerActionKind) -> AnswerAction:
        return AnswerAction("local", question.message_id, question.user, kind, conversation=question.conversation)

    assert await app.answer_action(press(chinese, AnswerActionKind.HELPFUL)) == "谢谢 — 已记下这个回答有帮助。"
    assert await app.answer_action(press(chinese, AnswerActionKind.STOP)) == "这个回答已经完成了。"
    assert await app.answer_action(press(english, AnswerActionKind.HELPFUL)) == "Thanks — noted that this helped."


async def test_the_pages_used_line_speaks_the_asker_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: SQLiteStore
) -> None:
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    settings = Settings()
    texts = [f"Section {n}: the routine quarterly figures for the region {n}." for n in range(1, 31)]
    texts[26] = "The zebra quartz lantern budget was approved."
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(texts, page_size=(300, 200)))
    report = local_image(path, "application/pdf")
    finals = []
    for locale in ("zh-CN", ""):
        reply = RecordingReply()
        question = replace(message("What about the zebra quartz lantern?", report), locale=locale)
        await answer_question(
            question,
            reply,
            adapter=LocalFilesAdapter(),
            engine=FakeEngine(),
            settings=settings,
            history=[],
            store=store,
        )
        finals.append(reply.final or "")
    chinese, english = finals  # the same question and file: the answer cache must not serve the Chinese notes
    assert chinese.endswith("_参考的页面：report.pdf 的 27。_")
    assert english.endswith("_Pages used: 27 of report.pdf._")


def test_the_journal_keeps_the_locale_for_a_resumed_question() -> None:
    question = replace(message("what is this?"), locale="zh-CN")
    assert decode_message(encode_message(question)).locale == "zh-CN"
    assert decode_message(encode_message(message("what is this?"))).locale == ""


async def test_a_chinese_question_with_a_damaged_image_gets_the_chinese_sentence(
    start_app: AppStarter, tmp_path: Path
) -> None:
    broken = tmp_path / "shot.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 20)
    app = await start_app(peekbot_environment(http_port=0, data_dir=tmp_path / "state"), engine=lambda _: FakeEngine())
    chinese = await ask(app, message("这张截图里的报错是什么意思？", local_image(broken)))
    english = await ask(app, message("what does the error in this screenshot mean?", local_image(broken), user="U2"))
    assert chinese.error == "我无法读取这张图片 (shot.png)：文件已损坏，或者不是图片。"
    assert english.error == "I couldn't read this image (shot.png): the file is damaged or not an image."


def test_chinese_sentences_space_latin_values_but_leave_the_values_alone() -> None:
    assert say("feishu.offline", "zh", name="报告2024.pdf") == "我现在没有连接到飞书，所以无法下载“报告2024.pdf”。"
    refusal = say("feishu.unsupported", "zh", name="diagram.vsdx")
    assert refusal.startswith("我无法读取 diagram.vsdx。")  # the template's own space is not doubled
    assert say("progress.queued_many", "zh", position=12) == "排队中 — 前面还有 12 个问题。"
    named = {key: texts["zh"] for key, texts in CATALOGUE.items() if "这个{what}" in texts["zh"]}
    assert named, "file-kind refusals exist"
    for key, template in named.items():
        kinds = {"what": "Word 文档", "named": ""}
        values = {name: kinds.get(name, 3) for name in placeholders(template)}
        assert "这个 Word 文档" in say(key, "zh", **values), key
    english = say("feishu.offline", "en", name="x.png")
    assert english == "I couldn't download “x.png” because I'm not connected to Feishu right now."
