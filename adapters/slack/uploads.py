"""A long answer posted as a file in the question's thread (``files:write``), in the two halves the kit needs.

Slack's external upload has three steps: ``files.getUploadURLExternal`` (a file id and an upload URL), the bytes
sent to that URL, and ``files.completeUploadExternal``, which shares the file in the channel and thread. slack_sdk's
``files_upload_v2`` runs all three in one call; here the first two (``upload``: the file exists, nobody sees it)
and the third (``share``) are separate, so that the kit journals the file id in between: a process that dies after
sharing leaves an id the next one finds in the thread (``shown_in``), and it neither uploads nor shares again.
The upload URL is on Slack's file host and needs no token; none is sent there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit import outbound
from adapters.kit.outbound import RetryPolicy
from adapters.slack.replies import classify, web_call

UPLOAD_TIMEOUT_S = 60.0


async def upload(web: AsyncWebClient, name: str, data: bytes, *, policy: RetryPolicy) -> str:
    """Upload ``data`` as the file ``name`` without sharing it anywhere yet; returns its file id."""
    response = await web_call(
        web.files_getUploadURLExternal,
        what="files.getUploadURLExternal",
        policy=policy,
        filename=name,
        length=len(data),
    )
    url, file_id = str(response["upload_url"]), str(response["file_id"])

    async def send() -> None:
        timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, data=data) as answer:
            answer.raise_for_status()

    await outbound.call(send, what="slack file upload", classify=classify, policy=policy)
    return file_id


async def share(
    web: AsyncWebClient, file_id: str, *, title: str, channel: str, thread_ts: str, policy: RetryPolicy
) -> None:
    """Share the uploaded file in ``channel``'s thread ``thread_ts``."""
    await web_call(
        web.files_completeUploadExternal,
        what="files.completeUploadExternal",
        policy=policy,
        files=[{"id": file_id, "title": title}],
        channel_id=channel,
        thread_ts=thread_ts,
    )


def shown_in(messages: Sequence[Mapping[str, Any]], file_id: str) -> bool:
    """Whether one of a thread's ``messages`` shows the file ``file_id``."""
    return any(
        isinstance(file, Mapping) and file.get("id") == file_id
        for message in messages
        for file in message.get("files") or ()
    )
