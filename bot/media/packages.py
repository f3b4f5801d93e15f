"""Office files before any library opens them: the ZIP's size and entry count, encryption, and macros.

A ``.docx``/``.xlsx``/``.pptx`` is a ZIP of XML parts. Before python-docx, openpyxl or python-pptx see one, its
central directory is checked: the number of entries (read from the end record, before the directory itself is
parsed) and the sum of the sizes its entries declare once decompressed. Those declared sizes bound what the libraries
can inflate, because Python's ``zipfile`` (which all three use) never returns more bytes than an entry declares and
fails its CRC check otherwise. A password-protected Office file is not a ZIP at all but an OLE compound file holding
an ``EncryptedPackage`` stream: it is refused with a reason. Macro-enabled files (``.docm``, ``.xlsm``, ``.pptm``)
are read as data: the VBA project is blanked before a library opens the package, and its content type is made the
ordinary one (python-docx refuses a macro-enabled main part otherwise).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import zipfile

from bot.errors import DocumentRejected, EncryptedDocument
from bot.i18n import Said
from bot.media.wording import named, size_text
from bot.settings import ImageSettings

logger = logging.getLogger(__name__)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
"""Directory entries of a compound file are named in UTF-16; the name alone tells an encrypted OOXML package."""
_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_MACRO_CONTENT_TYPES = {
    b"application/vnd.ms-word.document.macroEnabled.main+xml": (
        b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    ),
    b"application/vnd.ms-word.template.macroEnabledTemplate.main+xml": (
        b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    ),
}
_VBA_PART = re.compile(r"(^|/)vba[A-Za-z]*\.bin$|(^|/)vbaData\.xml$")


def is_encrypted_office(data: bytes) -> bool:
    """A compound (OLE) file holding an encrypted OOXML package: a password-protected .docx/.xlsx/.pptx."""
    return data.startswith(OLE_MAGIC) and _ENCRYPTED_STREAM in data


def refuse_encrypted(what: Said, name: str) -> EncryptedDocument:
    return EncryptedDocument(
        key="media.office_encrypted", detail="ole compound file with an EncryptedPackage stream", what=what,
        named=named(name),
    )


def declared_entries(data: bytes) -> int | None:
    """The entry count of the ZIP's end record (the largest of its two fields), None when it has none."""
    tail = data[-(_END_RECORD_SIZE + _MAX_COMMENT) :]
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < _END_RECORD_SIZE:
        return None
    on_disk, total = struct.unpack("<HH", tail[at + 8 : at + 12])
    return max(on_disk, total)


def checked_package(data: bytes, *, name: str, what: Said, settings: ImageSettings) -> zipfile.ZipFile:
    """The file as a ZIP whose entry count and decompressed size are within limits; raises a sentence otherwise."""
    damaged = DocumentRejected(
        key="media.office_damaged", detail=f"{what}: not a readable zip", what=what, named=named(name)
    )
    max_entries = max(1, settings.doc_max_zip_entries)
    too_many = DocumentRejected(
        key="media.office_pieces", detail=f"{what}: zip entries over {max_entries}", what=what, named=named(name),
        limit=max_entries,
    )
    entries = declared_entries(data)
    if entries is None:
        raise damaged
    if entries > max_entries:  # 0xFFFF (a ZIP64 archive) passes to the directory count below
        raise too_many
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError) as exc:
        raise damaged from exc
    infos = package.infolist()
    if len(infos) > max_entries:
        raise too_many
    unpacked = sum(max(0, info.file_size) for info in infos)
    limit = max(1, settings.doc_max_unpacked_mb) * 1024 * 1024
    if unpacked > limit:
        raise DocumentRejected(
            key="media.office_unpacks", detail=f"{what}: zip unpacks to {unpacked} bytes", what=what,
            named=named(name), size=size_text(unpacked), limit=size_text(limit),
        )
    if any(info.flag_bits & 0x1 for info in infos):
        raise refuse_encrypted(what, name)
    return package


def without_macros(package: zipfile.ZipFile) -> io.BytesIO | None:
    """A copy of a macro-enabled package with its VBA blanked and ordinary content types; None when it has none."""
    names = package.namelist()
    if not any(_VBA_PART.search(entry) for entry in names):
        return None
    logger.info("office package has a VBA project; it is blanked and never read")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for info in package.infolist():
            if _VBA_PART.search(info.filename):
                copy.writestr(info.filename, b"")
                continue
            content = package.read(info)
            if info.filename == "[Content_Types].xml":
                for macro, plain in _MACRO_CONTENT_TYPES.items():
                    content = content.replace(macro, plain)
            copy.writestr(info.filename, content)
    out.seek(0)
    return out
