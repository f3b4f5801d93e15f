"""Pictures for the model: what a decoded file gives, and the geometry that fits a picture to the pixel budget.

Shared by the image reader (``bot.media.images``) and the PDF reader (``bot.media.pdf``); depends on neither.
Every type here pickles, so a worker process can hand its results back.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from PIL import Image

from bot.settings import ImageSettings

if TYPE_CHECKING:
    from bot.i18n import Said

Kind = Literal["image", "pdf", "document"]

TILE_OVERLAP = 0.05
"""Neighbouring tiles share this fraction of a tile's length, so a line of text cut by one is whole in the other."""


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
    notes: list[Said]
    """Sentences worth telling the user (``bot.i18n`` Notes, said in the asker's language when the answer is
    composed): pages read of the total, tiles made, downscaled from W×H."""
    page_count: int | None = None
    page_texts: list[str] = field(default_factory=list)
    """PDF text layer of pages 1..len(page_texts), possibly more pages than were drawn."""


@dataclass(frozen=True)
class PixelBudget:
    """The model's pixel budget per picture; ``factor`` > 1 also aligns both sides to its multiple."""

    max_pixels: int
    min_pixels: int
    factor: int


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
    overlap = math.floor(max_length * TILE_OVERLAP)
    return math.ceil((long_side - overlap) / (max_length - overlap))


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


def _tile_boxes(width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` equal boxes (left, top, right, bottom) covering the image along its long side, overlapping."""
    if count <= 1:
        return [(0, 0, width, height)]
    long_side = max(width, height)
    # Each tile is a little longer than long/count so that neighbours overlap.
    length = min(long_side, math.ceil(long_side / (count - (count - 1) * TILE_OVERLAP)))
    starts = [round(i * (long_side - length) / (count - 1)) for i in range(count)]
    if height >= width:
        return [(0, s, width, s + length) for s in starts]
    return [(s, 0, s + length, height) for s in starts]


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
