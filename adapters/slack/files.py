"""Downloading Slack files with the bot token, with clear sentences when that is not possible.

The bot token goes only to Slack: over https to Slack's file hosts (``SLACK_FILE_HOSTS``, ``files.slack.com`` by
default) or to the exact scheme, host and port of ``SLACK_API_URL`` (which the operator chose, possibly a loopback
test server or a proxy). A file object naming any other place gets a reply instead of a request. Redirects are
followed by hand, each hop checked on its own: once a hop leaves Slack no later hop carries the token, a hop from
https to plain http is refused, and at most ``MAX_REDIRECTS`` hops are followed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.kit.text import size_text
from adapters.slack.events import file_ref, needs_file_info
from bot.errors import FileAccessDenied, FileTooLarge, UserFacingError
from bot.types import FileRef

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
MAX_REDIRECTS = 5
DEFAULT_FILE_HOSTS = ("files.slack.com",)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def origin(url: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL (lower case, default ports filled in); None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


class TokenScope:
    """Where the bot token may be sent: https to Slack's file hosts, or the exact origin of ``SLACK_API_URL``."""

    def __init__(self, api_url: str, file_hosts: Iterable[str] = DEFAULT_FILE_HOSTS) -> None:
        self._api = origin(api_url)
        self._file_hosts = frozenset(host.strip().rstrip(".").lower() for host in file_hosts if host.strip())

    def allows(self, url: str) -> bool:
        where = origin(url)
        if where is None:
            return False
        if where == self._api:
            return True
        scheme, host, port = where
        return scheme == "https" and port == 443 and host in self._file_hosts


def _named(name: str) -> str:
    return f" “{name}”" if name else ""


def access_denied(name: str) -> FileAccessDenied:
    return FileAccessDenied(key="slack.access_denied", named=_named(name), detail=f"download of {name!r} refused")


def outside_slack(name: str) -> FileAccessDenied:
    return FileAccessDenied(key="slack.outside", named=_named(name), detail=f"file {name!r} is not stored on Slack")


def unsafe_redirect(name: str, why: str) -> FileAccessDenied:
    return FileAccessDenied(
        key="slack.unsafe", named=_named(name), why=why, detail=f"download of {name!r} stopped: {why}"
    )


def too_large(name: str, size: int, limit: int, *, at_least: bool = False) -> FileTooLarge:
    return FileTooLarge(
        key="slack.too_large_at_least" if at_least else "slack.too_large",
        named=_named(name),
        size=size_text(size),
        limit=size_text(limit),
        detail=f"file {name!r} has {size} bytes > {limit}",
    )


class FileFetcher:
    """``fetch(FileRef) -> bytes``: size check first, ``files.info`` for id-only files, bearer download from Slack.

    ``api_url`` (default: the Web API client's base URL) and ``file_hosts`` say where the token may go
    (:class:`TokenScope`).
    """

    def __init__(
        self,
        web: AsyncWebClient,
        session: aiohttp.ClientSession,
        *,
        bot_token: str,
        max_bytes: int,
        timeout_s: float,
        api_url: str | None = None,
        file_hosts: Iterable[str] = DEFAULT_FILE_HOSTS,
    ) -> None:
        self._web = web
        self._session = session
        self._token = bot_token
        self._max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._scope = TokenScope(api_url if api_url is not None else web.base_url, file_hosts)

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
                raise FileAccessDenied(key="slack.gone", detail=f"files.info {error}") from exc
            raise access_denied("") from exc
        info = response.get("file")
        if not isinstance(info, Mapping):
            raise access_denied("")
        return info

    async def _download(self, url: str, name: str) -> bytes:
        if not self._scope.allows(url):
            logger.warning("slack: a file is stored at %s, outside Slack; not downloading it", _host(url))
            raise outside_slack(name)
        try:
            return await self._follow(url, name)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("download of a Slack file failed: %s", exc)
            raise UserFacingError(
                key="slack.download_failed", detail=f"download failed: {exc!r}", named=_named(name)
            ) from exc

    async def _follow(self, url: str, name: str) -> bytes:
        """GET ``url``, following at most ``MAX_REDIRECTS`` redirects by hand; the token only while on Slack."""
        with_token = True
        for _ in range(MAX_REDIRECTS + 1):
            with_token = with_token and self._scope.allows(url)
            headers = {"Authorization": f"Bearer {self._token}"} if with_token else {}
            async with self._session.get(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status not in _REDIRECTS:
                    return await self._read(response, name)
                location = response.headers.get("Location")
                if not location:
                    raise unsafe_redirect(name, "Slack sent me elsewhere without saying where")
                target = urljoin(str(response.url), location)
            if origin(target) is None or (urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https"):
                logger.warning("slack: refused a redirect from %s to %s (not https)", _host(url), _host(target))
                raise unsafe_redirect(name, "Slack sent me to an address that is not secure (https)")
            if with_token and not self._scope.allows(target):
                logger.info(
                    "slack: a download redirects to %s, outside Slack; following without the token", _host(target)
                )
            url = target
        raise unsafe_redirect(name, f"Slack sent me on more than {MAX_REDIRECTS} times")

    async def _read(self, response: aiohttp.ClientResponse, name: str) -> bytes:
        if response.status in (401, 403, 404):
            raise access_denied(name)
        if response.status >= 400:
            raise UserFacingError(
                key="slack.download_refused", detail=f"download HTTP {response.status}", named=_named(name),
                status=response.status,
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


def _host(url: str) -> str:
    """Where a URL points, for logs: scheme, host and port only (no path, query or credentials)."""
    where = origin(url)
    return f"{where[0]}://{where[1]}:{where[2]}" if where is not None else "an address that is not http(s)"
