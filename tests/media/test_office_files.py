"""Office and text files read as parts (text in the file's own terms, embedded pictures), and their guards."""

from __future__ import annotations

import time

import pytest

from bot.errors import DocumentRejected, EncryptedDocument, UnsupportedFile
from bot.media.files import read_document
from bot.media.pool import MediaPool
from bot.media.sniff import document_format, sniff_kind
from bot.settings import ImageSettings
from tests.support import corpus, office_files

DOCX, DOCM = office_files.DOCX_TYPE, office_files.DOCM_TYPE
XLSX, XLSM = office_files.XLSX_TYPE, office_files.XLSM_TYPE


def limits(**overrides: object) -> ImageSettings:
    return ImageSettings.model_construct(**overrides)


def read(data: bytes, name: str, **overrides: object):  # type: ignore[no-untyped-def]
    return read_document(data, name=name, images=limits(**overrides))


# ---------------------------------------------------------------------------------------------- sniffing


def test_office_and_text_files_are_told_by_content_not_name() -> None:
    deck = office_files.deck(2, {})
    assert sniff_kind(deck, "photo.png", "image/png") == "document"
    assert document_format(deck, "photo.png") == "pptx"
    assert document_format(office_files.workbook({"A": 3}, {}), "") == "xlsx"
    assert document_format(office_files.word(["One"], {}), "report.bin") == "docx"
    assert document_format(b"<!DOCTYPE html><p>hi</p>", "") == "html"
    assert document_format(b"a,b\n1,2\n", "export.csv") == "csv"
    assert document_format("日志 line\n".encode(), "") == "text"
    assert document_format("预算表".encode("gbk"), "notes.txt") == "text"  # another encoding, named as text
    assert sniff_kind(corpus.make_zip(), "report.docx") is None  # a ZIP without a Word part is no Word file
    assert sniff_kind(corpus.random_bytes(), "notes.txt", "text/plain") is None
    assert document_format(office_files.encrypted_office(), "secret.xlsx") == "encrypted"


# ---------------------------------------------------------------------------------------------- readers


def test_deck_gives_a_part_per_slide_with_notes_and_pictures() -> None:
    data = office_files.deck(3, {2: "The launch moves to March."}, pictures={2: office_files.png()})
    document = read(data, "deck.pptx")
    assert [str(p.label) for p in document.parts] == ["slide 1", "slide 2", "slide 3"]
    second = document.parts[1]
    assert "Slide 2 status" in second.text and "The launch moves to March." in second.text
    assert "Speaker notes: Speaker notes for slide 2." in second.text
    assert second.pictures == (office_files.png(),)
    assert document.parts[0].pictures == ()


def test_workbook_gives_blocks_of_rows_with_sheet_names_ranges_and_header() -> None:
    data = office_files.workbook({"Q1": 10, "Q3": 100}, {("Q3", 80): "Marked for audit"})
    document = read(data, "budget.xlsx")
    labels = [str(p.label) for p in document.parts]
    assert labels == ["sheet Q1, rows 1–10", "sheet Q3, rows 1–40", "sheet Q3, rows 41–80", "sheet Q3, rows 81–100"]
    block = document.parts[2]
    assert block.text.startswith("Sheet Q3, cells A41:D80\n| Row | Item | Owner | Amount | Comment |")
    assert "| 80 | item 80 | owner 12 | 240 | Marked for audit |" in block.text


def test_word_file_gives_sections_with_tables_and_pasted_pictures() -> None:
    screenshot = office_files.png((10, 200, 10))
    data = office_files.word(["Overview", "Rollback"], {1: "Roll back with deploy undo."}, screenshot=(1, screenshot))
    document = read(data, "runbook.docx")
    labels = [str(p.label) for p in document.parts]
    assert labels == ["section 'Service runbook'", "section 'Overview'", "section 'Rollback'"]
    rollback = document.parts[2]
    assert rollback.text.startswith("# Rollback") and "Roll back with deploy undo." in rollback.text
    assert "| Step | Owner |\n| --- | --- |\n| check 1 | on-call |" in rollback.text
    assert rollback.pictures == (screenshot,)


def test_text_files_are_cut_by_heading_lines_and_rows() -> None:
    markdown = read(b"intro\n# Setup\ninstall\n```\n# a comment, not a heading\n```\n## Rollback\nundo\n", "a.md")
    assert [str(p.label) for p in markdown.parts] == ["the start", "section 'Setup'", "section 'Rollback'"]
    assert "# a comment, not a heading" in markdown.parts[1].text
    log = read(b"".join(b"line %d of the log\n" % n for n in range(1, 601)), "app.log", doc_text_chars_per_part=3000)
    assert [str(p.label) for p in log.parts][:2] == ["lines 1–155", "lines 156–305"]
    html = read(
        b"<html><script>alert(1)</script><h1>Prices</h1><table><tr><th>a</th></tr><tr><td>1</td></tr></table></html>",
        "p.html",
    )
    assert [str(p.label) for p in html.parts] == ["section 'Prices'"]
    assert "alert" not in html.parts[0].text and "| a |\n| --- |\n| 1 |" in html.parts[0].text
    csv = read(b"name;total\n" + b"".join(b"x%d;%d\n" % (n, n) for n in range(50)), "t.csv")
    assert [str(p.label) for p in csv.parts] == ["rows 2–41", "rows 42–51"]
    assert csv.parts[1].text.startswith("| Row | name | total |")
    chinese = read("第三季度预算\n".encode("gbk") * 3, "notes.txt")
    assert chinese.parts[0].text.startswith("第三季度预算")


