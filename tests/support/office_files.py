"""Office and text files for tests, built with the same libraries that read them (no binary fixtures).

Filler text differs from part to part but never uses the words of a planted fact, so a search for the fact finds
only its part.
"""

from __future__ import annotations

import io
import struct
import zipfile

import docx
import openpyxl
from PIL import Image
from pptx import Presentation
from pptx.util import Inches

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
DOCM_TYPE = "application/vnd.ms-word.document.macroEnabled.main+xml"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
XLSM_TYPE = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
FILLER_WORDS = ("routine", "update", "regional", "team", "figures", "track", "weekly", "review", "notes", "steady")


def filler(seed: int, words: int = 90) -> str:
    """Ordinary prose that differs with ``seed`` and contains none of a test's planted words."""
    picked = [FILLER_WORDS[(seed * 7 + i * 3) % len(FILLER_WORDS)] for i in range(words)]
    return f"Item {seed}: " + " ".join(picked) + "."


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def deck(slides: int, facts: dict[int, str], *, pictures: dict[int, bytes] | None = None) -> bytes:
    """A deck of ``slides`` slides (title, filler body, speaker notes); ``facts`` puts a sentence on a slide."""
    presentation = Presentation()
    for number in range(1, slides + 1):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = f"Slide {number} status"
        slide.placeholders[1].text = facts.get(number, filler(number))
        slide.notes_slide.notes_text_frame.text = f"Speaker notes for slide {number}."
        if pictures and number in pictures:
            slide.shapes.add_picture(io.BytesIO(pictures[number]), Inches(5), Inches(5), Inches(1))
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def workbook(sheets: dict[str, int], facts: dict[tuple[str, int], str], columns: int = 4) -> bytes:
    """A workbook with ``sheets`` (name → rows, the first a header row); ``facts`` puts a sentence in a row.

    Written in openpyxl's fast write-only mode, then given each sheet's ``<dimension>`` as Excel writes it (the
    write-only mode leaves it out, and a reader then has to scan the sheet once more to learn its size)."""
    book = openpyxl.Workbook(write_only=True)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        sheet.append(["Item", "Owner", "Amount", "Comment"][:columns])
        for row in range(2, rows + 1):
            comment = facts.get((title, row), f"{FILLER_WORDS[row % len(FILLER_WORDS)]} {row}")
            sheet.append([f"item {row}", f"owner {row % 17}", row * 3, comment][:columns])
    out = io.BytesIO()
    book.save(out)
    sizes = [f"A1:{'ABCD'[columns - 1]}{rows}" for rows in sheets.values()]
    return _with_dimensions(out.getvalue(), sizes)


def _with_dimensions(package: bytes, sizes: list[str]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                number = int(info.filename.removeprefix("xl/worksheets/sheet").removesuffix(".xml"))
                content = content.replace(
                    b"<sheetViews>", f'<dimension ref="{sizes[number - 1]}"/><sheetViews>'.encode(), 1
                )
            copy.writestr(info, content)
    return out.getvalue()


def word(sections: list[str], facts: dict[int, str], *, screenshot: tuple[int, bytes] | None = None) -> bytes:
    """A Word file with one Heading 1 section per title, each with filler paragraphs and a small table;
    ``facts`` (section index → sentence) and ``screenshot`` (section index, PNG) go into a section."""
    document = docx.Document()
    document.add_heading("Service runbook", 0)
    for index, title in enumerate(sections):
        document.add_heading(title, 1)
        for paragraph in range(3):
            document.add_paragraph(filler(index * 10 + paragraph, 60))
        if index in facts:
            document.add_paragraph(facts[index])
        if screenshot and screenshot[0] == index:
            document.add_picture(io.BytesIO(screenshot[1]), width=Inches(2))
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text, table.cell(0, 1).text = "Step", "Owner"
        table.cell(1, 0).text, table.cell(1, 1).text = f"check {index}", "on-call"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def with_macros(package: bytes, main_part: str, content_type: tuple[str, str]) -> bytes:
    """The package with a VBA project (bytes no parser could read) and its main part's content type
    ``content_type[0]`` made the macro-enabled ``content_type[1]``, as Office saves a .docm or .xlsm."""
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    folder = main_part.rsplit("/", 1)[0]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "[Content_Types].xml":
                content = content.replace(
                    b"</Types>",
                    b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>',
                )
                content = content.replace(content_type[0].encode(), content_type[1].encode())
            if info.filename == f"{folder}/_rels/{main_part.rsplit('/', 1)[1]}.rels":
                content = content.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rIdVba" Type="http://schemas.microsoft.com/office/2006/relationships/'
                    b'vbaProject" Target="vbaProject.bin"/></Relationships>',
                )
            copy.writestr(info, content)
        copy.writestr(f"{folder}/vbaProject.bin", b"\xd0\xcf\x11\xe0 not a VBA project \x00\xff" * 64)
    return out.getvalue()


def zip_bomb(unpacked_mb: int) -> bytes:
    """A .docx-shaped ZIP with one entry of ``unpacked_mb`` MB of zeros (it compresses about a thousandfold)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("word/document.xml", b"<w:document/>")
        with archive.open("word/media/image1.png", "w", force_zip64=True) as entry:
            chunk = bytes(1024 * 1024)
            for _ in range(unpacked_mb):
                entry.write(chunk)
    return out.getvalue()


def many_entries(count: int) -> bytes:
    """A .xlsx-shaped ZIP of ``count`` tiny entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/workbook.xml", b"<workbook/>")
        for index in range(count):
            archive.writestr(f"xl/x/{index}.xml", b"")
    return out.getvalue()


def dense_sheet(rows: int, columns: int) -> bytes:
    """A workbook whose one sheet has ``rows`` × ``columns`` numeric cells, its XML written directly (fast)."""
    book = openpyxl.Workbook()
    book.active.title = "Data"
    book.active["A1"] = 0
    small = io.BytesIO()
    book.save(small)
    row_xml = "".join("<c><v>1</v></c>" for _ in range(columns))
    sheet = (
        '<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
        '2006/main"><dimension ref="A1:XFD1048576"/><sheetData>'
        + "".join(f'<row r="{n}">{row_xml}</row>' for n in range(1, rows + 1))
        + "</sheetData></worksheet>"
    ).encode()
    source = zipfile.ZipFile(small)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            copy.writestr(info, sheet if info.filename == "xl/worksheets/sheet1.xml" else source.read(info))
    return out.getvalue()


def encrypted_office() -> bytes:
    """The start of a password-protected Office file: an OLE compound file whose directory names an
    ``EncryptedPackage`` stream (only the header and one directory sector; enough to be recognised)."""
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    header[24:34] = struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
    entry = bytearray(128)
    name = "EncryptedPackage".encode("utf-16-le") + b"\x00\x00"
    entry[: len(name)] = name
    entry[64:66] = struct.pack("<H", len(name))
    entry[66] = 2  # a stream
    return bytes(header) + bytes(entry) * 4
