"""Images to RGB pictures within the pixel budget, with Pillow, in bounded memory.

Limits are checked before any pixel is decoded: the header's pixel count (``max_decode_pixels``) and the
memory the decoder will take (``max_decode_bytes``: pixels × bytes per pixel as Pillow stores them, times the
copies the format's decoder makes). Big images are decoded reduced where the format allows it (JPEG ``draft``),
then shrunk by whole factors strip by strip before any mode conversion, so no full-size copy is made; transparency
is composited and 16-bit or float samples are mapped to 8 bits only on the shrunk picture. Only the first frame is
read and frames are never counted (a TIFF may chain thousands of pages). This module imports no torch.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from bot.errors import ImageRejected, ImageTooLarge, UserFacingError
from bot.i18n import Note, Said, note
from bot.media.pictures import (
    Attachment,
    PixelBudget,
    PreparedImage,
    choose_tiles,
    fit_to_budget,
    tiles_within_budget,
)
from bot.media.wording import megapixels, named, size_text, subject
from bot.settings import ImageSettings

__all__ = ["PixelBudget", "PreparedImage", "fit_to_budget", "load_image", "normalize_image"]

logger = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""Pillow keeps these modes in 1 or 2 bytes per pixel; every other mode (RGB included) takes 4."""
_DECODER_COPIES = {"WEBP": 3, "TIFF": 2}
"""Full-size buffers a format's decoder holds at once: libwebp's canvas, its bytes copy and the image; libtiff's
strip buffer (a TIFF may be one strip) and the image."""
_STRIP_PIXELS = 2_000_000
"""Pixels per strip when shrinking: each strip is copied and converted on its own (about 8 MB)."""

_pillow_guard_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------- wording


def damaged_image(name: str) -> ImageRejected:
    return ImageRejected(key="media.image_damaged", named=named(name))


def _too_many_pixels(name: str, size: tuple[int, int] | None, limit: int) -> ImageTooLarge:
    if size is None:
        return ImageTooLarge(key="media.image_too_large", named=named(name), limit=megapixels(limit))
    return ImageTooLarge(
        key="media.image_pixels",
        detail=f"decode guard: {size[0]}x{size[1]} > {limit} pixels",
        named=named(name),
        size=f"{size[0]}×{size[1]}",
        limit=megapixels(limit),
    )


def _too_much_memory(name: str, size: tuple[int, int], needed: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        key="media.image_memory",
        detail=f"decode guard: {needed} > {limit} bytes",
        named=named(name),
        width=size[0],
        height=size[1],
        needed=size_text(needed),
        limit=size_text(limit),
    )


def _too_long(name: str, width: int, height: int, settings: ImageSettings) -> ImageRejected:
    tiles = settings.max_tiles
    return ImageRejected(
        key="media.image_thin_tiles" if tiles > 1 else "media.image_thin",
        detail=f"aspect {max(width, height) / min(width, height):.0f}:1 exceeds {tiles} tiles",
        named=named(name),
        width=width,
        height=height,
        **({"tiles": tiles} if tiles > 1 else {}),
    )


# ---------------------------------------------------------------------------------------------- limits


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


def _check_limits(name: str, width: int, height: int, settings: ImageSettings) -> None:
    if width * height > settings.max_decode_pixels:
        raise _too_many_pixels(name, (width, height), settings.max_decode_pixels)
    if min(width, height) < settings.min_image_side:
        raise ImageRejected(
            key="media.image_small", named=named(name), width=width, height=height, side=settings.min_image_side
        )


def decode_bytes(img: Image.Image, full_size: tuple[int, int]) -> int:
    """Memory the decoder takes for the first frame of an opened (not yet loaded) image, in bytes.

    ``img.size`` is the size it will be decoded at (a JPEG ``draft`` makes it smaller than ``full_size``).
    A progressive JPEG also keeps every DCT coefficient of the full-size picture until its last scan.
    """
    width, height = img.size
    total = width * height * _BYTES_PER_PIXEL.get(img.mode, 4) * _DECODER_COPIES.get(img.format or "", 1)
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        layers = getattr(img, "layer", None) or []
        h_max = max((h for _, h, _, _ in layers), default=1) or 1
        v_max = max((v for _, _, v, _ in layers), default=1) or 1
        samples = sum(h * v for _, h, v, _ in layers) / (h_max * v_max) if layers else len(img.getbands())
        total += math.ceil(full_size[0] * full_size[1] * samples * 2)  # 16-bit coefficients
    return total