def test_part_count_is_capped_with_a_note() -> None:
    document = read(office_files.deck(12, {}), "deck.pptx", doc_max_parts=5)
    assert len(document.parts) == 5
    assert tuple(map(str, document.notes)) == ("deck.pptx is longer than I read: I read it up to slide 5.",)


# ---------------------------------------------------------------------------------------------- guards


def test_zip_bomb_is_refused_before_it_is_opened() -> None:
    bomb = office_files.zip_bomb(300)
    assert len(bomb) < 2_000_000
    started = time.monotonic()
    with pytest.raises(DocumentRejected) as caught:
        read(bomb, "bomb.docx")
    assert time.monotonic() - started < 1.0  # nothing was inflated
    assert caught.value.user_message == (
        "This Word document (bomb.docx) unpacks to 300 MB, more than the 256 MB I open. Please send a smaller file."
    )


def test_zip_of_too_many_entries_is_refused() -> None:
    with pytest.raises(DocumentRejected) as caught:
        read(office_files.many_entries(6000), "many.xlsx")
    assert "made of more than 5,000 pieces" in caught.value.user_message


def test_encrypted_office_file_is_refused_with_a_reason() -> None:
    with pytest.raises(EncryptedDocument) as caught:
        read(office_files.encrypted_office(), "salaries.xlsx")
    assert caught.value.user_message == (
        "This Excel workbook (salaries.xlsx) is password-protected, so I can't read it; "
        "please send a copy without a password."
    )


def test_macro_enabled_files_are_read_as_data() -> None:
    docm = office_files.with_macros(
        office_files.word(["Macros"], {0: "Plain text beside macros."}), "word/document.xml", (DOCX, DOCM)
    )
    document = read(docm, "tool.docm")
    assert any("Plain text beside macros." in part.text for part in document.parts)
    xlsm = office_files.with_macros(
        office_files.workbook({"Data": 5}, {("Data", 3): "kept"}), "xl/workbook.xml", (XLSX, XLSM)
    )
    sheet = read(xlsm, "tool.xlsm")
    assert "| 3 | item 3 | owner 3 | 9 | kept |" in sheet.parts[0].text


def test_million_cell_sheet_stops_at_the_cell_cap_with_a_note() -> None:
    started = time.monotonic()
    document = read(office_files.dense_sheet(1000, 1000), "cells.xlsx", doc_max_cells=50_000)
    assert time.monotonic() - started < 10
    assert tuple(map(str, document.notes)) == (
        "cells.xlsx has more than 50,000 cells; I read the first 50,000, up to row 50 of sheet Data.",
    )
    assert [str(p.label) for p in document.parts] == ["sheet Data, rows 1–40", "sheet Data, rows 41–50"]


def test_damaged_and_old_office_files_get_a_sentence() -> None:
    with pytest.raises(DocumentRejected) as damaged:
        read(b"PK\x03\x04" + bytes(100), "notes.docx")
    assert damaged.value.user_message.startswith(
        "I couldn't read this file (notes.docx): it looks like a Word document, but it is damaged."
    )
    with pytest.raises(UnsupportedFile) as old:
        read(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.doc")
    assert "Please save it as .docx, .xlsx or .pptx" in old.value.user_message
    broken = office_files.word(["One"], {}).replace(b"word/document.xml", b"word/documenX.xml", 1)
    with pytest.raises(DocumentRejected) as unreadable:
        read(broken, "broken.docx")
    assert "broken.docx" in unreadable.value.user_message


async def test_documents_are_read_in_a_worker_within_its_limits() -> None:
    pool = MediaPool(limits(media_workers=2, media_memory_limit_mb=600, media_time_limit_s=20.0))
    try:
        document = await pool.read_document(office_files.deck(3, {}), name="deck.pptx", images=limits())
        assert [str(p.label) for p in document.parts] == ["slide 1", "slide 2", "slide 3"]
        with pytest.raises(EncryptedDocument):
            await pool.read_document(office_files.encrypted_office(), name="x.docx", images=limits())
    finally:
        await pool.close()


def test_pictures_on_a_sheet_come_with_its_first_block() -> None:
    import io

    import openpyxl
    from openpyxl.drawing.image import Image as SheetImage

    book = openpyxl.Workbook()
    book.active.title = "Summary"
    book.active.append(["total", 3])
    chart = book.create_sheet("Chart")
    chart.append(["see the picture"])
    chart.add_image(SheetImage(io.BytesIO(office_files.png((1, 2, 3)))), "B2")
    out = io.BytesIO()
    book.save(out)
    document = read(out.getvalue(), "report.xlsx")
    assert [(str(p.label), len(p.pictures)) for p in document.parts] == [
        ("sheet Summary, row 1", 0),
        ("sheet Chart, row 1", 1),
    ]
