"""The benchmark's workload: synthetic screenshot-like images and a question each.

Both sides of ``peekbot bench`` build the same workload from the same seed, so they do identical work. Only PIL
and the core's image sizing are needed here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot.media.images import fit_to_budget
from inference.bench.spec import PROBE_QUESTION

if TYPE_CHECKING:
    from bot.settings import EngineSettings

SCREEN_SIZES: tuple[tuple[int, int], ...] = (
    (1920, 1080),  # desktop 1080p
    (1280, 720),  # laptop window
    (800, 600),  # dialog / small window
    (390, 844),  # phone, portrait
)

QUESTIONS: tuple[str, ...] = (
    "What does this error message mean and how do I fix it?",
    "Which button should I press to save these settings?",
    "Summarise what this screen shows.",
    "Why is the build failing according to this log?",
    "这个页面上的提示是什么意思？",
    "Is anything on this dashboard in a warning state?",
    "What is the total amount shown in this table?",
    "How do I get back to the previous step from here?",
)

_WORDS = (
    "error", "build", "deploy", "failed", "settings", "user", "account", "network", "timeout", "retry",
    "cancel", "save", "open", "file", "project", "status", "warning", "total", "amount", "order",
    "invoice", "server", "request", "response", "token", "cache", "queue",
)  # fmt: skip

_THEMES = (
    {
        "bg": (250, 250, 252),
        "bar": (45, 52, 64),
        "panel": (236, 239, 244),
        "text": (30, 30, 30),
        "accent": (46, 110, 220),
    },
    {"bg": (30, 31, 34), "bar": (20, 20, 22), "panel": (43, 45, 49), "text": (220, 221, 222), "accent": (88, 101, 242)},
    {
        "bg": (255, 255, 255),
        "bar": (74, 21, 75),
        "panel": (248, 248, 248),
        "text": (29, 28, 29),
        "accent": (0, 122, 90),
    },
)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One benchmark request: a screenshot and a question."""

    index: int
    image: Image.Image
    question: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize()


