"""What kind of file a download is, from its first bytes (its name and MIME type only break a tie).

Pure byte comparisons: cheap and safe on any input, so the bot may call it before a worker opens the file.
"""

from __future__ import annotations

from typing import Literal

from bot.i18n import Note, note
from bot.media.packages import OLE_MAGIC, is_encrypted_office
from bot.media.pictures import Kind

DocumentFormat = Literal["docx", "xlsx", "pptx", "encrypted", "csv", "html", "markdown", "text"]
_OOXML_PARTS: tuple[tuple[bytes, DocumentFormat], ...] = (
    (b"word/document.xml", "docx"),
    (b"xl/workbook.xml", "xlsx"),
    (b"ppt/presentation.xml", "pptx"),
)
_TEXT_FORMATS: dict[str, DocumentFormat] = {
    ".csv": "csv", ".tsv": "csv", ".html": "html", ".htm": "html", ".xhtml": "html", ".md": "markdown",
    ".markdown": "markdown",
}
_TEXT_MIME_TYPES: dict[str, DocumentFormat] = {
    "text/csv": "csv", "text/tab-separated-values": "csv", "application/csv": "csv", "text/html": "html",
    "application/xhtml+xml": "html", "text/markdown": "markdown", "text/x-markdown": "markdown",
}
_TEXT_EXTENSION_LIST = """
    .txt .text .log .out .err .json .jsonl .ndjson .yaml .yml .toml .ini .cfg .conf .env .properties .xml .rst
    .py .pyi .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .scala .go .rs .c .h .cc .cpp .cxx .hpp .cs .m .mm .swift .rb
    .php .pl .lua .r .sh .bash .zsh .ps1 .bat .sql .graphql .proto .css .scss .less .vue .svelte .dart .ex .exs .erl
    .hs .clj .gradle .tf .hcl .diff .patch .dockerfile .makefile .cmake .tex .srt .vtt"""
_TEXT_EXTENSIONS = frozenset(_TEXT_EXTENSION_LIST.split())
_TEXT_SAMPLE = 64 * 1024
_CONTROL = frozenset(range(0, 32)) - {9, 10, 12, 13, 27}

IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow format names we decode; every one of them has a magic-byte signature."""

_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# Signatures of common files we do not read, so that the reply can say what the file is.
ZIP_ARCHIVE = note("looks.zip")
OLD_OFFICE = note("looks.old_office")
_OTHER_MAGIC: tuple[tuple[bytes, Note], ...] = (
    (b"PK\x03\x04", ZIP_ARCHIVE),
    (b"PK\x05\x06", ZIP_ARCHIVE),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLD_OFFICE),
    (b"Rar!\x1a\x07", note("looks.rar")),
    (b"7z\xbc\xaf\x27\x1c", note("looks.7z")),
    (b"\x1f\x8b", note("looks.gzip")),
    (b"{\\rtf", note("looks.rtf")),
    (b"\x00\x00\x01\x00", note("looks.icon")),
    (b"8BPS", note("looks.photoshop")),
)
OFFICE_LOOKS = {".docx": note("looks.word"), ".xlsx": note("looks.excel"), ".pptx": note("looks.powerpoint")}
"""What a damaged Office file with that extension looks like."""
_ZIP_DOCUMENTS = {
    **OFFICE_LOOKS,
    ".odt": note("looks.odt"),
    ".ods": note("looks.ods"),
    ".odp": note("looks.odp"),
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif"}

_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
_IMAGE_MIME_TYPES = {
    "image/png",
    "image/jpeg",
    "image/pjpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/x-bmp",
    "image/x-ms-bmp",
    "image/tiff",
}


def image_format(data: bytes) -> str | None:
    """The Pillow format named by the leading magic bytes, if it is one we decode."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _IMAGE_MAGIC:
        if data.startswith(magic):
            return fmt
    # "BM" alone is too weak (text files start with it); also require a known DIB header size.
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    return None


def is_pdf(data: bytes) -> bool:
    # The PDF header may follow some junk; readers accept it within the first kilobyte.
    return b"%PDF-" in data[:1024]


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def other_file_description(data: bytes, name: str) -> Note | None:
    """What a recognisably unsupported file is, e.g. "a Word document" (a ``looks.*`` Note)."""
    for magic, description in _OTHER_MAGIC:
        if data.startswith(magic):
            if description == ZIP_ARCHIVE:
                return _ZIP_DOCUMENTS.get(_extension(name), description)
            return description
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return note("looks.avif" if brand == b"avif" else "looks.heic")
        return note("looks.video")
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return note("looks.svg")
    return None


_PLAIN_TEXT_FORMATS = frozenset({"csv", "html", "markdown", "text"})
"""Formats recognised only by the absence of binary bytes: weaker evidence than a name saying image or PDF."""


def _looks_like_text(data: bytes, *, named_text: bool) -> bool:
    """No NUL or other control bytes in the first 64 KiB; UTF-8 unless the name or MIME type says it is text
    (then another encoding is allowed, found when it is read)."""
    sample = data[:_TEXT_SAMPLE]
    if sample.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    if any(byte in _CONTROL for byte in sample):
        return False
    if named_text:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3  # a character cut by the sample's end
    return True


def document_format(data: bytes, name: str = "", mime_type: str = "") -> DocumentFormat | None:
    """Which Office or text format a file is, by content first (an Office file is a ZIP holding its main part);
    None when it is neither. Pure byte comparisons, like ``sniff_kind``."""
    if data.startswith(b"PK\x03\x04"):
        for part, fmt in _OOXML_PARTS:
            if part in data:
                return fmt
        return None
    if data.startswith(OLE_MAGIC):
        return "encrypted" if is_encrypted_office(data) else None
    if image_format(data) or is_pdf(data) or other_file_description(data, name):
        return None
    mime = mime_type.split(";", 1)[0].strip().lower()
    extension = _extension(name)
    named_text = extension in _TEXT_FORMATS or extension in _TEXT_EXTENSIONS or mime.startswith("text/")
    named_text = named_text or mime in _TEXT_MIME_TYPES
    if not data or not _looks_like_text(data, named_text=named_text):
        return None
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return _TEXT_FORMATS.get(extension) or _TEXT_MIME_TYPES.get(mime) or "text"


def sniff_kind(data: bytes, name: str = "", mime_type: str = "") -> Kind | None:
    """``image``, ``pdf``, ``document`` (Office and text files) or None (unsupported). Content decides first; name
    and MIME type only break a tie.

    A file whose bytes match no known signature but whose name or MIME type says image/PDF is still
    returned as that kind, so the decoder can say it is damaged rather than unsupported.
    """
    if image_format(data):
        return "image"
    if is_pdf(data):
        return "pdf"
    mime = mime_type.split(";", 1)[0].strip().lower()
    extension = _extension(name)
    named: Kind | None = None
    if extension == ".pdf" or mime == "application/pdf":
        named = "pdf"
    elif extension in _IMAGE_EXTENSIONS or mime in _IMAGE_MIME_TYPES:
        named = "image"
    found = document_format(data, name, mime_type)
    if found and (named is None or found not in _PLAIN_TEXT_FORMATS):  # a "photo.png" of plain bytes is a damaged
        return "document"  # image, not a text file; an Office file's signature still wins over its name
    if other_file_description(data, name):
        return None
    return named
