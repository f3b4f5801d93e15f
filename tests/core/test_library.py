"""Long documents in a conversation: pages indexed once (text layer or transcription), searched, cited."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from bot.library import TRANSCRIBE_PROMPT, DocumentLibrary
from bot.settings import Settings
from bot.store.sqlite import SQLiteStore
from bot.types import FileRef
from tests.support.asking import CountingIndex, ask
from tests.support.corpus import make_pdf
from tests.support.engines import FakeEngine
from tests.support.helpers import local_image

UNIQUE_PAGE = 27
UNIQUE_PHRASE = "The zebra quartz lantern budget was approved."


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("PEEKBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEEKBOT_MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("PEEKBOT_TRANSCRIBE_MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    monkeypatch.setenv("PEEKBOT_WARMUP", "false")
    return Settings()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def pdf_file(path: Path, data: bytes) -> FileRef:
    path.write_bytes(data)
    return local_image(path, "application/pdf")


def report_pdf(tmp_path: Path, pages: int = 40) -> FileRef:
    texts = [f"Section {n}: the routine quarterly figures for the region {n}." for n in range(1, pages + 1)]
    texts[UNIQUE_PAGE - 1] = UNIQUE_PHRASE
    texts[11] = "Invoice reconciliation schedule and ledger totals."
    return pdf_file(tmp_path / "report.pdf", make_pdf(texts, page_size=(300, 200)))


def scanned_page(number: int) -> Image.Image:
    """A picture-only page that differs from every other number's page."""
    img = Image.new("RGB", (120, 80), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left = 4 + number * 7 % 60
    draw.rectangle((left, 10, left + 36, 30 + number * 3 % 40), fill=(number * 40 % 256, 20, 90))
    return img


def scanned_pdf(path: Path, numbers: list[int]) -> FileRef:
    pictures = [scanned_page(n) for n in numbers]
    pictures[0].save(path, "PDF", save_all=True, append_images=pictures[1:], resolution=72.0)
    return local_image(path, "application/pdf")


def transcriptions(engine: FakeEngine) -> list[Any]:
    return [r for r in engine.requests if r.question == TRANSCRIBE_PROMPT]


def questions(engine: FakeEngine) -> list[Any]:
    return [r for r in engine.requests if r.question != TRANSCRIBE_PROMPT]


async def test_forty_page_pdf_sends_the_page_with_the_phrase_and_cites_it(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    from bot.media.images import PixelBudget
    from bot.media.pdf import render_pdf_pages

    report = report_pdf(tmp_path)
    reply, result = await ask("What was said about the zebra quartz lantern?", report, engine=engine,
                              settings=settings, store=store)

    assert not transcriptions(engine)  # every page has a text layer: nothing to transcribe
    [request] = questions(engine)
    assert "The picture is page 27 of report.pdf." in request.question
    assert len(request.images) == 1
    # The picture is page 27 itself, drawn the way the library draws pages.
    data = Path(report.source["path"]).read_bytes()
    budget = PixelBudget(max_pixels=settings.engine.max_pixels, min_pixels=settings.engine.min_pixels, factor=1)
    [expected] = render_pdf_pages(data, [UNIQUE_PAGE], name="report.pdf", settings=settings.images, budget=budget,
                                  source_sha="x")
    assert request.images[0].tobytes() == expected.image.tobytes()
    assert "Pages used: 27 of report.pdf." in reply.final
    assert result.pages_used == [("report.pdf", [UNIQUE_PAGE])]
    [(seen_file, content_hash)] = result.files_seen
    assert seen_file == report and len(content_hash) == 64
    [info] = await store.documents.documents("local:W1:C1:T1")
    assert (info.name, info.page_count, info.indexed_pages, info.document_id) == ("report.pdf", 40, 40, content_hash)


async def test_follow_up_with_the_pdf_as_context_reuses_the_index(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    index = CountingIndex(store.documents)
    library = DocumentLibrary(index, engine, settings)
    report = report_pdf(tmp_path)
    await ask("zebra lantern?", report, engine=engine, settings=settings, library=library)
    assert len(index.pages_written) == 40

    reply, _ = await ask("Where is the invoice reconciliation in this?", engine=engine, settings=settings,
                         library=library, context=(report,))
    assert len(index.pages_written) == 40  # nothing read again
    assert "The picture is page 12 of report.pdf." in engine.requests[-1].question
    assert "Pages used: 12 of report.pdf." in reply.final


FIRST_PAGES = [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("*", FIRST_PAGES),
        ('"', FIRST_PAGES),
        ('"zebra', [UNIQUE_PAGE]),
        ("NEAR(", FIRST_PAGES),
        ("a OR AND -", FIRST_PAGES),  # only common words
        ("NOT ledger*", [12]),  # not an exclusion, not a prefix query: the word "ledger"
        ("'; DROP TABLE pages; --", FIRST_PAGES),
        ("^:() {}", FIRST_PAGES),
    ],
)
async def test_hostile_search_text_is_plain_text(
    hostile: str, expected: list[int], tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    """Search syntax in a question is just words: the answer comes, from the first pages when nothing matches."""
    engine = FakeEngine()
    library = DocumentLibrary(store.documents, engine, settings)
    reply, result = await ask(hostile, report_pdf(tmp_path), engine=engine, settings=settings, library=library)
    assert result.pages_used == [("report.pdf", expected)]
    numbers = ", ".join(str(page) for page in expected)
    assert f"Pages used: {numbers} of report.pdf." in reply.final
    assert len(engine.requests[-1].images) == len(expected)


async def test_scanned_pdf_is_transcribed_once_per_page_within_the_allowance(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings.images, "pdf_max_pages", 2)
    monkeypatch.setattr(settings.images, "transcribe_pages_per_question", 4)
    scan = scanned_pdf(tmp_path / "scan.pdf", [1, 2, 3, 4, 5, 6])

    first, _ = await ask("what is on the scan?", scan, engine=engine, settings=settings, store=store)
    assert len(transcriptions(engine)) == 4
    assert all(len(r.images) == 1 for r in transcriptions(engine))
    assert "I've indexed 4 of 6 pages of scan.pdf so far; ask again to search more." in first.final

    second, _ = await ask("and now?", engine=engine, settings=settings, store=store, context=(scan,))
    assert len(transcriptions(engine)) == 6  # the two pages left, no page twice
    assert "so far" not in second.final

    await ask("once more", engine=engine, settings=settings, store=store, context=(scan,))
    assert len(transcriptions(engine)) == 6
    assert len(questions(engine)) == 3

    # Another file sharing pages 2 and 5 (same pictures): only its new page is transcribed.
    other = scanned_pdf(tmp_path / "other.pdf", [5, 2, 9])
    await ask("and this one?", other, engine=engine, settings=settings, store=store, thread="T2")
    assert len(transcriptions(engine)) == 7


async def test_small_pdf_keeps_being_sent_whole(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    small = pdf_file(tmp_path / "memo.pdf", make_pdf(["one", "two", "three"], page_size=(300, 200)))
    reply, result = await ask("summarise", small, engine=engine, settings=settings, store=store)
    [request] = engine.requests
    assert len(request.images) == 3
    assert "Pages used" not in reply.final
    assert result.pages_used == []
    assert await store.documents.documents("local:W1:C1:T1") == []


SCREENS = {
    (200, 0, 0): "Deployment failed: container exited with code 137 (out of memory)",
    (0, 200, 0): "All 412 tests passed on the main branch",
    (0, 0, 200): "Grafana panel: request latency p95 240 ms",
    (200, 200, 0): "Billing summary for October, invoice 5521",
    (0, 200, 200): "Login page with the company logo",
}


async def test_more_earlier_images_than_fit_are_searched_like_pages(
    tmp_path: Path, settings: Settings, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings.images, "max_images_per_question", 2)
    screens = []
    for number, colour in enumerate(SCREENS, start=1):
        path = tmp_path / f"screen{number}.png"
        Image.new("RGB", (90, 60), colour).save(path)
        screens.append(local_image(path))
    engine = FakeEngine(reads=SCREENS)
    library = DocumentLibrary(store.documents, engine, settings)

    reply, result = await ask("why did the deployment fail?", engine=engine, settings=settings, library=library,
                              context=tuple(screens))
    assert len(transcriptions(engine)) == 5  # each earlier image read once
    request = questions(engine)[-1]
    assert [image.getpixel((1, 1)) for image in request.images] == [(200, 0, 0)]
    assert "The picture is image 1 of the 5 earlier images in this thread." in request.question
    assert "Images used: 1 of the 5 earlier images in this thread." in reply.final
    assert result.image_hashes == [hashlib.sha256(Path(screens[0].source["path"]).read_bytes()).hexdigest()]

    reply, _ = await ask("which invoice number?", engine=engine, settings=settings, library=library,
                         context=tuple(screens))
    assert len(transcriptions(engine)) == 5  # read from the cache
    assert "Images used: 4 of the 5 earlier images in this thread." in reply.final

    await ask("thoughts?", engine=engine, settings=settings, library=library, context=tuple(screens))
    request = questions(engine)[-1]  # nothing matches: the newest two, in thread order
    assert [image.getpixel((1, 1)) for image in request.images] == [(200, 200, 0), (0, 200, 200)]
    assert "The pictures are images 4, 5 of the 5 earlier images in this thread, in that order." in request.question


def test_pdf_pages_are_counted_read_and_drawn_in_the_order_asked(settings: Settings) -> None:
    from bot.media.images import PixelBudget
    from bot.media.pdf import pdf_page_count, pdf_page_texts, render_pdf_pages

    data = make_pdf(["alpha page", "", "gamma page"], page_size=(300, 200))
    assert pdf_page_count(data) == 3
    assert pdf_page_texts(data, [3, 2, 1, 7]) == {3: "gamma page", 2: "", 1: "alpha page"}
    budget = PixelBudget(max_pixels=128 * 128, min_pixels=64 * 64, factor=1)
    drawn = render_pdf_pages(data, [3, 1, 99], name="x.pdf", settings=settings.images, budget=budget, source_sha="s")
    assert [(p.page, p.text) for p in drawn] == [(3, "gamma page"), (1, "alpha page")]
    assert all(p.image.width * p.image.height <= 128 * 128 for p in drawn)
    assert drawn[0].label == "x.pdf p.3"


async def test_pdf_pages_sharing_a_heavy_stream_stop_at_the_deadline_with_a_note(
    tmp_path: Path, settings: Settings, engine: FakeEngine, store: SQLiteStore
) -> None:
    """300 pages that each parse one heavy drawing: their text was read for minutes, now until the budget."""
    from tests.support.corpus import heavy_page_ops, make_shared_stream_pdf

    settings.images.pdf_time_budget_s = 2.0
    plan = pdf_file(tmp_path / "plan.pdf", make_shared_stream_pdf(300, ops=heavy_page_ops(20_000)))
    started = time.monotonic()
    reply, result = await ask("where is the boiler room?", plan, engine=engine, settings=settings, store=store)
    assert time.monotonic() - started < 20.0
    indexed = await store.documents.indexed_pages(hashlib.sha256(Path(plan.source["path"]).read_bytes()).hexdigest())
    assert 0 < len(indexed) < 300
    assert f"I've indexed {len(indexed)} of 300 pages of plan.pdf so far; ask again to search more." in reply.final
    assert result.pages_used and result.pages_used[0][0] == "plan.pdf"
