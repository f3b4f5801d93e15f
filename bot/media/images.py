"""Turn downloaded bytes into RGB images the model can read, or a typed error with a sentence.

Images are decoded with Pillow, PDFs are drawn with pypdfium2 (``bot.media.pdf``). Everything
here is CPU work that the core runs in a thread (``asyncio.to_thread``); it is thread-safe and
bounded: file size, header pixel count (checked before any pixel is decoded), tile count, PDF pages
and a PDF time budget. This module imports no torch, so ``bot/`` may import it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, ImageOps

from bot.errors import EmptyFile, FileTooLarge, ImageRejected, ImageTooLarge, UnsupportedFile, UserFacingError
from bot.settings import ImageSettings

logger = logging.getLogger(__name__)

Kind = Literal["image", "pdf"]

SUPPORTED_SENTENCE = "I can read PNG, JPEG, WebP, GIF, BMP and TIFF images and PDF documents."

# Pillow format names we decode; every one of them has a magic-byte signature.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

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
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old-style Office document"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"{\\rtf", "an RTF document"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"8BPS", "a Photoshop file"),
)
_ZIP_DOCUMENTS = {
    ".docx": "a Word document",
    ".xlsx": "an Excel workbook",
    ".pptx": "a PowerPoint presentation",
    ".odt": "an OpenDocument text",
    ".ods": "an OpenDocument spreadsheet",
    ".odp": "an OpenDocument presentation",
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

_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_TILE_OVERLAP = 0.05
"""Neighbouring tiles share this fraction of a tile's length, so a line of text cut by one is whole in the other."""

_pillow_guard_lock = threading.Lock()


@dataclass(frozen=True)
class PreparedImage:
    """One picture for the model: RGB, already within the pixel budget."""

    image: Image.Image
    label: str
    """How the answer may refer to it: ``shot.png``, ``report.pdf p.3``, ``tall.png tile 2/3``."""
    page: int | None = None
    """1-based PDF page, None for images."""
    sha256: str = ""
    """Hash of the source bytes, extended with page and tile when there are several pictures."""
    text: str = ""
    """The PDF text layer of that page (on the page's first tile only); "" for images."""


@dataclass(frozen=True)
class Attachment:
    """A decoded file: its pictures plus notes for the person who sent it."""

    name: str
    kind: Kind
    images: list[PreparedImage]
    notes: list[str]
    """Sentences worth telling the user: pages read of the total, tiles made, downscaled from W×H."""
    page_count: int | None = None
    page_texts: list[str] = field(default_factory=list)
    """PDF text layer of pages 1..len(page_texts), possibly more pages than were drawn."""


# ---------------------------------------------------------------------------------------------- type detection


def _image_format(data: bytes) -> str | None:
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


def _is_pdf(data: bytes) -> bool:
    # The PDF header may follow some junk; readers accept it within the first kilobyte.
    return b"%PDF-" in data[:1024]


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _other_file_description(data: bytes, name: str) -> str | None:
    """What a recognisably unsupported file is, e.g. "a Word document"."""
    for magic, description in _OTHER_MAGIC:
        if data.startswith(magic):
            if description == "a ZIP archive":
                return _ZIP_DOCUMENTS.get(_extension(name), description)
            return description
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "an AVIF image" if brand == b"avif" else "an HEIC photo"
        return "a video"
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return "an SVG drawing"
    return None


def sniff_kind(data: bytes, name: str = "", mime_type: str = "") -> Kind | None:
    """``image``, ``pdf`` or None (unsupported). Content decides first; name and MIME type only break a tie.

    A file whose bytes match no known signature but whose name or MIME type says image/PDF is still
    returned as that kind, so the decoder can say it is damaged rather than unsupported.
    """
    if _image_format(data):
        return "image"
    if _is_pdf(data):
        return "pdf"
    if _other_file_description(data, name):
        return None
    mime = mime_type.split(";", 1)[0].strip().lower()
    extension = _extension(name)
    if extension == ".pdf" or mime == "application/pdf":
        return "pdf"
    if extension in _IMAGE_EXTENSIONS or mime in _IMAGE_MIME_TYPES:
        return "image"
    return None


