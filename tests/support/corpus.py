"""Generators for test files: screenshots, photos, odd image modes, PDFs and bad input.

Everything is built in memory and deterministic, so any test (images, Slack and Feishu end to end)
can send the same bytes a user would.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageOps

RED = (220, 30, 30)
BLUE = (30, 60, 220)
GREEN = (30, 170, 60)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """``img`` saved in ``fmt`` (Pillow format name) as bytes."""
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def screenshot(width: int, height: int, *, title: str = "Error: connection refused") -> Image.Image:
    """An RGB image that looks like an app window: title bar, text lines, a red button."""
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    bar = max(1, height // 12)
    draw.rectangle((0, 0, width, bar), fill=(40, 44, 52))
    draw.text((max(2, width // 40), bar // 4), title, fill=(255, 255, 255))
    line_gap = max(4, height // 20)
    for row, y in enumerate(range(bar + line_gap, height - line_gap, line_gap)):
        draw.text((max(2, width // 20), y), f"line {row}: value={row * 7}", fill=(20, 20, 20))
    draw.rectangle((width * 3 // 4, height * 4 // 5, width * 9 // 10, height * 9 // 10), fill=RED)
    return img


def make_screenshot_png(width: int = 800, height: int = 600, *, title: str = "Error: connection refused") -> bytes:
    return encode(screenshot(width, height, title=title), "PNG")


def make_jpeg(
    width: int = 64,
    height: int = 32,
    *,
    mode: str = "RGB",
    orientation: int | None = None,
    quality: int = 95,
) -> bytes:
    """A JPEG with a red block in its stored top-left corner on blue (CMYK mode: the same colours in CMYK).

    ``orientation`` writes the EXIF Orientation tag; the pixels stay as stored.
    """
    img = Image.new("RGB", (width, height), BLUE)
    ImageDraw.Draw(img).rectangle((0, 0, width // 4 - 1, height // 4 - 1), fill=RED)
    if mode == "CMYK":
        img = _rgb_to_cmyk(img)
    params: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    return encode(img, "JPEG", **params)


def _rgb_to_cmyk(img: Image.Image) -> Image.Image:
    """Naive RGB -> CMYK, the inverse of Pillow's CMYK -> RGB."""
    cyan, magenta, yellow = (ImageOps.invert(band) for band in img.split())
    return Image.merge("CMYK", (cyan, magenta, yellow, Image.new("L", img.size, 0)))


