"""Hostile files cost bounded memory and time, in worker processes: a bomb or a hang ends a worker, never the bot.

Each test reproduces one finding of the hardening issue with a small hostile file (tests.support.corpus) and checks what
the person who sent it would notice: an answer or a sentence, in time, and the next file still opening.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from PIL import Image

from bot.errors import ImageTooLarge
from bot.media.files import load_attachment
from bot.media.pool import FileTooExpensive, MediaPool
from bot.questions import gather_inputs
from bot.settings import ImageSettings, Settings
from bot.store.base import JobState
from tests.support import corpus
from tests.support.helpers import LocalFilesAdapter, local_image, message

MAX_PIXELS = 1920 * 1080
MIN_PIXELS = 64 * 64


def limits(**overrides: object) -> ImageSettings:
    """The documented defaults (no environment or config file involved), with ``overrides``."""
    return ImageSettings.model_construct(**overrides)


async def small_pool(time_limit_s: float) -> AsyncIterator[MediaPool]:
    """Two workers in a 450 MB address space, each file allowed ``time_limit_s``; closed afterwards."""
    opened = MediaPool(limits(media_workers=2, media_memory_limit_mb=450, media_time_limit_s=time_limit_s))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pool() -> AsyncIterator[MediaPool]:
    async for opened in small_pool(2.0):
        yield opened


async def open_file(pool: MediaPool, data: bytes, name: str, **settings: object):  # type: ignore[no-untyped-def]
    return await pool.open_file(
        data, name=name, images=limits(**settings), max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS
    )


def slow_pdf(ops: int = 300_000) -> bytes:
    """One page whose drawing takes about two seconds on a small machine."""
    return corpus.make_shared_stream_pdf(1, ops=corpus.heavy_page_ops(ops))


# ---------------------------------------------------------------------------------------------- memory


@pytest.fixture
async def patient_pool() -> AsyncIterator[MediaPool]:
    """The memory limit of ``pool`` with time to spare: what is measured is memory, on a machine that may be busy."""
    async for opened in small_pool(30.0):
        yield opened


async def test_giant_transparent_and_16_bit_pngs_open_within_a_small_memory_limit(patient_pool: MediaPool) -> None:
    """7900×7900 pixels in a few hundred KB: decoded with no full-size copy, inside a 450 MB address space."""
    pool = patient_pool
    transparent = await open_file(pool, corpus.make_transparent_png(), "clear.png")
    [picture] = transparent.images
    assert picture.image.mode == "RGB" and picture.image.width * picture.image.height <= MAX_PIXELS
    assert picture.image.getpixel((10, 10)) == (255, 255, 255)  # transparent on white
    assert list(map(str, transparent.notes)) == [
        f"I scaled clear.png down from 7900×7900 to {picture.image.width}×{picture.image.height} pixels."
    ]

    deep = await open_file(pool, corpus.make_deep_grey_png(), "scan.png")
    image = deep.images[0].image
    left, right = image.getpixel((10, 10)), image.getpixel((image.width - 10, 10))
    assert 126 <= left[0] <= 129 and left[0] == left[1] == left[2]  # 32768 of 65535: mid-grey, not clipped white
    assert right == (0, 0, 0)
    assert pool.workers_lost == 0


def test_decode_budget_counts_bytes_per_pixel_before_decoding() -> None:
    """RGBA takes four bytes per pixel, grey one: the same size passes or not by what decoding it would take."""
    settings = limits(max_decode_bytes=8 * 1024 * 1024)
    rgba = corpus.make_flat_png(2000, 2000, color_type=6, bit_depth=8)
    with pytest.raises(ImageTooLarge) as caught:
        load_attachment(rgba, name="overlay.png", images=settings, max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS)
    assert caught.value.user_message == (
        "This image (overlay.png) is 2000×2000 pixels; opening it would take about 15.3 MB of memory, and the "
        "limit is 8 MB. Please send a smaller image or a screenshot of the part you mean."
    )
    grey = corpus.make_flat_png(2000, 2000, color_type=0, bit_depth=8)
    opened = load_attachment(grey, name="grey.png", images=settings, max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS)
    assert opened.images[0].image.mode == "RGB"


def test_progressive_jpeg_counts_its_coefficients() -> None:
    """A progressive JPEG keeps every coefficient until its last scan, however small it is drawn."""
    photo = Image.new("RGB", (2400, 1800), (30, 60, 220))
    baseline = corpus.encode(photo, "JPEG", quality=90)
    progressive = corpus.encode(photo, "JPEG", quality=90, progressive=True)
    settings = limits(max_decode_bytes=8 * 1024 * 1024)
    # Baseline: drawn at 1/2 scale while decoding (about 4 MB), within the budget.
    assert load_attachment(baseline, name="a.jpg", images=settings, max_pixels=300_000, min_pixels=0).images
    with pytest.raises(ImageTooLarge) as caught:
        load_attachment(progressive, name="b.jpg", images=settings, max_pixels=300_000, min_pixels=0)
    assert "opening it would take about" in caught.value.user_message


# ---------------------------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("make", "name", "note", "first_pixel"),
    [
        # Counting the pages of a 20,000-page TIFF took seconds (a 240,000-page one five minutes); they are not counted.
        (lambda: corpus.make_ifd_chain_tiff(20_000), "pages.tif", "pages.tif has several pages; I looked at the first.",
         (200, 200, 200)),
        (lambda: corpus.make_many_frame_gif(100_000), "spin.gif", "spin.gif is animated; I looked at its first frame.",
         None),
    ],
    ids=["tiff-with-a-long-page-chain", "gif-with-many-frames"],
)
def test_a_file_of_many_pages_or_frames_opens_quickly_at_the_first(
    make: Callable[[], bytes], name: str, note: str, first_pixel: tuple[int, int, int] | None
) -> None:
    data = make()
    started = time.monotonic()
    opened = load_attachment(data, name=name, images=limits(), max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS)
    assert time.monotonic() - started < 2.0
    assert list(map(str, opened.notes)) == [note]
    if first_pixel is not None:
        assert opened.images[0].image.getpixel((1, 1)) == first_pixel


# ---------------------------------------------------------------------------------------------- worker deaths


async def test_a_file_that_outlasts_its_worker_gets_a_reason_and_the_next_file_opens() -> None:
    pool = MediaPool(limits(media_workers=2, media_memory_limit_mb=450, media_time_limit_s=0.5))
    try:
        await check_outlasting_file(pool)
    finally:
        await pool.close()


async def check_outlasting_file(pool: MediaPool) -> None:
    data = slow_pdf()
    started = time.monotonic()
    with pytest.raises(FileTooExpensive) as caught:
        await open_file(pool, data, "plan.pdf", pdf_time_budget_s=60.0)  # the PDF would not stop by itself
    assert time.monotonic() - started < 5.0
    assert caught.value.user_message == (
        "This PDF (plan.pdf) is too expensive to open: it takes longer than the 0.5 s I allow for one file. "
        "Please send a smaller or simpler file, or a screenshot of the part you mean."
    )
    assert pool.workers_lost == 1

    shot = await open_file(pool, corpus.make_screenshot_png(640, 400), "shot.png")
    assert shot.images[0].image.size == (640, 400)

    # The same file again (say, as an earlier file of the thread) is refused at once.
    started = time.monotonic()
    with pytest.raises(FileTooExpensive) as again:
        await open_file(pool, data, "plan.pdf", pdf_time_budget_s=60.0)
    assert time.monotonic() - started < 0.5
    assert again.value.user_message == caught.value.user_message
    assert pool.workers_lost == 1


async def test_a_file_over_the_memory_limit_gets_a_reason_and_the_worker_keeps_serving() -> None:
    pool = MediaPool(limits(media_workers=1, media_memory_limit_mb=200, media_time_limit_s=20.0))
    try:
        with pytest.raises(FileTooExpensive) as caught:
            await open_file(pool, corpus.make_transparent_png(), "clear.png")
        assert caught.value.user_message.startswith(
            "This image (clear.png) is too expensive to open: it needs more than the 200 MB of memory I allow"
        )
        shot = await open_file(pool, corpus.make_screenshot_png(320, 200), "shot.png")
        assert shot.images[0].image.size == (320, 200)
    finally:
        await pool.close()


async def test_workers_do_not_carry_the_bots_torch(pool: MediaPool) -> None:
    """Workers start from a forkserver, not a fork of the bot: the model's libraries are not in their memory."""
    import torch  # noqa: F401  (the bot has the model's libraries loaded)

    await open_file(pool, corpus.make_screenshot_png(64, 64), "dot.png")
    workers = [
        p for p in psutil.Process().children(recursive=True) if "multiprocessing.forkserver" in " ".join(p.cmdline())
    ]
    assert len(workers) >= 3  # the forkserver and the pool's two workers
    for process in workers:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "torch" not in maps, process.cmdline()