# ---------------------------------------------------------------------------------------------- geometry


def fit_to_budget(width: int, height: int, *, max_pixels: int, min_pixels: int, factor: int) -> tuple[int, int]:
    """The (width, height) closest in shape to the input with both sides multiples of ``factor``
    and ``min_pixels <= area <= max_pixels``.

    The area is kept when it is already within the budget, scaled down when above and up when below.
    Each side is at least ``factor``. When ``min_pixels`` cannot be met without leaving the budget
    (extreme aspect ratios), staying within ``max_pixels`` wins.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if max_pixels < factor * factor:
        raise ValueError(f"max_pixels={max_pixels} is smaller than one {factor}x{factor} patch")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels={min_pixels} exceeds max_pixels={max_pixels}")

    area = width * height
    target_area = min(max(area, min_pixels), max_pixels)
    scale = math.sqrt(target_area / area)
    ideal_w, ideal_h = width * scale / factor, height * scale / factor  # in units of factor
    max_units = max_pixels // (factor * factor)
    aspect = width / height

    candidates: set[tuple[int, int]] = set()
    for units_w in {math.floor(ideal_w), math.ceil(ideal_w)}:
        units_w = min(max(units_w, 1), max_units)
        limit_h = max_units // units_w
        for units_h in {math.floor(ideal_h), math.ceil(ideal_h)}:
            candidates.add((units_w, min(max(units_h, 1), limit_h)))
    for units_h in {math.floor(ideal_h), math.ceil(ideal_h)}:
        units_h = min(max(units_h, 1), max_units)
        limit_w = max_units // units_h
        for units_w in {math.floor(ideal_w), math.ceil(ideal_w)}:
            candidates.add((min(max(units_w, 1), limit_w), units_h))

    def badness(units: tuple[int, int]) -> tuple[bool, float, int]:
        w, h = units[0] * factor, units[1] * factor
        return (w * h < min_pixels, abs(math.log((w / h) / aspect)), abs(w * h - target_area))

    best_w, best_h = min(candidates, key=badness)
    return best_w * factor, best_h * factor


def tiles_for_aspect(width: float, height: float, max_aspect_ratio: float) -> int:
    """How many overlapping tiles along the long side keep each tile within ``max_aspect_ratio``."""
    long_side, short_side = max(width, height), min(width, height)
    max_length = max(1, math.floor(short_side * max_aspect_ratio))
    if long_side <= max_length:
        return 1
    overlap = math.floor(max_length * _TILE_OVERLAP)
    return math.ceil((long_side - overlap) / (max_length - overlap))


def _tile_boxes(width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` equal boxes (left, top, right, bottom) covering the image along its long side, overlapping."""
    if count <= 1:
        return [(0, 0, width, height)]
    long_side = max(width, height)
    # Each tile is a little longer than long/count so that neighbours overlap.
    length = min(long_side, math.ceil(long_side / (count - (count - 1) * _TILE_OVERLAP)))
    starts = [round(i * (long_side - length) / (count - 1)) for i in range(count)]
    if height >= width:
        return [(0, s, width, s + length) for s in starts]
    return [(s, 0, s + length, height) for s in starts]


