"""The bad-input corpus and the image/PDF pipeline: each file gives a normalised image or a typed error
with its sentence; none crashes, none hangs."""

from __future__ import annotations

import hashlib
import io
import math
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image

from bot.errors import (
    DocumentRejected,
    EmptyFile,
    EncryptedDocument,
    FileTooLarge,
    ImageRejected,
    ImageTooLarge,
    InputError,
    UnsupportedFile,
)
from bot.media.files import load_attachment
from bot.media.images import normalize_image
from bot.media.pictures import Attachment, fit_to_budget
from bot.media.sniff import sniff_kind
from bot.settings import ImageSettings
from tests.support import corpus

MAX_PIXELS = 1920 * 1080
MIN_PIXELS = 64 * 64
SUPPORTED = (
    "I can read PNG, JPEG, WebP, GIF, BMP and TIFF images, PDF documents, Word, Excel and PowerPoint files "
    "(.docx, .xlsx, .pptx), and text files (.txt, .md, .csv, .html, logs and source code)."
)
DAMAGED = "I couldn't read this image ({}): the file is damaged or not an image."
LOAD_TIMEOUT_S = 30.0


def image_settings(**overrides: object) -> ImageSettings:
    """The documented defaults (no environment or config file involved), with ``overrides``."""
    return ImageSettings.model_construct(**overrides)


