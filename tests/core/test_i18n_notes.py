"""The rest of peekbot's own sentences in the asker's language: the notes under an answer, Office refusals and the
admin ``/status`` reply, through the core (the "Sources used" labels: tests/core/test_library_parts.py)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

from PIL import Image

from bot.i18n import note, say
from bot.media.parts import stored_label
from bot.questions import compose_final
from bot.types import FileRef
from tests.support import office_files
from tests.support.apps import AppStarter, peekbot_environment
from tests.support.engines import FakeEngine
from tests.support.helpers import handled, local_image, message

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def saved(tmp_path: Path, name: str, data: bytes, mime: str) -> FileRef:
    path = tmp_path / name
    path.write_bytes(data)
    return local_image(path, mime)


async def test_a_chinese_asker_gets_a_chinese_refusal_for_an_encrypted_docx(
    start_app: AppStarter, tmp_path: Path
) -> None:
    secret = saved(tmp_path, "secret.docx", office_files.encrypted_office(), DOCX)
    app = await start_app(peekbot_environment(http_port=0, data_dir=tmp_path / "state"), engine=lambda _: FakeEngine())
    chinese = await handled(app, message("这份文件里写了什么？", secret))
    english = await handled(app, message("what does this file say?", secret, user="U2"))
    assert chinese.error == "这个 Word 文档 (secret.docx)有密码保护，所以我无法读取；请发送一份没有密码的副本。"
    assert english.error == (
        "This Word document (secret.docx) is password-protected, so I can't read it; please send a copy without a "
        "password."
    )
    assert app.engine.requests == []  # type: ignore[attr-defined]


async def test_the_note_under_an_answer_speaks_the_asker_language(start_app: AppStarter, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (800, 600), (40, 90, 200)).save(path)
    env = peekbot_environment(http_port=0, data_dir=tmp_path / "state", max_pixels=128 * 128)
    app = await start_app(env, engine=lambda _: FakeEngine(lambda _request: "答案"))
    chinese = await handled(app, message("这张截图是什么？", local_image(path)))
    english = await handled(app, message("what is this screenshot?", local_image(path), user="U2", thread="T2"))
    assert chinese.final is not None and english.final is not None
    note_zh = chinese.final.split("\n\n")[-1]
    assert note_zh.startswith("_我把图片“big.png”从 800×600 缩小到了 ") and note_zh.endswith(" 像素。_")
    assert english.final.split("\n\n")[-1].startswith("_I scaled big.png down from 800×600 to ")


async def test_an_admin_gets_the_whole_status_in_chinese(start_app: AppStarter, tmp_path: Path) -> None:
    env = peekbot_environment(http_port=0, data_dir=tmp_path / "state", admins="local:ADMIN")
    app = await start_app(env, engine=lambda _: FakeEngine())
    status = (await handled(app, replace(message("/status", user="ADMIN"), locale="zh-CN"))).final or ""
    lines = status.split("\n")
    assert lines[0].startswith("peekbot 状态：") and lines[1].startswith("队列：")
    assert any(line.startswith("模型：") for line in lines) and any(line.startswith("主机内存：") for line in lines)
    assert not any(line.startswith(("Model:", "Host memory:", "Questions:")) for line in lines)
    english = (await handled(app, message("/status", user="ADMIN"))).final or ""
    assert "\nModel: " in english and "\nHost memory: RSS " in english


def test_notes_pickle_and_old_plain_strings_still_render_as_they_are() -> None:
    scaled = note(
        "note.image_scaled",
        subject=note("subject.named_image", name="a.png"),
        width=9,
        height=9,
        new_width=3,
        new_height=3,
    )
    assert pickle.loads(pickle.dumps(scaled)) == scaled  # media workers hand Notes back
    final = compose_final("答案", [scaled, "An old note stored as text."], "zh")
    assert final == "答案\n\n_我把图片“a.png”从 9×9 缩小到了 3×3 像素。_\n_An old note stored as text._"
    assert stored_label("slide 17").text("zh") == "第 17 张幻灯片"  # type: ignore[union-attr]
    assert stored_label("page 3 of an older kind") == "page 3 of an older kind"
    assert say(
        "media.too_expensive", "zh", what=note("kind.pdf"), named=" (x.pdf)", why=note("media.why_time", limit=20.0)
    ).startswith("这个 PDF (x.pdf)打开的代价太高：它用时超过了")


def test_every_phrase_the_readers_build_exists_in_both_languages() -> None:
    from bot.media.parts import numbered
    from bot.media.pool import _too_expensive
    from bot.media.wording import megapixels, size_text, subject
    from bot.settings import ImageSettings

    phrases = [
        subject(name, what, capital=capital)
        for what in ("image", "PDF", "file", "document", "workbook")
        for name in ("", "x.png")
        for capital in (False, True)
    ]
    phrases += [
        numbered(word, 1, last, **extra)
        for word, extra in (("row", {}), ("line", {}), ("sheet_row", {"sheet": "Q3"}))
        for last in (1, 9)
    ]
    phrases += [megapixels(1_000_000), megapixels(12_000_000), size_text(900)]
    for lang in ("en", "zh"):
        assert all(str(phrase) and phrase.text(lang) for phrase in phrases if not isinstance(phrase, str))
        for what in ("image", "PDF", "file"):
            for cause in ("memory", "time", "crash"):
                assert _too_expensive(what, "x", cause, ImageSettings()).text(lang)
    assert [str(p) for p in phrases[:4]] == ["the image", "The image", "x.png", "x.png"]
    assert subject("x.png", "image").text("zh") == "图片“x.png”" and str(size_text(900)) == "900 bytes"