# ---------------------------------------------------------------------------------------------- normalisation


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit RGB, scaled rather than clipped."""
    if img.mode.startswith("I;16"):
        # 16-bit samples: the full 0..65535 range maps to 0..255, however dark the picture is.
        return img.convert("I").point(lambda value: value * (1 / 257)).convert("L").convert("RGB")
    low, high = img.getextrema()
    if img.mode == "F" and low >= 0 and high <= 1.0:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif low >= 0 and high <= 65535:
        scale, offset = 1 / 257, 0.0
    else:
        scale = 255.0 / (high - low) if high > low else 1.0
        offset = -low * scale
    return img.point(lambda value: value * scale + offset).convert("L").convert("RGB")


def normalize_image(img: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, any mode to RGB (transparency composited on white).

    Loads the pixels. May return ``img`` itself when nothing needs to change.
    """
    if img.tell() != 0:
        img.seek(0)
    img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # a broken EXIF block must not reject an otherwise good image
        logger.info("ignoring unreadable EXIF orientation: %s", exc)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    if img.has_transparency_data:
        return _composite_on_white(img)
    return img.convert("RGB")


# ---------------------------------------------------------------------------------------------- wording


def clean_name(name: str) -> str:
    """A file name safe to show and to put in a prompt: no path, no control characters, bounded length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]+", " ", name).strip()
    return name if len(name) <= 80 else name[:60] + "…" + name[-19:]


def _named(name: str) -> str:
    return f" ({name})" if name else ""


def subject(name: str, what: str, *, capital: bool = False) -> str:
    """How a note refers to the file: its name, else "the image" / "The PDF"."""
    if name:
        return name
    return f"The {what}" if capital else f"the {what}"


def _megapixels(pixels: int) -> str:
    amount = f"{pixels / 1_000_000:.3g}"
    return f"{amount} megapixel" if amount == "1" else f"{amount} megapixels"


def _size_text(num_bytes: int) -> str:
    if num_bytes >= 1024 * 1024:
        return f"{num_bytes / (1024 * 1024):.3g} MB"
    return f"{num_bytes / 1024:.3g} KB"


def damaged_image(name: str) -> ImageRejected:
    return ImageRejected(f"I couldn't read this image{_named(name)}: the file is damaged or not an image.")


def _too_many_pixels(name: str, size: tuple[int, int] | None, limit: int) -> ImageTooLarge:
    if size is None:
        return ImageTooLarge(
            f"This image{_named(name)} is too large to open safely; the limit is {_megapixels(limit)}."
        )
    return ImageTooLarge(
        f"This image{_named(name)} is {size[0]}×{size[1]} pixels; the limit is {_megapixels(limit)}.",
        detail=f"decode guard: {size[0]}x{size[1]} > {limit} pixels",
    )


# ---------------------------------------------------------------------------------------------- image decoding


def _allow_pillow_up_to(limit: int) -> None:
    """Keep Pillow's process-wide bomb guard at or above our per-call limit (raise it, never lower it).

    Our own check of the header size is the real limit; Pillow's then only stops what is far beyond
    any limit (and does not warn about images we accept).
    """
    with _pillow_guard_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < limit:
            Image.MAX_IMAGE_PIXELS = limit


def _header_size(data: bytes, formats: tuple[str, ...]) -> tuple[int, int] | None:
    """The size the header claims, read by the format's parser alone (no pixel is decoded)."""
    Image.init()
    for fmt in formats:
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        factory, accept = entry
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with factory(io.BytesIO(data), "") as probe:
                return probe.size
        except Exception:
            continue
    return None


def _stored_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        return 1


@dataclass(frozen=True)
class PixelBudget:
    """The model's pixel budget per picture; ``factor`` > 1 also aligns both sides to its multiple."""

    max_pixels: int
    min_pixels: int
    factor: int


def _resize_to_budget(img: Image.Image, budget: PixelBudget) -> Image.Image:
    size = fit_to_budget(
        img.width, img.height, max_pixels=budget.max_pixels, min_pixels=budget.min_pixels, factor=budget.factor
    )
    if size == img.size:
        return img
    if size[0] * size[1] < img.width * img.height:
        return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img.resize(size, Image.Resampling.BICUBIC)


def _sub_hash(source_sha: str, page: int | None, tile: int | None) -> str:
    if page is None and tile is None:
        return source_sha
    return hashlib.sha256(f"{source_sha}:p{page or 0}:t{tile or 0}".encode()).hexdigest()