def make_screenshot(width: int, height: int, seed: int) -> Image.Image:
    """A screenshot-like RGB image: title bar, sidebar, text lines, buttons and an alert box."""
    rng = random.Random(seed)
    theme = _THEMES[seed % len(_THEMES)]
    image = Image.new("RGB", (width, height), theme["bg"])
    draw = ImageDraw.Draw(image)
    scale = max(0.6, min(width, height) / 720)
    line_h = int(22 * scale)
    font = _font(max(10, int(14 * scale)))
    title_font = _font(max(12, int(18 * scale)))

    bar_h = int(40 * scale)
    draw.rectangle((0, 0, width, bar_h), fill=theme["bar"])
    draw.text((int(12 * scale), bar_h // 4), _sentence(rng, 3), fill=(240, 240, 240), font=title_font)

    phone = width < height
    sidebar_w = 0 if phone else int(width * 0.18)
    if sidebar_w:
        draw.rectangle((0, bar_h, sidebar_w, height), fill=theme["panel"])
        y = bar_h + line_h
        while y < height - line_h:
            draw.text((int(14 * scale), y), _sentence(rng, 2), fill=theme["text"], font=font)
            y += int(line_h * 1.6)

    left = sidebar_w + int(24 * scale)
    right = width - int(24 * scale)
    y = bar_h + int(20 * scale)
    draw.text((left, y), _sentence(rng, 4), fill=theme["text"], font=title_font)
    y += int(line_h * 2)
    while y < height - 3 * line_h:
        kind = rng.random()
        if kind < 0.6:
            chars = max(8, int((right - left) / (7 * scale)))
            text = _sentence(rng, rng.randint(3, max(4, chars // 10)))
            draw.text((left, y), text, fill=theme["text"], font=font)
            y += line_h
        elif kind < 0.8:
            box_w = int((right - left) * rng.uniform(0.3, 0.9))
            box_h = int(line_h * rng.uniform(2.5, 4))
            alert = rng.random() < 0.4
            outline = (200, 50, 50) if alert else theme["accent"]
            draw.rounded_rectangle((left, y, left + box_w, y + box_h), radius=int(6 * scale), outline=outline, width=2)
            label = ("Error: " if alert else "") + _sentence(rng, 5)
            draw.text((left + int(10 * scale), y + box_h // 3), label, fill=outline, font=font)
            y += box_h + line_h // 2
        else:
            x = left
            for _ in range(rng.randint(1, 3)):
                w = int(rng.uniform(80, 140) * scale)
                draw.rounded_rectangle(
                    (x, y, x + w, y + int(line_h * 1.4)), radius=int(5 * scale), fill=theme["accent"]
                )
                draw.text(
                    (x + int(10 * scale), y + line_h // 5), rng.choice(_WORDS).title(), fill=(255, 255, 255), font=font
                )
                x += w + int(12 * scale)
            y += int(line_h * 2.2)
    return image


def build_workload(requests: int, seed: int = 0) -> list[WorkItem]:
    """``requests`` items cycling through the screen sizes, each with its own image and question."""
    if requests < 1:
        raise ValueError("requests must be at least 1")
    rng = random.Random(seed)
    items = []
    for index in range(requests):
        width, height = SCREEN_SIZES[index % len(SCREEN_SIZES)]
        image = make_screenshot(width, height, seed=seed * 100_003 + index)
        items.append(WorkItem(index=index, image=image, question=rng.choice(QUESTIONS)))
    return items


def fit_images(items: Sequence[WorkItem], settings: EngineSettings, factor: int) -> list[WorkItem]:
    """Resize every screenshot into the pixel budget, as the bot does before it asks the engine."""
    fitted = []
    for item in items:
        size = fit_to_budget(
            item.image.width,
            item.image.height,
            max_pixels=settings.max_pixels,
            min_pixels=settings.min_pixels,
            factor=factor,
        )
        image = item.image if size == item.image.size else item.image.resize(size, Image.Resampling.LANCZOS)
        fitted.append(WorkItem(index=item.index, image=image, question=item.question))
    return fitted


def warm_up_items(items: Sequence[WorkItem], count: int) -> list[WorkItem]:
    """The first ``count`` items mirrored: the same shapes and prompt lengths, other pixels, so a warm-up round
    leaves nothing in the engine's image-embedding cache that the timed run could hit."""
    return [WorkItem(item.index, ImageOps.mirror(item.image), item.question) for item in items[:count]]


def probe_item(seed: int, settings: EngineSettings, factor: int) -> WorkItem:
    """The probe's request: one 1080p screenshot (not in the workload), fitted into the budget like the others."""
    item = WorkItem(index=-1, image=make_screenshot(1920, 1080, seed=seed + 7919), question=PROBE_QUESTION)
    return fit_images([item], settings, factor)[0]


FOLLOW_UP_QUESTIONS: tuple[str, ...] = (
    "And what should I do first?",
    "Can you say that again in one sentence?",
    "Where exactly on the screen is that?",
    "Is there anything else on it I should worry about?",
)
"""The second question about the same screenshot, in the follow-up workload."""


def arrival_offsets(requests: int, rate_per_s: float, seed: int = 0) -> list[float]:
    """Seconds after the start at which each of ``requests`` requests arrives: a Poisson process at ``rate_per_s``
    (exponential gaps, seeded, so every policy of a run gets the same trace); the first arrives at 0."""
    if requests < 1 or rate_per_s <= 0:
        raise ValueError("requests must be at least 1 and the rate positive")
    rng = random.Random(f"arrivals:{seed}")
    offsets = [0.0]
    for _ in range(requests - 1):
        offsets.append(offsets[-1] + rng.expovariate(rate_per_s))
    return offsets


def follow_up_question(index: int) -> str:
    """The follow-up question of the ``index``-th pair."""
    return FOLLOW_UP_QUESTIONS[index % len(FOLLOW_UP_QUESTIONS)]