def make_truncated_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A photo-like JPEG cut off in the middle of its scan data."""
    data = encode(screenshot(width, height), "JPEG", quality=90)
    return data[: len(data) // 2]


def make_rgba_png(width: int = 60, height: int = 20) -> bytes:
    """Left third fully transparent, middle third opaque red, right third 50 % transparent black."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle((width // 3, 0, 2 * width // 3 - 1, height), fill=(*RED, 255))
    draw.rectangle((2 * width // 3, 0, width, height), fill=(0, 0, 0, 128))
    return encode(img, "PNG")


def make_palette_png(width: int = 40, height: int = 20) -> bytes:
    """A palette (mode P) PNG whose left half uses a transparent palette entry, right half green."""
    img = Image.new("P", (width, height), 0)
    img.putpalette([0, 0, 0, *GREEN] + [0] * (256 - 2) * 3)
    ImageDraw.Draw(img).rectangle((width // 2, 0, width, height), fill=1)
    return encode(img, "PNG", transparency=0)


def make_16bit_png(width: int = 64, height: int = 16) -> bytes:
    """A 16-bit greyscale PNG (mode I;16): column x holds x * 65535 // (width - 1)."""
    img = Image.new("I;16", (width, height))
    img.putdata([x * 65535 // (width - 1) for _ in range(height) for x in range(width)])
    return encode(img, "PNG")


def make_animated_gif(colors: Sequence[tuple[int, int, int]] = (RED, BLUE, GREEN), size: int = 32) -> bytes:
    """An animated GIF, one solid frame per colour."""
    frames = [Image.new("RGB", (size, size), color) for color in colors]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def make_multipage_tiff(pages: int = 3, size: int = 32) -> bytes:
    colors = [RED, BLUE, GREEN]
    frames = [Image.new("RGB", (size, size), colors[i % 3]) for i in range(pages)]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def make_bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width``×``height`` (1-bit greyscale); only one row of data follows.

    Costs nothing to build; a reader that trusts the header and decodes would allocate width*height bytes.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + bytes((width + 7) // 8)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(row)) + (
        _png_chunk(b"IEND", b"")
    )


def make_bilevel_png(width: int, height: int) -> bytes:
    """A real, complete 1-bit all-black PNG: huge in pixels, tiny in bytes (a true decompression bomb)."""
    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def random_bytes(size: int = 4096, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def make_zip(files: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in (files or {"readme.txt": b"hello"}).items():
            archive.writestr(name, content)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- PDF

_PDF_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def heavy_page_ops(count: int = 20000) -> bytes:
    """Content-stream operators for ``count`` tiny filled squares: a page that is slow to draw."""
    ops = []
    for i in range(count):
        x, y = 50 + (i * 7) % 500, 50 + (i * 13) % 300
        ops.append(f"{(i % 10) / 10:.1f} g {x} {y} 3 3 re f\n".encode())
    return b"".join(ops)


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


class _Rc4Security:
    """The PDF standard security handler, revision 2 (40-bit RC4), enough to make a real encrypted PDF."""

    permissions = -44

    def __init__(self, user_password: str, owner_password: str, file_id: bytes) -> None:
        user = (user_password.encode("latin-1") + _PDF_PASSWORD_PAD)[:32]
        owner = (owner_password.encode("latin-1") + _PDF_PASSWORD_PAD)[:32]
        self.owner_entry = _rc4(hashlib.md5(owner).digest()[:5], user)
        digest = hashlib.md5(user + self.owner_entry + struct.pack("<i", self.permissions) + file_id).digest()
        self.key = digest[:5]
        self.user_entry = _rc4(self.key, _PDF_PASSWORD_PAD)

    def encrypt(self, number: int, data: bytes) -> bytes:
        object_key = hashlib.md5(self.key + number.to_bytes(3, "little") + b"\x00\x00").digest()[:10]
        return _rc4(object_key, data)

    def dictionary(self) -> bytes:
        return (
            b"<< /Filter /Standard /V 1 /R 2 /O <" + self.owner_entry.hex().encode() + b"> /U <"
            + self.user_entry.hex().encode() + b"> /P " + str(self.permissions).encode() + b" >>"
        )


def make_pdf(
    pages: Sequence[str],
    *,
    page_size: tuple[float, float] = (612, 792),
    extra_ops: dict[int, bytes] | None = None,
    password: str | None = None,
) -> bytes:
    """A valid PDF written by hand: one page per string, the text in Helvetica (a real text layer),
    plus a red box under it so the drawing is visible.

    ``extra_ops`` maps a 1-based page number to more content-stream operators for that page.
    ``password`` encrypts the file (RC4, revision 2) so it opens only with that user password.
    """
    height = page_size[1]
    file_id = hashlib.md5(repr((list(pages), page_size, password)).encode()).digest()
    security = _Rc4Security(password, password + "-owner", file_id) if password is not None else None
    objects: dict[int, bytes] = {}
    font, pages_root, catalog = 1, 2, 3
    objects[font] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    kids = []
    next_number = 4
    for index, text in enumerate(pages, start=1):
        page_number, content_number = next_number, next_number + 1
        next_number += 2
        lines = text.split("\n") or [""]
        ops = [b"BT /F1 14 Tf 18 TL 72 " + str(height - 72).encode() + b" Td"]
        for line_index, line in enumerate(lines):
            ops.append((b"T* " if line_index else b"") + _pdf_string(line) + b" Tj")
        ops.append(b"ET")
        ops.append(b"0.85 0.1 0.1 rg 72 " + str(height / 3).encode() + b" 144 72 re f")
        stream = b"\n".join(ops) + b"\n" + (extra_ops or {}).get(index, b"")
        if security is not None:
            stream = security.encrypt(content_number, stream)
        objects[content_number] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page_number] = _page(pages_root, page_size, font, content_number)
        kids.append(page_number)
    _page_tree(objects, pages_root, catalog, kids)
    id_hex = file_id.hex().encode()
    trailer = b" /ID [<%s> <%s>]" % (id_hex, id_hex)
    if security is not None:
        objects[next_number] = security.dictionary()
        trailer += b" /Encrypt %d 0 R" % next_number
    return _pdf_file(objects, catalog, trailer)


def _page(pages_root: int, page_size: tuple[float, float], font: int, content: int) -> bytes:
    """A page object of the size given, its text in the font object ``font``, drawn by the stream ``content``."""
    width, height = page_size
    return (
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] " % (pages_root, _num(width), _num(height))
        + b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font, content)
    )


def _page_tree(objects: dict[int, bytes], pages_root: int, catalog: int, kids: Sequence[int]) -> None:
    """Adds the page tree of the pages ``kids`` and the catalog that points at it."""
    objects[pages_root] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids),
        len(kids),
    )
    objects[catalog] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_root


def _pdf_file(objects: dict[int, bytes], root: int, trailer: bytes = b"") -> bytes:
    """The file of ``objects`` (numbered 1 to n): header, objects, cross-reference table and the trailer, whose
    ``/Size`` and ``/Root`` are followed by ``trailer``."""
    size = max(objects) + 1
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]
    out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, trailer, xref_at)
    return bytes(out)


def _num(value: float) -> bytes:
    return (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}").encode()


def make_broken_pdf() -> bytes:
    """Starts like a PDF, then nothing a reader can repair."""
    return b"%PDF-1.7\n" + random_bytes(2048, seed=11)


# ---------------------------------------------------------------------------------------------- hostile files
# Small files that cost a naive reader a lot of memory or time (tests/media/test_media_limits.py,
# benchmarks/hostile.py).


def make_flat_png(width: int, height: int, *, color_type: int, bit_depth: int, row: bytes | None = None) -> bytes:
    """A complete PNG whose every row is ``row`` (default: zeros), compressed as it is written (little memory).

    ``color_type`` 0 grey, 2 RGB, 6 RGBA; zero rows in RGBA are fully transparent.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    line = b"\x00" + (row if row is not None else bytes(width * channels * bit_depth // 8))
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def make_transparent_png(width: int = 7900, height: int = 7900) -> bytes:
    """Fully transparent RGBA: a few hundred KB that decode to width × height × 4 bytes."""
    return make_flat_png(width, height, color_type=6, bit_depth=8)


def make_deep_grey_png(width: int = 7900, height: int = 7900) -> bytes:
    """16-bit greyscale with a mid-grey left half (32768) and a black right half."""
    row = struct.pack(">H", 32768) * (width // 2) + bytes((width - width // 2) * 2)
    return make_flat_png(width, height, color_type=0, bit_depth=16, row=row)


def make_ifd_chain_tiff(count: int, size: int = 8) -> bytes:
    """A little-endian TIFF of ``count`` grey ``size``×``size`` pages chained one after another, all sharing one strip.

    About 100 bytes per page: a reader that counts pages walks every one of them.
    """
    strip_at = 8
    strip = bytes([200]) * (size * size)
    entries = 8
    ifd_size = 2 + entries * 12 + 4
    first = strip_at + len(strip)
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + strip)
    for index in range(count):
        here = first + index * ifd_size
        following = here + ifd_size if index + 1 < count else 0
        tags = [
            (256, 3, 1, size),  # ImageWidth
            (257, 3, 1, size),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # Photometric: black is zero
            (273, 4, 1, strip_at),  # StripOffsets
            (278, 3, 1, size),  # RowsPerStrip
            (279, 4, 1, len(strip)),  # StripByteCounts
        ]
        out += struct.pack("<H", entries)
        for tag, kind, number, value in tags:
            out += struct.pack("<HHII", tag, kind, number, value)
        out += struct.pack("<I", following)
    return bytes(out)


def make_many_frame_gif(frames: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """An animated GIF of ``frames`` one-pixel frames on a ``size`` screen (about 15 bytes per frame)."""
    width, height = size
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    # One pixel of colour 0, LZW with a 2-bit minimum code size: clear (4), 0, end (5) in 3-bit codes.
    control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # 10 ms per frame
    frame = control + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    out += frame * frames
    out += b"\x3b"
    return bytes(out)


def make_shared_stream_pdf(
    pages: int,
    *,
    ops: bytes,
    page_size: tuple[float, float] = (612, 792),
    text: str = "Every page draws the same shared plan.",
) -> bytes:
    """A PDF whose ``pages`` pages all draw one shared, Flate-compressed content stream: ``text`` and ``ops``.

    Small on disk; a reader pays for decoding and parsing the stream once per page.
    """
    height = page_size[1]
    line = b"BT /F1 14 Tf 72 " + _num(height - 72) + b" Td " + _pdf_string(text) + b" Tj ET\n"
    stream = zlib.compress(line + ops, 9)
    font, pages_root, catalog, content = 1, 2, 3, 4
    objects: dict[int, bytes] = {
        font: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        content: b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    }
    kids = list(range(5, 5 + pages))
    for number in kids:
        objects[number] = _page(pages_root, page_size, font, content)
    _page_tree(objects, pages_root, catalog, kids)
    return _pdf_file(objects, catalog)