def tiles_within_budget(
    img: Image.Image,
    *,
    label: str,
    source_sha: str,
    page: int | None,
    text: str,
    tiles: int,
    budget: PixelBudget,
) -> list[PreparedImage]:
    """Cut an RGB image into ``tiles`` overlapping tiles and fit each to the pixel budget."""
    boxes = _tile_boxes(img.width, img.height, tiles)
    prepared = []
    for index, box in enumerate(boxes, start=1):
        tile = img if len(boxes) == 1 else img.crop(box)
        tile_label = label if len(boxes) == 1 else f"{label} tile {index}/{len(boxes)}"
        prepared.append(
            PreparedImage(
                image=_resize_to_budget(tile, budget),
                label=tile_label,
                page=page,
                sha256=_sub_hash(source_sha, page, index if len(boxes) > 1 else None),
                text=text if index == 1 else "",
            )
        )
    return prepared


def choose_tiles(width: float, height: float, *, settings: ImageSettings, pixels: float, max_pixels: int) -> int | None:
    """How many tiles to cut a picture of this shape into; None when even ``max_tiles`` cannot hold it.

    Only shapes beyond ``max_aspect_ratio`` are tiled. Then as many tiles as keep each within the
    pixel budget (``pixels`` is the picture's area as it will be decoded), up to ``max_tiles``.
    """
    needed = tiles_for_aspect(width, height, settings.max_aspect_ratio)
    if needed > max(1, settings.max_tiles):
        return None
    if needed == 1:
        return 1
    return min(settings.max_tiles, max(needed, math.ceil(pixels / max_pixels)))


def _too_long(name: str, width: int, height: int, settings: ImageSettings) -> ImageRejected:
    pieces = f" even in {settings.max_tiles} pieces" if settings.max_tiles > 1 else ""
    return ImageRejected(
        f"This image{_named(name)} is {width}×{height} pixels, too long and thin to read{pieces}. "
        "Please crop it or send it in parts.",
        detail=f"aspect {max(width, height) / min(width, height):.0f}:1 exceeds {settings.max_tiles} tiles",
    )


def _check_limits(name: str, width: int, height: int, settings: ImageSettings) -> None:
    if width * height > settings.max_decode_pixels:
        raise _too_many_pixels(name, (width, height), settings.max_decode_pixels)
    if min(width, height) < settings.min_image_side:
        raise ImageRejected(
            f"This image{_named(name)} is only {width}×{height} pixels; "
            f"I need at least {settings.min_image_side} pixels on each side."
        )


def _decode(
    opened: Image.Image, *, name: str, settings: ImageSettings, budget: PixelBudget
) -> tuple[Image.Image, tuple[int, int], int, list[str]]:
    """Check the opened (not yet decoded) image against the limits, then decode its first frame to RGB.

    Returns the RGB image (possibly already shrunk by the JPEG decoder), the full upright size,
    the tile count and notes.
    """
    notes: list[str] = []
    width, height = opened.size
    _check_limits(name, width, height, settings)
    if _stored_orientation(opened) in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    tiles = choose_tiles(width, height, settings=settings, pixels=width * height, max_pixels=budget.max_pixels)
    if tiles is None:
        raise _too_long(name, width, height, settings)

    if getattr(opened, "is_animated", False):
        the_image = subject(name, "image", capital=True)
        if opened.format == "TIFF":
            notes.append(f"{the_image} has {opened.n_frames} pages; I looked at the first.")
        elif opened.format != "MPO":  # a camera's multi-picture JPEG: the first picture is the photo
            notes.append(f"{the_image} is animated; I looked at its first frame.")

    if tiles == 1 and opened.format == "JPEG":
        # Let the JPEG decoder shrink by 1/2, 1/4 or 1/8 while decoding: much faster for big photos.
        target = fit_to_budget(
            opened.width, opened.height, max_pixels=budget.max_pixels, min_pixels=budget.min_pixels, factor=1
        )
        if opened.width >= 2 * target[0] and opened.height >= 2 * target[1]:
            opened.draft(None, target)

    rgb = normalize_image(opened)
    if rgb is opened:
        rgb = rgb.copy()  # the opened file's pixels go away when it is closed
    return rgb, (width, height), tiles, notes