async def test_closing_the_pool_ends_the_files_being_opened(pool: MediaPool) -> None:
    """Stopping the bot does not wait on a slow file: its worker is stopped and the caller is cancelled."""
    await open_file(pool, corpus.make_screenshot_png(64, 64), "dot.png")  # the workers are up
    slow = asyncio.create_task(open_file(pool, slow_pdf(), "plan.pdf", pdf_time_budget_s=60.0))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await pool.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(slow, 5)
    assert time.monotonic() - started < 1.5
    assert not pool.running


# ---------------------------------------------------------------------------------------------- lanes


async def test_slow_pdfs_do_not_delay_an_unrelated_thread_call(tmp_path: Path, pool: MediaPool) -> None:
    """Eight slow PDFs in flight: the default executor (the Feishu token fetch, the console) stays free."""
    settings = Settings()
    settings.images.pdf_time_budget_s = 60.0
    data = slow_pdf()
    paths = []
    for number in range(8):
        path = tmp_path / f"plan{number}.pdf"
        path.write_bytes(data + b"\n%" + str(number).encode())  # eight different files
        paths.append(path)
    loads = [
        asyncio.create_task(
            gather_inputs(
                message("?", local_image(path, "application/pdf"), user=f"U{number}"),
                LocalFilesAdapter(),
                settings,
                media=pool,
            )
        )
        for number, path in enumerate(paths)
    ]
    try:
        await asyncio.sleep(0.5)  # the PDFs are being opened
        started = time.monotonic()
        await asyncio.to_thread(time.sleep, 0)
        assert time.monotonic() - started < 0.5
        assert not any(task.done() for task in loads)
    finally:
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)


