"""Draw a small fake error-dialog screenshot for the demo (no external assets)."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw


def draw(path: Path) -> None:
    image = Image.new("RGB", (960, 540), (236, 239, 244))
    pen = ImageDraw.Draw(image)
    pen.rectangle((180, 140, 780, 400), fill=(255, 255, 255), outline=(160, 160, 170), width=2)
    pen.rectangle((180, 140, 780, 180), fill=(200, 40, 40))
    pen.text((196, 152), "Error", fill=(255, 255, 255))
    pen.text((210, 210), "ConnectionRefusedError: [Errno 111] Connection refused", fill=(20, 20, 20))
    pen.text((210, 240), "while connecting to db.internal:5432", fill=(90, 90, 90))
    pen.rectangle((640, 340, 760, 380), fill=(40, 100, 200))
    pen.text((684, 352), "OK", fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


if __name__ == "__main__":
    draw(Path(sys.argv[1] if len(sys.argv) > 1 else "sample-error.png"))