def _load_image(
    data: bytes, *, name: str, formats: tuple[str, ...], settings: ImageSettings, budget: PixelBudget, source_sha: str
) -> Attachment:
    limit = settings.max_decode_pixels
    # Our limit, checked per call from the header alone, before Pillow's process-wide guard is involved.
    claimed = _header_size(data, formats)
    if claimed is not None:
        _check_limits(name, claimed[0], claimed[1], settings)
    _allow_pillow_up_to(limit)
    try:
        opened = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(name, claimed, limit) from exc
    except Exception as exc:  # any parser failure on untrusted bytes is a damaged file, never a crash
        logger.info("image open failed: %s: %s", type(exc).__name__, exc)
        raise damaged_image(name) from exc

    with opened:
        fmt = opened.format
        try:
            rgb, (width, height), tiles, notes = _decode(opened, name=name, settings=settings, budget=budget)
        except UserFacingError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(name, claimed, limit) from exc
        except Exception as exc:
            logger.info("image decode failed format=%s: %s: %s", fmt, type(exc).__name__, exc)
            raise damaged_image(name) from exc

    prepared = tiles_within_budget(
        rgb, label=name or "image", source_sha=source_sha, page=None, text="", tiles=tiles, budget=budget
    )
    if tiles > 1:
        shape = "tall" if height > width else "wide"
        notes.append(
            f"{subject(name, 'image', capital=True)} is very {shape} ({width}×{height} pixels), "
            f"so I read it in {tiles} tiles."
        )
    elif width * height > budget.max_pixels:
        final = prepared[0].image.size
        notes.append(f"I scaled {subject(name, 'image')} down from {width}×{height} to {final[0]}×{final[1]} pixels.")
    return Attachment(name=name, kind="image", images=prepared, notes=notes)


# ---------------------------------------------------------------------------------------------- entry point


def load_attachment(
    data: bytes,
    *,
    name: str = "",
    mime_type: str = "",
    images: ImageSettings,
    max_pixels: int,
    min_pixels: int,
    factor: int = 1,
) -> Attachment:
    """Decode one downloaded file into pictures within the pixel budget.

    ``factor`` > 1 also aligns both sides to that multiple (the model's patch size × merge size);
    with the default the engine aligns them itself. Raises a ``bot.errors.InputError`` subclass
    whose ``user_message`` is fit to show the sender. Thread-safe; CPU-bound.
    """
    name = clean_name(name)
    if not data:
        raise EmptyFile(f"This file{_named(name)} is empty.")
    if len(data) > images.max_file_bytes:
        raise FileTooLarge(
            f"This file{_named(name)} is {_size_text(len(data))}; the limit is {_size_text(images.max_file_bytes)}."
        )
    kind = sniff_kind(data, name, mime_type)
    if kind is None:
        description = _other_file_description(data, name)
        if description:
            what = f"This file{_named(name)} looks like {description}, which I can't read."
        else:
            what = f"I can't read this kind of file{_named(name)}."
        raise UnsupportedFile(
            f"{what} {SUPPORTED_SENTENCE}", detail=f"unsupported file name={name!r} mime={mime_type!r}"
        )

    min_pixels = min(min_pixels, max_pixels)
    budget = PixelBudget(max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
    source_sha = hashlib.sha256(data).hexdigest()

    if kind == "pdf":
        from bot.media.pdf import load_pdf

        return load_pdf(data, name=name, settings=images, budget=budget, source_sha=source_sha)

    fmt = _image_format(data)
    formats = (fmt,) if fmt else IMAGE_FORMATS
    return _load_image(data, name=name, formats=formats, settings=images, budget=budget, source_sha=source_sha)
