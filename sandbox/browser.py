"""Headless Chromium driven over the DevTools protocol, to use the sandbox page as a person would (the page test and
``scripts/sandbox_screenshot.py``).

A few DevTools commands over aiohttp's WebSocket client (already a dependency) instead of a browser-automation
package: Playwright and Selenium bring their own driver binaries and browser downloads, pyppeteer is unmaintained;
the system's Chromium (``/usr/bin/chromium``, which ``.ci/run`` installs) is all this needs.

    async with await Browser.launch() as browser:
        await browser.open("http://127.0.0.1:8765/")
        await browser.wait_for("document.querySelector('#messages li') !== null", what="a message")
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import aiohttp

logger = logging.getLogger(__name__)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


class BrowserError(Exception):
    """Chromium could not start, or a DevTools command failed."""


def find_chromium() -> str | None:
    """The system's Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and its first tab."""

    def __init__(self, process: asyncio.subprocess.Process, profile: tempfile.TemporaryDirectory[str]) -> None:
        self._process = process
        self._profile = profile
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.errors: list[str] = []
        """The page's uncaught exceptions and ``console.error`` lines, in order."""

    @classmethod
    async def launch(
        cls, executable: str | None = None, *, width: int = 1600, height: int = 1000, limit_s: float = 30.0
    ) -> Browser:
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("Chromium is not installed (apt-get install chromium)")
        profile = tempfile.TemporaryDirectory(prefix="peekbot-chromium-", ignore_cleanup_errors=True)
        process = await asyncio.create_subprocess_exec(
            executable,
            *FLAGS,
            f"--user-data-dir={profile.name}",
            f"--window-size={width},{height}",
            "about:blank",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        browser = cls(process, profile)
        try:
            await browser._connect(Path(profile.name) / "DevToolsActivePort", limit_s)
            await browser.send(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            await browser.send("Runtime.enable")
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _connect(self, port_file: Path, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not (written := _read_text(port_file)):  # Chromium writes its port there once it listens
            if self._process.returncode is not None or time.monotonic() > deadline:
                raise BrowserError("Chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(written.split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            self._note_error(data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._pending.values():
            future.set_exception(BrowserError("the DevTools connection closed"))

    def _note_error(self, data: dict[str, Any]) -> None:
        params = data.get("params") or {}
        if data.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif data.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

    async def send(self, method: str, limit_s: float = 30.0, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result."""
        assert self._ws is not None, "not connected"
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        await self._ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, limit_s)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{details.get('text')}: {details.get('exception', {}).get('description', '')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, *, what: str, limit_s: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy (for at most ``limit_s``); its value."""
        deadline = time.monotonic() + limit_s
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {limit_s:g} s waiting for {what}")
            await asyncio.sleep(0.05)
        return value

    async def open(self, url: str) -> None:
        """Load ``url`` and wait until the document is complete."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        """Pick ``paths`` in the ``<input type=file>`` that ``selector`` finds, as a person would."""
        found = await self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        object_id = found.get("result", {}).get("objectId")
        if object_id is None:
            raise BrowserError(f"no element matches {selector}")
        await self.send("DOM.setFileInputFiles", files=[str(p.resolve()) for p in paths], objectId=object_id)

    async def screenshot(self, target: Path) -> Path:
        """A PNG of the tab."""
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, target, base64.b64decode(shot["data"]))
        return target

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        for _ in range(20):  # Chromium's helper processes may still write to the profile for a moment
            try:
                shutil.rmtree(self._profile.name)
                break
            except FileNotFoundError:
                break
            except OSError:
                await asyncio.sleep(0.1)
        self._profile.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
