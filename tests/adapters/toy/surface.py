"""How a reply looks in Toy chat: one message posted, edited and deleted over HTTP (``adapters.kit.replies.Surface``).

The kit's ``StreamingReply`` decides when a message changes (throttle, coalescing, final text, split, resume);
this module only says how: four REST calls, through the kit's outbound helper, and what their errors mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from adapters.kit.outbound import Failure, RetryPolicy, Verdict, call, retry_after
from adapters.kit.replies import Surface

POLICY = RetryPolicy(backoff_s=0.2, max_backoff_s=5.0)
PLACEHOLDER_WAIT_S = 2.0
"""How long posting the placeholder waits out rate limits (the core waits for it; a later edit posts it)."""


class ToyApiError(Exception):
    def __init__(self, status: int, error: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status} {error}")
        self.status = status
        self.retry_after_s = retry_after_s


def classify(error: BaseException) -> Verdict:
    """Toy chat's errors: 429 waits ``Retry-After``, 404 means the message is gone, 5xx and network errors retry."""
    if isinstance(error, ToyApiError):
        if error.status == 429:
            return Verdict(Failure.RATE_LIMITED, error.retry_after_s)
        if error.status == 404:
            return Verdict(Failure.GONE)
        return Verdict(Failure.RETRYABLE if error.status >= 500 else Failure.PERMANENT)
    if isinstance(error, aiohttp.ClientError | TimeoutError):
        return Verdict(Failure.RETRYABLE)
    return Verdict(Failure.PERMANENT)


class ToySurface(Surface):
    """The reply to the question ``question`` in the chat ``chat``: its placeholder is one bot message."""

    def __init__(self, http: aiohttp.ClientSession, *, chat: str, question: str) -> None:
        self._http = http
        self._chat = chat
        self._question = question
        self._placeholder: str | None = None
        self.label = f"toy {chat}"

    @property
    def has_placeholder(self) -> bool:
        return self._placeholder is not None

    async def post_placeholder(self, text: str) -> None:
        self._placeholder = await self._post(text, max_wait_s=PLACEHOLDER_WAIT_S)

    async def edit(self, text: str, *, max_wait_s: float | None) -> None:
        await self._send("PUT", f"/messages/{self._placeholder}", {"text": text}, max_wait_s=max_wait_s)

    def forget_placeholder(self) -> None:
        self._placeholder = None

    async def post_part(self, text: str, index: int) -> None:
        posted = await self._post(text, max_wait_s=None)
        if index == 0:
            self._placeholder = posted

    async def delete(self) -> None:
        await self._send("DELETE", f"/messages/{self._placeholder}", None, max_wait_s=None)

    def classify(self, error: BaseException) -> Verdict:
        return classify(error)

    def state(self) -> dict[str, str]:
        state = {"chat": self._chat}
        if self._placeholder is not None:
            state["placeholder"] = self._placeholder
        return state

    def restore(self, state: Mapping[str, str]) -> None:
        self._placeholder = state.get("placeholder") or None

    async def _post(self, text: str, *, max_wait_s: float | None) -> str:
        body = {"chat": self._chat, "reply_to": self._question, "text": text}
        return str((await self._send("POST", "/messages", body, max_wait_s=max_wait_s))["id"])

    async def _send(self, method: str, path: str, body: Any, *, max_wait_s: float | None) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            async with self._http.request(method, path, json=body) as response:
                data = await response.json()
                if response.status >= 400:
                    wait = retry_after(response.headers)
                    raise ToyApiError(response.status, str(data.get("error")), wait)
                return dict(data)

        return await call(attempt, what=f"toy {method} {path}", classify=classify, policy=POLICY.within(max_wait_s))
