"""One way for a test to wait for something: poll a condition until it holds, bounded in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], T], what: str = "a condition", *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll ``condition`` every ``interval`` seconds until it returns something truthy, which is returned; fail the
    test ("timed out … waiting for ``what``") once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
    return result