def load(
    data: bytes,
    name: str = "",
    *,
    mime_type: str = "",
    settings: ImageSettings | None = None,
    max_pixels: int = MAX_PIXELS,
    min_pixels: int = MIN_PIXELS,
    factor: int = 1,
) -> Attachment:
    """Load on a worker thread, as the core does, and fail instead of hanging."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(
            load_attachment,
            data,
            name=name,
            mime_type=mime_type,
            images=settings or image_settings(),
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            factor=factor,
        )
        return future.result(timeout=LOAD_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False)


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def notes_of(attachment: Attachment) -> list[str]:
    """The notes under an answer (``bot.i18n`` Notes), said in English."""
    return [str(note) for note in attachment.notes]


def only_image(attachment: Attachment) -> Image.Image:
    assert attachment.kind == "image"
    assert len(attachment.images) == 1
    image = attachment.images[0].image
    assert image.mode == "RGB"
    return image


# ---------------------------------------------------------------------------------------------- rejections

REJECTIONS: list[tuple[str, Callable[[], bytes], str, type[InputError], str]] = [
    (
        "decompression bomb (header claims 30000x30000)",
        corpus.make_bomb_png,
        "bomb.png",
        ImageTooLarge,
        "This image (bomb.png) is 30000×30000 pixels; the limit is 64 megapixels.",
    ),
    (
        "complete 1-bit PNG of 100 megapixels in a few kilobytes",
        lambda: corpus.make_bilevel_png(10000, 10000),
        "scan.png",
        ImageTooLarge,
        "This image (scan.png) is 10000×10000 pixels; the limit is 64 megapixels.",
    ),
    ("truncated JPEG", corpus.make_truncated_jpeg, "photo.jpg", ImageRejected, DAMAGED.format("photo.jpg")),
    ("random bytes named .png", corpus.random_bytes, "shot.png", ImageRejected, DAMAGED.format("shot.png")),
    ("zero-byte file", lambda: b"", "empty.png", EmptyFile, "This file (empty.png) is empty."),
    (
        "1x1 image",
        lambda: corpus.encode(Image.new("RGB", (1, 1), "white"), "PNG"),
        "dot.png",
        ImageRejected,
        "This image (dot.png) is only 1×1 pixels; I need at least 8 pixels on each side.",
    ),
    (
        "20000x50 panorama: rejected, it would need more than max_tiles tiles",
        lambda: corpus.make_screenshot_png(20000, 50),
        "pano.png",
        ImageRejected,
        "This image (pano.png) is 20000×50 pixels, too long and thin to read even in 4 pieces. "
        "Please crop it or send it in parts.",
    ),
    (
        "file over max_file_bytes",
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024),
        "huge.png",
        FileTooLarge,
        "This file (huge.png) is 26 MB; the limit is 25 MB.",
    ),
    (
        "zip archive",
        corpus.make_zip,
        "logs.zip",
        UnsupportedFile,
        f"This file (logs.zip) looks like a ZIP archive, which I can't read. {SUPPORTED}",
    ),
    (
        "old-style Word document",
        lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
        "report.doc",
        UnsupportedFile,
        "This file (report.doc) is an old-style Office document (.doc, .xls or .ppt), which I can't read. "
        "Please save it as .docx, .xlsx or .pptx and send it again.",
    ),
    (
        "zip named .png: content decides",
        corpus.make_zip,
        "photo.png",
        UnsupportedFile,
        f"This file (photo.png) looks like a ZIP archive, which I can't read. {SUPPORTED}",
    ),
    (
        "HEIC photo",
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "IMG_0001.HEIC",
        UnsupportedFile,
        f"This file (IMG_0001.HEIC) looks like an HEIC photo, which I can't read. {SUPPORTED}",
    ),
    (
        "unknown bytes with an unknown name",
        corpus.random_bytes,
        "blob.bin",
        UnsupportedFile,
        f"I can't read this kind of file (blob.bin). {SUPPORTED}",
    ),
    (
        "broken PDF",
        corpus.make_broken_pdf,
        "broken.pdf",
        DocumentRejected,
        "I couldn't read this PDF (broken.pdf): the file is damaged or not a PDF.",
    ),
    (
        "password-protected PDF",
        lambda: corpus.make_pdf(["salary table"], password="s3cret"),
        "secret.pdf",
        EncryptedDocument,
        "This PDF (secret.pdf) is password-protected; please send a copy without a password.",
    ),
]


@pytest.mark.parametrize(
    ("make", "name", "error", "sentence"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_bad_input_is_rejected_with_a_sentence(
    make: Callable[[], bytes], name: str, error: type[InputError], sentence: str
) -> None:
    with pytest.raises(error) as caught:
        load(make(), name)
    assert type(caught.value) is error
    assert caught.value.user_message == sentence


def test_sentences_without_a_file_name() -> None:
    with pytest.raises(EmptyFile) as empty:
        load(b"")
    assert empty.value.user_message == "This file is empty."
    with pytest.raises(ImageTooLarge) as caught:
        load(corpus.make_bomb_png())
    assert caught.value.user_message == "This image is 30000×30000 pixels; the limit is 64 megapixels."


def test_decode_limit_follows_settings() -> None:
    small_limit = image_settings(max_decode_pixels=1_000_000)
    with pytest.raises(ImageTooLarge) as caught:
        load(corpus.make_screenshot_png(1200, 900), "wide.png", settings=small_limit)
    assert caught.value.user_message == "This image (wide.png) is 1200×900 pixels; the limit is 1 megapixel."
    assert only_image(load(corpus.make_screenshot_png(1000, 1000), settings=small_limit)).size == (1000, 1000)


def test_tall_image_rejected_when_tiles_are_off() -> None:
    with pytest.raises(ImageRejected) as caught:
        load(corpus.make_screenshot_png(100, 2000), "log.png", settings=image_settings(max_tiles=1))
    assert caught.value.user_message == (
        "This image (log.png) is 100×2000 pixels, too long and thin to read. Please crop it or send it in parts."
    )


def test_pdf_over_its_time_budget_is_rejected() -> None:
    """Drawing pauses at the deadline (here: at once) instead of finishing a slow page."""
    data = corpus.make_pdf(["chart", "b"], extra_ops={1: corpus.heavy_page_ops(5000)})
    with pytest.raises(DocumentRejected) as caught:
        load(data, "slow.pdf", settings=image_settings(pdf_time_budget_s=0.0))
    assert caught.value.user_message == (
        "This PDF (slow.pdf) took too long to draw. Please send a simpler file or a screenshot of the part you mean."
    )


# ---------------------------------------------------------------------------------------------- normalisation


def test_cmyk_jpeg_becomes_rgb_with_its_colours() -> None:
    data = corpus.make_jpeg(64, 32, mode="CMYK")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = only_image(load(data, "print.jpg", min_pixels=0))
    assert image.size == (64, 32)
    assert close_to(image.getpixel((4, 4)), corpus.RED)
    assert close_to(image.getpixel((48, 24)), corpus.BLUE)


def test_16_bit_png_is_scaled_not_clipped() -> None:
    data = corpus.make_16bit_png(64, 16)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = only_image(load(data, "depth.png", min_pixels=0))
    assert image.size == (64, 16)
    assert image.getpixel((0, 8)) == (0, 0, 0)
    assert image.getpixel((63, 8)) == (255, 255, 255)
    middle = image.getpixel((32, 8))
    assert 120 <= middle[0] <= 135 and middle[0] == middle[1] == middle[2]


def test_rgba_png_transparency_becomes_white() -> None:
    image = only_image(load(corpus.make_rgba_png(60, 20), "icon.png", min_pixels=0))
    assert image.getpixel((5, 10)) == (255, 255, 255)  # fully transparent
    assert image.getpixel((30, 10)) == corpus.RED  # opaque
    assert close_to(image.getpixel((55, 10)), (127, 127, 127), tolerance=2)  # half-transparent black on white


def test_palette_png_with_transparent_entry() -> None:
    image = only_image(load(corpus.make_palette_png(40, 20), "pal.png", min_pixels=0))
    assert image.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((35, 5)) == corpus.GREEN


def test_exif_orientation_6_rotates_clockwise() -> None:
    data = corpus.make_jpeg(64, 32, orientation=6)
    stored = Image.open(io.BytesIO(data))
    assert stored.size == (64, 32) and stored.getexif()[0x0112] == 6
    image = only_image(load(data, "phone.jpg", min_pixels=0))
    assert image.size == (32, 64)
    # The red block sits in the stored top-left corner; turned 90° clockwise it is at the top right.
    assert close_to(image.getpixel((28, 3)), corpus.RED)
    assert close_to(image.getpixel((3, 3)), corpus.BLUE)
    assert close_to(image.getpixel((3, 60)), corpus.BLUE)


def test_animated_gif_gives_its_first_frame() -> None:
    attachment = load(corpus.make_animated_gif([corpus.RED, corpus.BLUE, corpus.GREEN]), "spinner.gif", min_pixels=0)
    assert close_to(only_image(attachment).getpixel((16, 16)), corpus.RED, tolerance=8)
    assert notes_of(attachment) == ["spinner.gif is animated; I looked at its first frame."]


def test_multipage_tiff_gives_its_first_page() -> None:
    attachment = load(corpus.make_multipage_tiff(3), "scan.tiff", min_pixels=0)
    assert only_image(attachment).getpixel((16, 16)) == corpus.RED
    assert notes_of(attachment) == ["scan.tiff has several pages; I looked at the first."]


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("PNG", "a.png"), ("JPEG", "a.jpg"), ("WEBP", "a.webp"), ("GIF", "a.gif"), ("BMP", "a.bmp"), ("TIFF", "a.tiff")],
)
def test_every_supported_format_decodes(fmt: str, name: str) -> None:
    data = corpus.encode(corpus.screenshot(320, 200), fmt)
    attachment = load(data, name)
    image = only_image(attachment)
    assert image.size == (320, 200)
    assert close_to(image.getpixel((264, 170)), corpus.RED, tolerance=40)  # the red button
    assert notes_of(attachment) == []
    assert attachment.images[0].sha256 == hashlib.sha256(data).hexdigest()
    assert attachment.images[0].label == name


def test_normalize_image_handles_other_modes() -> None:
    grey_alpha = Image.new("LA", (4, 4), (0, 0))
    assert normalize_image(grey_alpha).getpixel((0, 0)) == (255, 255, 255)
    floats = Image.new("F", (2, 1))
    floats.putpixel((1, 0), 1.0)
    assert normalize_image(floats).getpixel((1, 0)) == (255, 255, 255)
    bilevel = Image.new("1", (4, 4), 1)
    assert normalize_image(bilevel).getpixel((0, 0)) == (255, 255, 255)


# ---------------------------------------------------------------------------------------------- budget and tiles


def test_big_screenshot_is_downscaled_to_the_budget_with_a_note() -> None:
    attachment = load(corpus.make_screenshot_png(3000, 2000), "big.png")
    image = only_image(attachment)
    assert image.width * image.height <= MAX_PIXELS
    assert image.width * image.height > 0.95 * MAX_PIXELS
    assert abs(image.width / image.height - 1.5) < 0.01
    assert notes_of(attachment) == [f"I scaled big.png down from 3000×2000 to {image.width}×{image.height} pixels."]


def test_notes_without_a_file_name() -> None:
    scaled = load(corpus.make_screenshot_png(900, 600), max_pixels=100_000)
    width, height = scaled.images[0].image.size
    assert scaled.images[0].label == "image"
    assert notes_of(scaled) == [f"I scaled the image down from 900×600 to {width}×{height} pixels."]
    assert notes_of(load(corpus.make_animated_gif())) == ["The image is animated; I looked at its first frame."]
    long_pdf = load(corpus.make_pdf(["a"] * 10, page_size=(200, 150)), settings=image_settings(pdf_max_pages=2))
    assert notes_of(long_pdf) == ["I read pages 1–2 of 10 in the PDF."]
    assert [p.label for p in long_pdf.images] == ["document p.1", "document p.2"]


def test_big_jpeg_is_shrunk_while_decoding_and_keeps_its_look() -> None:
    data = corpus.make_jpeg(2400, 1800, quality=90)
    attachment = load(data, "photo.jpg", max_pixels=300_000)
    image = only_image(attachment)
    assert notes_of(attachment) == [f"I scaled photo.jpg down from 2400×1800 to {image.width}×{image.height} pixels."]
    assert image.width * image.height <= 300_000
    assert abs(image.width / image.height - 4 / 3) < 0.01
    assert close_to(image.getpixel((5, 5)), corpus.RED)
    assert close_to(image.getpixel((image.width - 5, image.height - 5)), corpus.BLUE)


def test_factor_aligns_both_sides() -> None:
    image = only_image(load(corpus.make_screenshot_png(1000, 700), "shot.png", factor=28))
    assert image.width % 28 == 0 and image.height % 28 == 0
    assert abs(image.width / image.height - 1000 / 700) < 0.03


def test_small_image_is_upscaled_to_min_pixels() -> None:
    image = only_image(load(corpus.make_screenshot_png(20, 10), "tiny.png"))
    assert image.width * image.height >= MIN_PIXELS
    assert abs(image.width / image.height - 2) < 0.05


def test_tall_screenshot_is_split_into_overlapping_tiles() -> None:
    data = corpus.make_screenshot_png(600, 6000)
    attachment = load(data, "tall.png", max_pixels=500_000)
    settings = image_settings()
    # 10:1 needs 2 tiles for the aspect limit; 3.6 megapixels need 4 tiles (the most) for the pixel budget.
    assert [p.label for p in attachment.images] == [f"tall.png tile {i}/4" for i in range(1, 5)]
    assert notes_of(attachment) == ["tall.png is very tall (600×6000 pixels), so I read it in 4 tiles."]
    for prepared in attachment.images:
        width, height = prepared.image.size
        assert width * height <= 500_000
        assert height / width <= settings.max_aspect_ratio
        assert prepared.page is None
    assert len({p.sha256 for p in attachment.images}) == 4
    # The dark title bar is at the top of the first tile only; the red button in the last tile only.
    first, last = attachment.images[0].image, attachment.images[-1].image
    assert max(first.getpixel((first.width // 2, 2))) < 80
    assert max(last.getpixel((last.width // 2, 2))) > 200

    def red_rows(tile: Image.Image) -> int:
        return sum(1 for y in range(tile.height) if close_to(tile.getpixel((tile.width * 4 // 5, y)), corpus.RED, 40))

    assert red_rows(first) == 0
    assert red_rows(last) > 0


def test_wide_image_tiles_side_by_side() -> None:
    attachment = load(corpus.make_screenshot_png(4000, 400), "wide.png", max_pixels=1_000_000)
    assert len(attachment.images) == 2
    for prepared in attachment.images:
        assert prepared.image.height == 400
        assert prepared.image.width <= 8 * 400


# ---------------------------------------------------------------------------------------------- PDFs


def test_three_page_pdf_gives_three_pages_with_their_text() -> None:
    texts = ["Invoice 1042\nTotal due: 310.00 EUR", "Terms (net 30)", "Thank you!"]
    data = corpus.make_pdf(texts)
    attachment = load(data, "report.pdf")
    assert attachment.kind == "pdf"
    assert attachment.page_count == 3
    assert notes_of(attachment) == []
    assert [p.label for p in attachment.images] == ["report.pdf p.1", "report.pdf p.2", "report.pdf p.3"]
    assert [p.page for p in attachment.images] == [1, 2, 3]
    assert [p.text for p in attachment.images] == texts
    assert attachment.page_texts == texts
    assert len({p.sha256 for p in attachment.images}) == 3
    for prepared in attachment.images:
        image = prepared.image
        assert image.mode == "RGB"
        assert image.width * image.height <= MAX_PIXELS
        assert abs(image.width / image.height - 612 / 792) < 0.01
        # The red box drawn at x=72..216 pt, y=264..336 pt from the bottom.
        box_centre = (round(144 / 612 * image.width), round((1 - 300 / 792) * image.height))
        assert close_to(image.getpixel(box_centre), (217, 26, 26))
        assert image.getpixel((5, 5)) == (255, 255, 255)


def test_small_pdf_page_is_drawn_at_the_dpi_cap() -> None:
    attachment = load(corpus.make_pdf(["label"], page_size=(144, 72)), "label.pdf")
    assert attachment.images[0].image.size == (400, 200)  # 2×1 inches at 200 dpi
    capped = load(corpus.make_pdf(["label"], page_size=(144, 72)), "label.pdf", settings=image_settings(pdf_max_dpi=72))
    assert capped.images[0].image.size == (144, 72)


def test_300_page_pdf_reads_only_the_first_pages() -> None:
    data = corpus.make_pdf([f"page {n} of the manual" for n in range(1, 301)], page_size=(300, 400))
    attachment = load(data, "manual.pdf")
    settings = image_settings()
    assert attachment.page_count == 300
    assert [p.page for p in attachment.images] == list(range(1, settings.pdf_max_pages + 1))
    assert notes_of(attachment) == ["I read pages 1–8 of 300 in manual.pdf."]
    assert len(attachment.page_texts) == 300
    assert attachment.page_texts[299] == "page 300 of the manual"


def test_pdf_page_cap_and_text_cap_follow_settings() -> None:
    data = corpus.make_pdf([f"p{n}" for n in range(1, 11)], page_size=(200, 150))
    attachment = load(data, "ten.pdf", settings=image_settings(pdf_max_pages=1, pdf_max_text_pages=4))
    assert [p.page for p in attachment.images] == [1]
    assert notes_of(attachment) == ["I read page 1 of 10 in ten.pdf."]
    assert attachment.page_texts == ["p1", "p2", "p3", "p4"]


def test_pdf_stops_at_the_image_limit_per_question() -> None:
    data = corpus.make_pdf([f"p{n}" for n in range(1, 11)], page_size=(200, 150))
    attachment = load(data, "ten.pdf", settings=image_settings(pdf_max_pages=10, max_images_per_question=3))
    assert [p.page for p in attachment.images] == [1, 2, 3]
    assert notes_of(attachment) == ["I read pages 1–3 of 10 in ten.pdf."]


def test_slow_pdf_page_is_drawn_within_a_generous_budget() -> None:
    data = corpus.make_pdf(["intro", "chart", "end"], extra_ops={2: corpus.heavy_page_ops(20000)})
    attachment = load(data, "chart.pdf")
    assert [p.page for p in attachment.images] == [1, 2, 3]
    chart = attachment.images[1].image
    assert chart.getpixel((5, 5)) == (255, 255, 255)
    # The squares fill x=50..553 pt and y=50..353 pt; a stretch of that area is dark, not white.
    row = round((1 - 200 / 792) * chart.height)
    assert min(min(chart.getpixel((x, row))) for x in range(chart.width // 8, chart.width // 2)) < 128


def test_very_long_pdf_page_is_tiled() -> None:
    attachment = load(corpus.make_pdf(["receipt"], page_size=(200, 2400)), "receipt.pdf")
    assert [p.label for p in attachment.images] == ["receipt.pdf p.1 tile 1/2", "receipt.pdf p.1 tile 2/2"]
    assert [p.text for p in attachment.images] == ["receipt", ""]
    assert all(p.page == 1 for p in attachment.images)


def test_encrypted_pdf_corpus_file_opens_with_its_password() -> None:
    """Proves the rejection above is about the password, not a damaged file."""
    data = corpus.make_pdf(["salary table"], password="s3cret")
    document = pdfium.PdfDocument(data, password="s3cret")
    try:
        assert document[0].get_textpage().get_text_range() == "salary table"
    finally:
        document.close()


def test_pdf_with_leading_junk_and_name_only_detection() -> None:
    data = b"garbage line\n" + corpus.make_pdf(["hello"])
    assert sniff_kind(data) == "pdf"
    assert load(data, "x.pdf").page_texts == ["hello"]


# ---------------------------------------------------------------------------------------------- concurrency


def test_concurrent_loads_from_many_threads_stay_correct() -> None:
    pdfs = {
        f"doc{i}.pdf": corpus.make_pdf([f"document {i} page {p}" for p in range(1, 3)], page_size=(300, 400))
        for i in range(4)
    }
    images = {f"img{i}.png": corpus.make_screenshot_png(300 + 10 * i, 200) for i in range(4)}
    jobs = {**pdfs, **images}
    start = threading.Barrier(len(jobs))

    def run(name: str) -> Attachment:
        start.wait(timeout=LOAD_TIMEOUT_S)
        return load_attachment(jobs[name], name=name, images=image_settings(), max_pixels=MAX_PIXELS, min_pixels=0)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        results = {name: future.result(timeout=LOAD_TIMEOUT_S) for name, future in futures.items()}
    for i in range(4):
        assert results[f"doc{i}.pdf"].page_texts == [f"document {i} page 1", f"document {i} page 2"]
        assert only_image(results[f"img{i}.png"]).size == (300 + 10 * i, 200)


# ---------------------------------------------------------------------------------------------- damaged files


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt metadata it skips
def test_mutated_files_never_crash() -> None:
    """Flipped bytes, cut-off files and inserted junk: each gives pictures within budget or a typed error."""
    seeds = {
        "png": corpus.make_screenshot_png(120, 80),
        "jpg": corpus.make_jpeg(64, 32, orientation=6),
        "gif": corpus.make_animated_gif(),
        "tiff": corpus.make_multipage_tiff(),
        "webp": corpus.encode(corpus.screenshot(100, 80), "WEBP"),
        "bmp": corpus.encode(corpus.screenshot(60, 40), "BMP"),
        "pdf": corpus.make_pdf(["hello (x)\nworld", "two"], page_size=(200, 150)),
    }
    rng = random.Random(2024)
    outcomes: dict[str, int] = {}
    for _ in range(300):
        extension, original = rng.choice(sorted(seeds.items()))
        data = bytearray(original)
        how = rng.choice(["flip", "cut", "insert"])
        if how == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == "cut":
            data = data[: rng.randrange(1, len(data))]
        else:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 40))
        try:
            attachment = load_attachment(
                bytes(data),
                name=f"f.{extension}",
                images=image_settings(),
                max_pixels=MAX_PIXELS,
                min_pixels=MIN_PIXELS,
            )
        except InputError as error:
            assert error.user_message.endswith(".")
            outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
            continue
        assert attachment.images
        for prepared in attachment.images:
            assert prepared.image.mode == "RGB"
            assert prepared.image.width * prepared.image.height <= MAX_PIXELS
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert {"ok", "ImageRejected", "DocumentRejected"} <= outcomes.keys()


def test_image_modules_load_without_torch() -> None:
    """bot/ imports these modules; they must not drag in the ML stack."""
    code = (
        "import sys, bot.media.files, bot.media.pool, bot.media.worker; "
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- type sniffing


def test_sniff_kind_trusts_content_before_name_and_mime() -> None:
    png = corpus.make_screenshot_png(16, 16)
    pdf = corpus.make_pdf(["x"])
    assert sniff_kind(png, "looks-like.pdf", "application/pdf") == "image"
    assert sniff_kind(pdf, "looks-like.png", "image/png") == "pdf"
    assert sniff_kind(corpus.make_zip(), "photo.png", "image/png") is None
    assert sniff_kind(corpus.random_bytes(), "", "image/jpeg; charset=binary") == "image"
    assert sniff_kind(corpus.random_bytes(), "", "application/pdf") == "pdf"
    assert sniff_kind(corpus.random_bytes(), "notes.txt", "text/plain") is None
    assert sniff_kind(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg", "image/svg+xml") is None
    assert sniff_kind(b"not an image", "junk.png", "image/png") == "image"  # damaged, not a text file
    assert sniff_kind(b"not an image", "notes.txt", "text/plain") == "document"
    webp = corpus.encode(Image.new("RGB", (8, 8)), "WEBP")
    assert sniff_kind(webp) == "image"


# ---------------------------------------------------------------------------------------------- fit_to_budget


@pytest.mark.parametrize("factor", [1, 14, 28, 32])
def test_fit_to_budget_properties(factor: int) -> None:
    rng = random.Random(factor)
    budgets = [(256 * 256, 64 * 64), (1920 * 1080, 64 * 64), (1280 * 28 * 28, 4 * 28 * 28), (640 * 480, 0)]
    for _ in range(3000):
        width, height = rng.randint(1, 12000), rng.randint(1, 12000)
        max_pixels, min_pixels = rng.choice(budgets)
        w, h = fit_to_budget(width, height, max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
        assert w % factor == 0 and h % factor == 0
        assert w >= factor and h >= factor
        assert w * h <= max_pixels
        assert (h, w) == fit_to_budget(height, width, max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
        scale = math.sqrt(min(max(width * height, min_pixels), max_pixels) / (width * height))
        if min(width, height) * scale >= 20 * factor:  # not so thin that rounding to the factor dominates
            assert w * h >= min_pixels
            assert abs((w / h) / (width / height) - 1) < 0.05
            assert w * h >= 0.8 * min(max(width * height, min_pixels), max_pixels)


def test_fit_to_budget_examples() -> None:
    assert fit_to_budget(1920, 1080, max_pixels=1920 * 1080, min_pixels=0, factor=1) == (1920, 1080)
    assert fit_to_budget(1920, 1080, max_pixels=1920 * 1080, min_pixels=0, factor=28) == (1904, 1064)
    assert fit_to_budget(10, 10, max_pixels=10**6, min_pixels=64 * 64, factor=32) == (64, 64)
    w, h = fit_to_budget(20000, 50, max_pixels=10**6, min_pixels=64 * 64, factor=28)
    assert w * h <= 10**6 and w % 28 == 0 and h % 28 == 0 and w / h > 100


def test_fit_to_budget_rejects_impossible_budgets() -> None:
    with pytest.raises(ValueError):
        fit_to_budget(100, 100, max_pixels=100, min_pixels=0, factor=28)
    with pytest.raises(ValueError):
        fit_to_budget(100, 100, max_pixels=10_000, min_pixels=20_000, factor=1)
    with pytest.raises(ValueError):
        fit_to_budget(0, 100, max_pixels=10_000, min_pixels=0, factor=1)
