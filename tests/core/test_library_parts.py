"""Office and text files in a conversation: long ones indexed once by part, searched, sent by part and cited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.errors import EncryptedDocument
from bot.library import DocumentLibrary
from bot.settings import Settings
from bot.store.sqlite import SQLiteStore
from bot.types import FileRef
from tests.support import office_files
from tests.support.asking import CountingIndex, ask
from tests.support.engines import FakeEngine
from tests.support.helpers import local_image

FACT = "The zebra quartz lantern code is 4417."
QUESTION = "What is the zebra quartz lantern code?"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    monkeypatch.setenv("PEEKBOT_WARMUP", "false")
    # Generous time: these tests are about what is chosen and cited, not about a busy machine's deadlines.
    monkeypatch.setenv("PEEKBOT_PDF_TIME_BUDGET_S", "60")
    monkeypatch.setenv("PEEKBOT_MEDIA_TIME_LIMIT_S", "90")
    return Settings()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def saved(tmp_path: Path, name: str, data: bytes, mime: str = "application/octet-stream") -> FileRef:
    path = tmp_path / name
    path.write_bytes(data)
    return local_image(path, mime)


async def test_fact_on_slide_17_of_25_is_sent_and_cited(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    deck = saved(tmp_path, "deck.pptx", office_files.deck(25, {17: FACT}, pictures={17: office_files.png()}))
    reply, result = await ask(QUESTION, deck, engine=engine, settings=settings, store=store)

    [request] = engine.requests
    assert "[slide 17 of deck.pptx]\nSlide 17 status\n" + FACT in request.question
    assert "[slide 3 of deck.pptx]" not in request.question  # only the parts the search picked
    assert request.question.endswith(f"{QUESTION}\n\n(The picture is from slide 17 of deck.pptx.)")
    assert len(request.images) == 1  # the picture on slide 17
    assert reply.final.endswith("_Sources used: slide 17 of deck.pptx._")
    assert result.pages_used == [("deck.pptx", [17])]
    [info] = await store.documents.documents("local:W1:C1:T1")
    assert (info.name, info.page_count, info.indexed_pages) == ("deck.pptx", 25, 25)


async def test_fact_in_sheet_q3_row_480_of_three_sheets_is_sent_and_cited(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    book = office_files.workbook({"Q1": 600, "Q2": 600, "Q3": 600}, {("Q3", 480): FACT})
    budget = saved(tmp_path, "budget.xlsx", book)
    reply, _ = await ask(QUESTION, budget, engine=engine, settings=settings, store=store)

    [request] = engine.requests
    assert "[sheet Q3, rows 441–480 of budget.xlsx]\nSheet Q3, cells A441:D480\n| Row | Item |" in request.question
    assert f"| 480 | item 480 | owner 4 | 1440 | {FACT} |" in request.question
    assert "sheet Q1" not in request.question and request.images == []
    assert len(request.question) < 12_000  # 45 blocks of rows, one sent
    assert reply.final.endswith("_Sources used: sheet Q3, rows 441–480 of budget.xlsx._")


async def test_fact_in_a_section_of_a_twelve_section_word_file_comes_with_its_screenshot(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    titles = [
        "Overview",
        "Access",
        "Deploy",
        "Monitoring",
        "Alerts",
        "Scaling",
        "Rollback",
        "Backups",
        "Restore",
        "Contacts",
        "Glossary",
        "History",
    ]
    screenshot = office_files.png((20, 160, 40), (120, 90))
    data = office_files.word(titles, {6: FACT}, screenshot=(6, screenshot))
    runbook = saved(tmp_path, "runbook.docx", data)
    settings.images.doc_text_chars_per_question = 4000  # twelve sections of filler: more than one question carries
    reply, _ = await ask(QUESTION, runbook, engine=engine, settings=settings, store=store)

    [request] = engine.requests
    assert "[section 'Rollback' of runbook.docx]\n# Rollback\n" in request.question and FACT in request.question
    assert "# Backups" not in request.question
    [picture] = request.images
    assert picture.getpixel((picture.width // 2, picture.height // 2)) == (20, 160, 40)  # the pasted screenshot
    assert reply.final.endswith("_Sources used: section 'Rollback' of runbook.docx._")


async def test_follow_up_reuses_the_index_and_searches_again(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    index = CountingIndex(store.documents)
    library = DocumentLibrary(index, engine, settings)
    deck = saved(tmp_path, "deck.pptx", office_files.deck(25, {17: FACT, 4: "Budget owner is Dana Whitfield."}))
    await ask(QUESTION, deck, engine=engine, settings=settings, library=library)
    assert sorted(page for _, page, _ in index.pages_written) == list(range(1, 26))

    reply, _ = await ask("Who is the budget owner?", engine=engine, settings=settings, library=library, context=(deck,))
    assert sorted(page for _, page, _ in index.pages_written) == list(range(1, 26))  # nothing indexed twice
    assert "[slide 4 of deck.pptx]" in engine.requests[-1].question
    assert reply.final.endswith("_Sources used: slide 4 of deck.pptx._")


async def test_short_files_are_sent_whole_with_their_pictures(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    memo = saved(tmp_path, "memo.docx", office_files.word(["Plan"], {0: FACT}, screenshot=(0, office_files.png())))
    log = saved(tmp_path, "app.log", b"12:00 started\n12:01 ERROR disk full on /var\n", "text/plain")
    reply, _ = await ask("Why did it fail?", memo, log, engine=engine, settings=settings, store=store)

    [request] = engine.requests
    assert "[section 'Plan' of memo.docx]" in request.question and FACT in request.question
    assert "[lines 1–3 of app.log]\n12:00 started\n12:01 ERROR disk full on /var" in request.question
    assert request.question.endswith("Why did it fail?")
    assert len(request.images) == 1
    assert "Sources used" not in reply.final


async def test_an_encrypted_file_is_refused_with_its_reason(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    secret = saved(tmp_path, "salaries.xlsx", office_files.encrypted_office())
    with pytest.raises(EncryptedDocument) as caught:
        await ask("total?", secret, engine=engine, settings=settings, store=store)
    assert "salaries.xlsx) is password-protected" in caught.value.user_message
    assert engine.requests == []


class CountingPool:
    """The shared media pool, counting the files read as documents."""

    def __init__(self) -> None:
        from bot.media.pool import shared_pool

        self.inner = shared_pool()
        self.documents_read = 0

    async def read_document(self, data: bytes, **kwargs: Any) -> Any:
        self.documents_read += 1
        return await self.inner.read_document(data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_sheet_indexed_whole_is_answered_from_the_index_without_reading_it_again(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    pool = CountingPool()
    book = office_files.workbook({"Q1": 300, "Q3": 600}, {("Q3", 480): FACT, ("Q1", 20): "Owner of the kiwi fund."})
    budget = saved(tmp_path, "budget.xlsx", book)
    await ask(QUESTION, budget, engine=engine, settings=settings, store=store, media=pool)
    assert pool.documents_read == 1

    reply, _ = await ask(
        "Who owns the kiwi fund?", engine=engine, settings=settings, store=store, media=pool, context=(budget,)
    )
    assert pool.documents_read == 1  # its 23 parts came from the index
    assert "| 20 | item 20 | owner 3 | 60 | Owner of the kiwi fund. |" in engine.requests[-1].question
    assert reply.final.endswith("_Sources used: sheet Q1, rows 1–40 of budget.xlsx._")


async def test_a_file_read_only_in_part_is_read_again_by_the_next_question(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    pool = CountingPool()
    budget = saved(tmp_path, "budget.xlsx", office_files.workbook({"Q1": 300}, {}))
    settings.images.pdf_time_budget_s = 0.0  # out of time at once: the first part only
    reply, _ = await ask("totals?", budget, engine=engine, settings=settings, store=store, media=pool)
    assert "_budget.xlsx took too long to read, so I read it up to sheet Q1, rows 1–40._" in reply.final
    [info] = await store.documents.documents("local:W1:C1:T1")
    assert (info.page_count, info.indexed_pages) == (2, 1)  # one part more than read: not indexed whole

    await ask("totals?", engine=engine, settings=settings, store=store, media=pool, context=(budget,))
    assert pool.documents_read == 2


class NoReading:
    """A media pool that must not be asked: the file's parts are to come from the document index."""

    async def read_document(self, *_args: object, **_kwargs: object) -> None:
        raise AssertionError("the file was read again instead of taken from the index")


async def test_sources_used_are_named_in_chinese_also_when_read_back_from_the_index(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    deck = saved(tmp_path, "deck.pptx", office_files.deck(25, {17: FACT}, pictures={17: office_files.png()}))
    reply, _ = await ask(QUESTION, deck, engine=FakeEngine(), settings=settings, store=store, locale="zh-CN")
    assert reply.final.endswith("_参考来源：deck.pptx 的 第 17 张幻灯片。_")

    book = saved(tmp_path, "budget.xlsx", office_files.workbook({"Q1": 600, "Q3": 600}, {("Q3", 480): FACT}))
    for media in (None, NoReading()):  # the second time its parts come from the index, where labels are English
        reply, _ = await ask(
            QUESTION, book, engine=FakeEngine(), settings=settings, store=store, locale="zh-CN", media=media
        )
        assert reply.final.endswith("_参考来源：budget.xlsx 的 工作表 Q3 的第 441–480 行。_"), reply.final
    reply, _ = await ask(QUESTION, book, engine=FakeEngine(), settings=settings, store=store)
    assert reply.final.endswith("_Sources used: sheet Q3, rows 441–480 of budget.xlsx._")
