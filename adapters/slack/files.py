"""Downloading Slack files with the bot token, with clear sentences when that is not possible."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.events import file_ref, needs_file_info
from bot.errors import FileAccessDenied, FileTooLarge, UserFacingError
from bot.types import FileRef

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def _named(name: str) -> str:
    return f" “{name}”" if name else ""


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def access_denied(name: str) -> FileAccessDenied:
    return FileAccessDenied(
        f"I can't open the file{_named(name)}: Slack did not let me download it. Please invite me to this "
        "channel (type `/invite @peekbot`) and make sure the app has the `files:read` permission, then send the "
        "file again.",
        detail=f"download of {name!r} refused",
    )


def too_large(name: str, size: int, limit: int, *, at_least: bool = False) -> FileTooLarge:
    how_big = f"is over {_size_text(limit)}" if at_least else f"is {_size_text(size)}"
    return FileTooLarge(
        f"The file{_named(name)} {how_big}; the limit is {_size_text(limit)}. "
        "Please send a smaller file or a screenshot of the part that matters.",
        detail=f"file {name!r} has {size} bytes > {limit}",
    )


class FileFetcher:
    """``fetch(FileRef) -> bytes``: size check first, ``files.info`` for id-only files, bearer download."""

    def __init__(
        self, web: AsyncWebClient, session: aiohttp.ClientSession, *, bot_token: str, max_bytes: int, timeout_s: float
    ) -> None:
        self._web = web
        self._session = session
        self._token = bot_token
        self._max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def complete(self, file: Mapping[str, Any]) -> FileRef:
        """A FileRef with URL and type, calling ``files.info`` when the event carried only the id."""
        if not needs_file_info(file):
            return file_ref(file)
        try:
            return file_ref(await self._file_info(str(file.get("id", ""))))
        except UserFacingError as exc:
            logger.info("files.info for %s failed: %s", file.get("id"), exc)
            return file_ref(file)  # fetch() reports the problem to the user later

    async def fetch(self, file: FileRef) -> bytes:
        self._check_size(file.name, file.size)
        url = file.source.get("url")
        name = file.name
        if not url:
            info = await self._file_info(file.file_id)
            completed = file_ref(info)
            name = completed.name or name
            self._check_size(name, completed.size)
            url = completed.source.get("url")
            if not url:
                raise access_denied(name)
        return await self._download(url, name)

    def _check_size(self, name: str, size: int | None) -> None:
        if size is not None and size > self._max_bytes:
            raise too_large(name, size, self._max_bytes)

    async def _file_info(self, file_id: str) -> Mapping[str, Any]:
        try:
            response = await self._web.files_info(file=file_id)
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            logger.info("files.info %s failed: %s", file_id, error)
            if error in ("file_not_found", "file_deleted"):
                raise FileAccessDenied(
                    "I can't open that file: Slack says it no longer exists.", detail=f"files.info {error}"
                ) from exc
            raise access_denied("") from exc
        info = response.get("file")
        if not isinstance(info, Mapping):
            raise access_denied("")
        return info

    async def _download(self, url: str, name: str) -> bytes:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                if response.status in (401, 403, 404):
                    raise access_denied(name)
                if response.status >= 400:
                    raise UserFacingError(
                        f"Slack could not give me the file{_named(name)} right now (HTTP {response.status}). "
                        "Please try again in a minute.",
                        detail=f"download HTTP {response.status}",
                    )
                if response.content_type == "text/html":
                    # Slack answers a download without access with its sign-in page, status 200.
                    raise access_denied(name)
                if response.content_length is not None:
                    self._check_size(name, response.content_length)
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data.extend(chunk)
                    if len(data) > self._max_bytes:
                        raise too_large(name, len(data), self._max_bytes, at_least=True)
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("download of a Slack file failed: %s", exc)
            raise UserFacingError(
                f"I couldn't download the file{_named(name)} from Slack. Please try again in a minute.",
                detail=f"download failed: {exc!r}",
            ) from exc
