"""The sandbox page in headless Chromium (driven over DevTools): a person uploads a screenshot in their DM with the
bot and watches the placeholder, then the answer, appear in the question's thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.browser import Browser, find_chromium
from sandbox.runner import Sandbox
from tests.support.ops_support import screenshot

CHROMIUM = find_chromium()

# Every state the thread's bot messages go through, recorded by the page's own DOM as it changes.
WATCH_THREAD = """
window.seen = [];
new MutationObserver(() => {
  for (const m of document.querySelectorAll('#thread-messages .message.bot')) {
    const status = document.querySelector('#thread-messages .status-line');
    window.seen.push({text: m.querySelector('.text').textContent, streaming: !!m.querySelector('.cursor'),
                      status: status ? status.textContent : ''});
  }
}).observe(document.getElementById('thread'), {subtree: true, childList: true, characterData: true});
true
"""
ANSWERED = """(() => {
  const bot = document.querySelector('#thread:not([hidden]) #thread-messages .message.bot');
  return bot && !bot.querySelector('.cursor') && bot.querySelector('.text').textContent.trim()
    && [...bot.querySelectorAll('.buttons button')].some((b) => b.textContent === '👍');
})()"""


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium (.ci/run installs it)")
async def test_a_screenshot_dropped_in_the_dm_is_answered_in_its_thread(sandbox: Sandbox, tmp_path: Path) -> None:
    async with await Browser.launch(CHROMIUM) as browser:
        await browser.open(f"{sandbox.url}/")
        await browser.wait_for(
            "document.querySelector('#dms li.current')?.textContent === 'peekbot'",
            what="the DM with the bot, shown first",
        )
        await browser.set_files("#file-input", [screenshot(tmp_path / "error.png")])
        await browser.wait_for(
            "document.querySelector('#attachments .chip')?.textContent.startsWith('error.png')",
            what="the attached screenshot",
        )
        await browser.evaluate(WATCH_THREAD)
        await browser.evaluate(
            "document.getElementById('text').value = 'What does this error mean?'; "
            "document.getElementById('composer').requestSubmit(); true"
        )

        await browser.wait_for(
            "document.querySelector('#messages .message img')?.complete",
            what="the question with its screenshot in the channel",
        )
        await browser.wait_for(ANSWERED, what="the answer in the thread", limit_s=60)
        seen = await browser.evaluate("window.seen")
        placeholder = seen[0]
        assert placeholder["streaming"] or "Looking at it" in placeholder["text"], seen[:3]
        assert await browser.evaluate("document.querySelector('#messages .replies')?.textContent") == "1 reply"
        assert await browser.evaluate("document.getElementById('connection').textContent") == "live"
        assert browser.errors == []