async def test_one_persons_slow_files_leave_a_worker_for_everyone_else(pool: MediaPool) -> None:
    images = limits(pdf_time_budget_s=60.0)
    heavy = [
        asyncio.create_task(
            pool.open_file(
                slow_pdf() + b"%" + bytes([n]),
                name=f"p{n}.pdf",
                images=images,
                max_pixels=MAX_PIXELS,
                min_pixels=MIN_PIXELS,
                owner="slack:U-heavy",
            )
        )
        for n in range(3)
    ]
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        shot = await pool.open_file(
            corpus.make_screenshot_png(320, 200),
            name="shot.png",
            images=images,
            max_pixels=MAX_PIXELS,
            min_pixels=MIN_PIXELS,
            owner="slack:U-other",
        )
        assert time.monotonic() - started < 1.5
        assert shot.images[0].image.size == (320, 200)
    finally:
        for task in heavy:
            task.cancel()
        await asyncio.gather(*heavy, return_exceptions=True)


# ---------------------------------------------------------------------------------------------- the bot


async def test_a_question_whose_file_ended_a_worker_is_answered_with_the_reason_and_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_qwen3_dir: Path
) -> None:
    from bot.app import Application
    from bot.durability import job_id_for
    from inference.transformers_engine import TransformersEngine
    from tests.support.engines import RecordingEngine
    from tests.support.helpers import RecordingReply

    monkeypatch.setenv("PEEKBOT_MODEL", str(tiny_qwen3_dir))
    monkeypatch.setenv("PEEKBOT_HTTP_PORT", "0")
    monkeypatch.setenv("PEEKBOT_MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("PEEKBOT_MAX_PIXELS", str(128 * 128))
    monkeypatch.setenv("PEEKBOT_WARMUP", "false")
    monkeypatch.setenv("PEEKBOT_MEDIA_TIME_LIMIT_S", "0.5")
    monkeypatch.setenv("PEEKBOT_PDF_TIME_BUDGET_S", "60")
    settings = Settings()
    slow = tmp_path / "plan.pdf"
    slow.write_bytes(slow_pdf())
    shot = tmp_path / "shot.png"
    shot.write_bytes(corpus.make_screenshot_png(320, 200))
    engine = RecordingEngine(TransformersEngine(settings.engine))
    async with Application(settings, engine=engine, adapters=[LocalFilesAdapter()], services=[]) as app:
        question = message("what is on this plan?", local_image(slow, "application/pdf"))
        reply = RecordingReply()
        assert await app.handle(question, reply)
        await reply.wait(30)
        assert reply.error is not None and reply.error.startswith("This PDF (plan.pdf) is too expensive to open")
        assert await app.wait_idle(30)
        job = await app.store.jobs.get(job_id_for(question))
        assert job is not None and job.state == JobState.FAILED and job.error == "file_too_expensive"
        assert engine.requests == []

        after = RecordingReply()
        assert await app.handle(message("and this?", local_image(shot)), after)
        await after.wait(30)
        assert after.error is None and after.final
    assert not app.media.running  # stopped with the application


def test_pdf_disguised_as_png_is_read_as_a_pdf() -> None:
    data = corpus.make_pdf(["invoice 1042"], page_size=(300, 200))
    opened = load_attachment(
        data, name="invoice.png", mime_type="image/png", images=limits(), max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS
    )
    assert opened.kind == "pdf" and opened.page_texts == ["invoice 1042"]


def test_giant_page_box_is_drawn_within_the_pixel_budget() -> None:
    data = corpus.make_pdf(["poster"], page_size=(14400, 14400))
    opened = load_attachment(data, name="poster.pdf", images=limits(), max_pixels=MAX_PIXELS, min_pixels=MIN_PIXELS)
    image = opened.images[0].image
    assert image.width * image.height <= MAX_PIXELS
    assert image.width == image.height
    assert opened.page_texts == ["poster"]
