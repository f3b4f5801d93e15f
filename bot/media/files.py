"""Opening one downloaded file: the checks every file gets, then the image, PDF, Office or text reader.

The entry point of ``bot.media``: ``load_attachment`` dispatches to ``bot.media.images`` (Pillow) or
``bot.media.pdf`` (pypdfium2), which share only ``bot.media.pictures`` and ``bot.media.wording``;
``read_document`` to ``bot.media.office`` (python-docx, openpyxl, python-pptx) or ``bot.media.text_files``, which
share ``bot.media.parts``. CPU-bound and memory-hungry on hostile input, so the bot calls them in a worker process
(``bot.media.pool``), never in its own.
"""

from __future__ import annotations

import hashlib
import time

from bot.errors import DocumentRejected, EmptyFile, FileTooLarge, UnsupportedFile
from bot.i18n import note
from bot.media.images import load_image
from bot.media.packages import refuse_encrypted
from bot.media.parts import DocumentText
from bot.media.pdf import load_pdf
from bot.media.pictures import Attachment, PixelBudget
from bot.media.sniff import (
    IMAGE_FORMATS,
    OFFICE_LOOKS,
    OLD_OFFICE,
    document_format,
    image_format,
    other_file_description,
    sniff_kind,
)
from bot.media.wording import clean_name, named, size_text
from bot.settings import ImageSettings


def load_attachment(
    data: bytes,
    *,
    name: str = "",
    mime_type: str = "",
    images: ImageSettings,
    max_pixels: int,
    min_pixels: int,
    factor: int = 1,
    deadline: float | None = None,
) -> Attachment:
    """Decode one downloaded file into pictures within the pixel budget.

    ``factor`` > 1 also aligns both sides to that multiple (the model's patch size × merge size);
    with the default the engine aligns them itself. ``deadline`` (a ``time.monotonic()`` value) bounds PDF work
    besides ``pdf_time_budget_s``. Raises a ``bot.errors.InputError`` subclass whose ``user_message`` is fit to
    show the sender; ``MemoryError`` when the file needs more memory than the process may take.
    """
    name = clean_name(name)
    kind = _checked_kind(data, name, mime_type, images)
    if kind == "document":
        raise UnsupportedFile(  # read with ``read_document``: as text, not as pictures
            key="media.document_as_text", detail="document passed to load_attachment", named=named(name)
        )

    min_pixels = min(min_pixels, max_pixels)
    budget = PixelBudget(max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
    source_sha = hashlib.sha256(data).hexdigest()
    if kind == "pdf":
        return load_pdf(data, name=name, settings=images, budget=budget, source_sha=source_sha, deadline=deadline)
    fmt = image_format(data)
    formats = (fmt,) if fmt else IMAGE_FORMATS
    return load_image(data, name=name, formats=formats, settings=images, budget=budget, source_sha=source_sha)


def _checked_kind(data: bytes, name: str, mime_type: str, images: ImageSettings) -> str:
    """The file's kind once it passed the checks every file gets (empty, size, supported)."""
    if not data:
        raise EmptyFile(key="media.file_empty", named=named(name))
    if len(data) > images.max_file_bytes:
        raise FileTooLarge(
            key="media.file_too_large",
            named=named(name),
            size=size_text(len(data)),
            limit=size_text(images.max_file_bytes),
        )
    kind = sniff_kind(data, name, mime_type)
    if kind is not None:
        return kind
    description = other_file_description(data, name)
    supported = note("media.supported")
    if description in OFFICE_LOOKS.values():
        raise DocumentRejected(
            key="media.damaged_as", detail=f"damaged office file name={name!r}", named=named(name),
            description=description, supported=supported,
        )
    if description == OLD_OFFICE:
        raise UnsupportedFile(key="media.old_office", detail="old office format", named=named(name))
    detail = f"unsupported file name={name!r} mime={mime_type!r}"
    if description:
        raise UnsupportedFile(
            key="media.looks_like", detail=detail, named=named(name), description=description, supported=supported
        )
    raise UnsupportedFile(key="media.unknown_kind", detail=detail, named=named(name), supported=supported)


_ENCRYPTED_WHAT = {".docx": "kind.word", ".docm": "kind.word", ".xlsx": "kind.excel", ".xlsm": "kind.excel",
                   ".pptx": "kind.powerpoint", ".pptm": "kind.powerpoint"}


def read_document(
    data: bytes, *, name: str = "", mime_type: str = "", images: ImageSettings, deadline: float | None = None
) -> DocumentText:
    """Read an Office or text file into searchable parts (text plus embedded pictures as stored).

    ``deadline`` (a ``time.monotonic()`` value) bounds the reading besides ``pdf_time_budget_s``; parts past it are
    left out with a note. Raises a ``bot.errors.InputError`` subclass whose ``user_message`` is fit to show.
    """
    from bot.media.office import read_office
    from bot.media.text_files import read_text_file

    name = clean_name(name)
    kind = _checked_kind(data, name, mime_type, images)
    fmt = document_format(data, name, mime_type) if kind == "document" else None
    if fmt is None:
        raise UnsupportedFile(key="media.not_a_document", detail=f"kind {kind}", named=named(name))
    if fmt == "encrypted":
        dot = name.rfind(".")
        raise refuse_encrypted(note(_ENCRYPTED_WHAT.get(name[dot:].lower() if dot > 0 else "", "kind.office")), name)
    own = time.monotonic() + images.pdf_time_budget_s
    stop = own if deadline is None else min(own, deadline)
    if fmt in ("docx", "xlsx", "pptx"):
        return read_office(data, fmt, name=name, settings=images, deadline=stop)
    return read_text_file(data, fmt, name=name, settings=images, deadline=stop)
