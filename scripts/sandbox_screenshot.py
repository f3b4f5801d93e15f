"""Take docs/sandbox.png: start ``peekbot sandbox --demo``, ask about a screenshot in the DM from headless Chromium,
kill the socket from the operator's corner, ask again, and photograph the page.

    .venv/bin/python scripts/sandbox_screenshot.py [docs/sandbox.png]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from sample_screenshot import draw  # noqa: E402

from sandbox.browser import Browser  # noqa: E402

logger = logging.getLogger("sandbox_screenshot")

ANSWERED = """(() => {{
  const bots = document.querySelectorAll('#thread-messages .message.bot');
  return bots.length >= {count} && [...bots].every((b) => !b.querySelector('.cursor'));
}})()"""


async def ask(browser: Browser, text: str, files: Sequence[Path] = ()) -> None:
    if files:
        await browser.set_files("#file-input", list(files))
        await browser.wait_for("document.querySelector('#attachments .chip') !== null", what="the attachment")
    await browser.evaluate(
        f"document.getElementById('text').value = {text!r}; document.getElementById('composer').requestSubmit(); true"
    )


async def main(target: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "sandbox",
        "--demo",
        "--port",
        "0",
        "--no-browser",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    url = None
    while url is None:
        line = (await asyncio.wait_for(process.stderr.readline(), 600)).decode()
        if not line:
            raise SystemExit("peekbot sandbox ended before it served the page")
        found = re.search(r"open (http://127\.0\.0\.1:\d+)/", line)
        url = found.group(1) if found else None
    drain = asyncio.ensure_future(process.stderr.read())  # keep its log flowing
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "error-dialog.png"
            draw(image)
            async with await Browser.launch(width=1600, height=1000) as browser:
                await browser.open(f"{url}/")
                await browser.wait_for("document.querySelector('#dms li.current') !== null", what="the page")
                await ask(browser, "What does this error mean?", [image])
                await browser.wait_for(ANSWERED.format(count=1), what="the first answer", limit_s=120)
                await browser.evaluate("document.querySelector('[data-fault=\"kill-socket\"]').click(); true")
                await browser.wait_for(
                    "document.getElementById('fault-result').textContent.startsWith('Killed')", what="the fault"
                )
                await browser.wait_for(
                    "fetch('/api/socket').then((r) => r.json()).then((s) => s.connections_opened >= 2 && s.live)",
                    what="the bot to reconnect",
                )
                await browser.evaluate("openThread(null); true")
                await ask(browser, "/peekbot status")
                await browser.wait_for(
                    "document.querySelector('.message.ephemeral') !== null", what="/status", limit_s=60
                )
                await asyncio.sleep(6)  # the status frame reloads every 5 s: let it show the reconnect
                await browser.evaluate(
                    "openThread(document.querySelector('#messages .message[data-ts]').dataset.ts); true"
                )
                await asyncio.sleep(0.5)
                await browser.screenshot(target)
    finally:
        process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 30)
        drain.cancel()
    logger.info("saved %s", target)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "sandbox.png"))