# ---------------------------------------------------------------------------------------------- shrinking


def _reduce_factor(width: int, height: int, wanted_pixels: int) -> int:
    """The largest whole factor that keeps at least ``wanted_pixels`` pixels (1: do not reduce)."""
    if wanted_pixels <= 0 or width * height <= wanted_pixels:
        return 1
    return max(1, math.floor(math.sqrt(width * height / wanted_pixels)))


def _strip_converter(img: Image.Image) -> tuple[str, Callable[[Image.Image], Image.Image] | None]:
    """The mode to shrink ``img`` in, and how to bring a strip of it there (None: it already is).

    Transparency is shrunk premultiplied (``RGBa``) so transparent pixels lend no colour; palette and
    1-bit pictures are expanded first (averaging palette indices would be meaningless); 16-bit samples widen
    to 32-bit integers, which ``reduce`` handles.
    """
    mode = img.mode
    if mode in ("L", "RGB", "I", "F", "RGBa"):
        return mode, None
    if mode.startswith("I;16"):
        return "I", lambda strip: strip.convert("I")
    if img.has_transparency_data:
        return "RGBa", lambda strip: (strip if strip.mode == "RGBA" else strip.convert("RGBA")).convert("RGBa")
    if mode == "1":
        return "L", lambda strip: strip.convert("L")
    return "RGB", lambda strip: strip.convert("RGB")


