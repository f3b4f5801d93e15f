"""Opening one downloaded file: the checks every file gets, then the image reader or the PDF reader.

The entry point of ``bot.media``: it dispatches to ``bot.media.images`` (Pillow) or ``bot.media.pdf``
(pypdfium2), which share only ``bot.media.pictures`` and ``bot.media.wording``. CPU-bound and memory-hungry on
hostile input, so the bot calls it in a worker process (``bot.media.pool``), never in its own.
"""

from __future__ import annotations

import hashlib

from bot.errors import EmptyFile, FileTooLarge, UnsupportedFile
from bot.media.images import load_image
from bot.media.pdf import load_pdf
from bot.media.pictures import Attachment, PixelBudget
from bot.media.sniff import IMAGE_FORMATS, SUPPORTED_SENTENCE, image_format, other_file_description, sniff_kind
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
    if not data:
        raise EmptyFile(f"This file{named(name)} is empty.")
    if len(data) > images.max_file_bytes:
        raise FileTooLarge(
            f"This file{named(name)} is {size_text(len(data))}; the limit is {size_text(images.max_file_bytes)}."
        )
    kind = sniff_kind(data, name, mime_type)
    if kind is None:
        description = other_file_description(data, name)
        if description:
            what = f"This file{named(name)} looks like {description}, which I can't read."
        else:
            what = f"I can't read this kind of file{named(name)}."
        raise UnsupportedFile(
            f"{what} {SUPPORTED_SENTENCE}", detail=f"unsupported file name={name!r} mime={mime_type!r}"
        )

    min_pixels = min(min_pixels, max_pixels)
    budget = PixelBudget(max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
    source_sha = hashlib.sha256(data).hexdigest()
    if kind == "pdf":
        return load_pdf(data, name=name, settings=images, budget=budget, source_sha=source_sha, deadline=deadline)
    fmt = image_format(data)
    formats = (fmt,) if fmt else IMAGE_FORMATS
    return load_image(data, name=name, formats=formats, settings=images, budget=budget, source_sha=source_sha)