def _shrink(img: Image.Image, factor: int) -> Image.Image:
    """``img`` (loaded) reduced ``factor`` times (box average) in the mode of ``_strip_converter``.

    Works strip by strip: only one strip at a time is ever copied or converted at full resolution.
    """
    mode, convert = _strip_converter(img)
    if convert is None:
        return img.reduce(factor) if factor > 1 else img
    width, height = img.size
    rows = max(factor, (_STRIP_PIXELS // max(1, width)) // factor * factor)
    out = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        strip = convert(img.crop((0, top, width, min(height, top + rows))))
        if factor > 1:
            strip = strip.reduce(factor)  # RGBa is reduced as it is (Pillow converts only RGBA and LA first)
        out.paste(strip, (0, top // factor))
    return out


def _high_depth_to_rgb(img: Image.Image, *, sixteen_bit: bool) -> Image.Image:
    """32-bit integer or float greyscale to 8-bit RGB, scaled rather than clipped.

    ``sixteen_bit``: the samples came from a 16-bit image, whose full 0..65535 range maps to 0..255 however dark
    the picture is.
    """
    if sixteen_bit:
        scale, offset = 1 / 257, 0.0
    else:
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


def _to_rgb(img: Image.Image, *, source_mode: str) -> Image.Image:
    """A shrunk picture (a mode of ``_strip_converter``) to RGB: transparency on white, deep samples to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F"):
        return _high_depth_to_rgb(img, sixteen_bit=source_mode.startswith("I;16"))
    if img.mode == "RGBa":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _stored_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        return 1


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return img if method is None else img.transpose(method)


def normalize_image(img: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, any mode to RGB (transparency composited on white).

    Loads the pixels. May return ``img`` itself when nothing needs to change.
    """
    if img.tell() != 0:
        img.seek(0)
    orientation = _stored_orientation(img)
    img.load()
    return _upright(_to_rgb(_shrink(img, 1), source_mode=img.mode), orientation)


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Decoded:
    rgb: Image.Image
    """Upright, RGB, at least as large as the tiles need (a whole factor smaller than the file when it was big)."""
    size: tuple[int, int]
    """The full upright size of the file's picture."""
    tiles: int
    notes: list[Note]


def _frames_note(opened: Image.Image, name: str) -> Note | None:
    """Whether there is more than the first frame, from what the format says cheaply (frames are never counted)."""
    try:
        several = bool(getattr(opened, "is_animated", False))
    except Exception:  # a broken second frame: the first one may still be fine
        several = False
    if not several or opened.format == "MPO":  # a camera's multi-picture JPEG: the first picture is the photo
        return None
    the_image = subject(name, "image", capital=True)
    return note("note.image_pages" if opened.format == "TIFF" else "note.image_animated", subject=the_image)


def _decode(opened: Image.Image, *, name: str, settings: ImageSettings, budget: PixelBudget) -> _Decoded:
    """Check the opened (not yet decoded) image against the limits, then decode its first frame to RGB."""
    width, height = opened.size
    _check_limits(name, width, height, settings)
    orientation = _stored_orientation(opened)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    tiles = choose_tiles(width, height, settings=settings, pixels=width * height, max_pixels=budget.max_pixels)
    if tiles is None:
        raise _too_long(name, width, height, settings)
    notes = [note] if (note := _frames_note(opened, name)) else []
    if opened.tell() != 0:
        opened.seek(0)

    # Every tile at the full pixel budget: the fewest pixels worth decoding.
    wanted = tiles * budget.max_pixels
    factor = _reduce_factor(opened.width, opened.height, wanted)
    if opened.format == "JPEG" and factor >= 2:
        # The JPEG decoder shrinks by 1/2, 1/4 or 1/8 while decoding: much less memory and time for big photos.
        opened.draft(None, (max(1, opened.width // factor), max(1, opened.height // factor)))
        factor = _reduce_factor(opened.width, opened.height, wanted)
    needed = decode_bytes(opened, (width, height))
    if needed > settings.max_decode_bytes:
        raise _too_much_memory(name, (width, height), needed, settings.max_decode_bytes)

    source_mode = opened.mode
    opened.load()
    shrunk = _shrink(opened, factor)
    if shrunk is opened:
        shrunk = shrunk.copy()  # the opened file's pixels go away when it is closed
    else:
        opened.close()  # free the full-size pixels before the shrunk picture is converted
    rgb = _upright(_to_rgb(shrunk, source_mode=source_mode), orientation)
    return _Decoded(rgb, (width, height), tiles, notes)


def load_image(
    data: bytes, *, name: str, formats: tuple[str, ...], settings: ImageSettings, budget: PixelBudget, source_sha: str
) -> Attachment:
    """Decode an image file into pictures within the pixel budget; raises an ``InputError`` with a sentence.

    ``MemoryError`` propagates: the caller (a worker process) reports the file as too expensive to open.
    """
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
    except MemoryError:
        raise
    except Exception as exc:  # any parser failure on untrusted bytes is a damaged file, never a crash
        logger.info("image open failed: %s: %s", type(exc).__name__, exc)
        raise damaged_image(name) from exc

    with opened:
        fmt = opened.format
        try:
            decoded = _decode(opened, name=name, settings=settings, budget=budget)
        except (UserFacingError, MemoryError):
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(name, claimed, limit) from exc
        except Exception as exc:
            logger.info("image decode failed format=%s: %s: %s", fmt, type(exc).__name__, exc)
            raise damaged_image(name) from exc

    width, height = decoded.size
    prepared = tiles_within_budget(
        decoded.rgb,
        label=name or "image",
        source_sha=source_sha,
        page=None,
        text="",
        tiles=decoded.tiles,
        budget=budget,
    )
    notes: list[Said] = list(decoded.notes)
    if decoded.tiles > 1:
        notes.append(note(
            "note.image_tall" if height > width else "note.image_wide",
            subject=subject(name, "image", capital=True), width=width, height=height, tiles=decoded.tiles,
        ))
    elif width * height > budget.max_pixels:
        final = prepared[0].image.size
        notes.append(note(
            "note.image_scaled", subject=subject(name, "image"), width=width, height=height,
            new_width=final[0], new_height=final[1],
        ))
    return Attachment(name=name, kind="image", images=prepared, notes=notes)
