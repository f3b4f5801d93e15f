"""The remote engine: an OpenAI-compatible server (vLLM, SGLang, LMDeploy …) runs the model; this process streams.

``PEEKBOT_BACKEND=openai`` selects it. Each question becomes one ``POST {base}/chat/completions`` with
``stream=true``: the system prompt, the conversation's earlier turns, then the question with its images as
``data:`` URLs (already scaled to the pixel budget by the core). The answer arrives as server-sent events
(``data: {…choices[0].delta.content…}`` … ``data: [DONE]``); each delta goes straight to the caller's stream.

It behaves like the in-process engine towards the core: ``submit`` returns an :class:`AnswerStream` at once
or raises ``Busy`` when ``PEEKBOT_QUEUE_LIMIT`` questions already wait; at most
``PEEKBOT_OPENAI_MAX_CONCURRENCY`` answers stream at a time; every question has a deadline and can be cancelled
(closing the connection, which makes vLLM abort the generation). Connection errors, 429 and 5xx are retried
with backoff, but only before the first text arrived, so nobody sees text twice. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bot.engine import AnswerStream, CleanupReport, EngineStats, GenerationRequest, Usage
from bot.errors import Busy, Cancelled, DeadlineExceeded, EngineError, EngineUnavailable
from bot.i18n import note
from bot.redact import redact_url
from bot.types import StartStop
from inference.memory import memory_snapshot
from inference.prompts import system_text
from inference.stats import EngineCounters
from inference.streams import StreamEnd, TextStream

if TYPE_CHECKING:
    from PIL.Image import Image

    from bot.settings import CoreSettings, EngineSettings

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 30.0
_ERROR_BODY_LIMIT = 64 * 1024
_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?length|maximum context|max_model_len|max_num_tokens|too many tokens|prompt is too long"
    r"|input is too long",
    re.IGNORECASE,
)
_OUTCOMES = {"unavailable": "unavailable", "busy": "busy", "timeout": "timeout", "cancelled": "cancelled"}
"""Engine outcome (``/metrics``) per error kind; every other kind counts as ``failed``."""
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerBusy(EngineError):
    """The remote server kept answering 429 (too many requests)."""

    kind = "busy"

    def __init__(self) -> None:
        super().__init__(key="remote.busy")


class PromptTooLong(EngineError):
    """The question with its images and history does not fit the remote model's context."""

    kind = "too_long"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(key="remote.too_long", detail=detail)


class RemoteMisconfigured(EngineUnavailable):
    """The server refuses the API key, redirects elsewhere or does not serve the configured model: retrying will not
    help."""


class _Retryable(Exception):
    """A failure worth another attempt (before the first text); ``final`` is raised when attempts run out."""

    def __init__(self, final: EngineError, why: str, retry_after_s: float | None = None) -> None:
        super().__init__(why)
        self.final = final
        self.why = why
        self.retry_after_s = retry_after_s


def image_data_url(image: Image, image_format: str = "png") -> str:
    """``data:image/png;base64,…`` (or jpeg) for one PIL image."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def chat_messages(
    request: GenerationRequest, image_urls: list[str], default_system_prompt: str
) -> list[dict[str, Any]]:
    """OpenAI chat messages: system prompt, earlier turns (a user turn with the pictures first shown with it), then
    the question with its images first; ``image_urls`` are the request's images in order."""
    system = system_text(request.system_prompt or default_system_prompt, request.instructions)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    urls = iter(image_urls[: len(image_urls) - request.question_images])
    for turn in request.history:
        if not turn.images:
            messages.append({"role": turn.role, "content": turn.text})
            continue
        pictures = [_image_part(next(urls)) for _ in range(turn.images)]
        messages.append({"role": turn.role, "content": [*pictures, {"type": "text", "text": turn.text}]})
    content = [_image_part(url) for url in image_urls[len(image_urls) - request.question_images :]]
    content.append({"type": "text", "text": request.question})
    messages.append({"role": "user", "content": content})
    return messages


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _error_message(body: str) -> tuple[str, str]:
    """``(message, code)`` from an OpenAI-style (``{"error": {...}}``) or vLLM-style (``{"message": ...}``) body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500], ""
    if not isinstance(data, dict):
        return body.strip()[:500], ""
    error = data.get("error")
    if isinstance(error, dict):
        data = error
    elif isinstance(error, str):
        return error[:500], str(data.get("code") or "")
    message = data.get("message") or data.get("detail") or body
    return str(message)[:500], str(data.get("code") or data.get("type") or "")


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use our own backoff


@dataclass(slots=True)
class _SseEvents:
    """Server-sent events from lines: ``data:`` lines are joined until a blank line ends the event."""

    pending: list[str]

    def feed(self, line: str) -> str | None:
        """One decoded line (without its line break); returns a complete event's data, if this line ended one."""
        if not line:
            if not self.pending:
                return None
            data, self.pending = "\n".join(self.pending), []
            return data
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            self.pending.append(value.removeprefix(" "))
        return None

    def end(self) -> str | None:
        return self.feed("")


class _RemoteRequest:
    """Engine-side state of one remote request."""

    def __init__(self, request: GenerationRequest, *, max_new_tokens: int, min_new_tokens: int,
                 timeout_s: float) -> None:
        self.request = request
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.timeout_s = timeout_s
        self.submitted_at = time.monotonic()
        self.usage = Usage()
        self.stream: TextStream | None = None
        self.task: asyncio.Task[None] | None = None
        self.waiting = True
        self.done = False
        self.first_text_at: float | None = None
        self.chunks = 0


class OpenAIEngine(StartStop):
    """``bot.engine.Engine`` backed by an OpenAI-compatible ``/chat/completions`` endpoint (``async with`` starts
    and stops it)."""

    in_process = False

    def __init__(self, core: CoreSettings, engine: EngineSettings) -> None:
        self.core = core
        self.settings = engine
        self.base_url = (core.openai_base_url or "").rstrip("/")
        self.shown_url = redact_url(self.base_url)
        """The base URL as logs, ``/status`` and error messages show it: credentials masked."""
        self.model = core.openai_model or ""
        self._counters = EngineCounters()
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._jobs: set[_RemoteRequest] = set()
        self._waiting = 0
        self._in_flight = 0
        self._accepting = False
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the HTTP session and check the server (an unreachable server is logged, not fatal)."""
        if self._session is not None:
            return
        problem = configuration_problem(self.core)
        if problem:
            raise EngineUnavailable(problem)
        headers = {"Accept": "text/event-stream"}
        if self.core.openai_api_key is not None and self.core.openai_api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self.core.openai_api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=None, connect=self.core.openai_connect_timeout_s,
                                        sock_connect=self.core.openai_connect_timeout_s)
        connector = aiohttp.TCPConnector(limit=max(1, self.core.openai_max_concurrency) + 4)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector)
        self._slots = asyncio.Semaphore(max(1, self.core.openai_max_concurrency))
        self._stopping = False
        try:
            round_trip = await self.ping(self.core.openai_connect_timeout_s)
        except RemoteMisconfigured:
            await self._close_session()
            raise
        except EngineUnavailable as exc:
            logger.warning("the model server at %s does not answer yet (%s); questions are retried when it does",
                           self.shown_url, exc)
        except TimeoutError:
            logger.warning("the model server at %s did not answer within %.0f s; questions are retried when it does",
                           self.shown_url, self.core.openai_connect_timeout_s)
        else:
            logger.info("model server %s answers (%.0f ms), model %s", self.shown_url, round_trip * 1000, self.model)
        self._accepting = True
        logger.info("engine ready: %s", self.describe())

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, let streaming answers finish (bounded), fail the rest with ``EngineUnavailable``."""
        if self._session is None:
            return
        bound = self.settings.stop_timeout_s if timeout_s is None else timeout_s
        self._accepting = False
        self._stopping = True
        for job in [job for job in self._jobs if job.waiting]:
            self._end(job, "unavailable", EngineUnavailable(note("engine.shutting_down")))
            if job.task is not None:
                job.task.cancel()
        running = [job.task for job in self._jobs if job.task is not None and not job.task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=bound)
            for job in [job for job in self._jobs if job.task in late]:
                self._end(job, "unavailable", EngineUnavailable(note("engine.shutting_down")))
                if job.task is not None:
                    job.task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
        await self._close_session()
        logger.info("engine stopped")

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ requests

    def submit(self, request: GenerationRequest) -> AnswerStream:
        """Queue ``request``; raises ``Busy`` at once when ``queue_limit`` requests already wait for a slot."""
        if not self._accepting or self._slots is None:
            raise EngineUnavailable(note("engine.shutting_down" if self._stopping else "error.not_running"))
        settings = self.settings
        if self._waiting >= settings.queue_limit:
            self._counters.outcome("busy")
            logger.info("request %s rejected: %d waiting (limit %d)", request.request_id, self._waiting,
                        settings.queue_limit)
            raise Busy(self._waiting, settings.queue_limit)
        max_new = max(1, request.max_new_tokens or settings.max_new_tokens)
        job = _RemoteRequest(
            request,
            max_new_tokens=max_new,
            min_new_tokens=min(max(0, request.min_new_tokens or 0), max_new),
            timeout_s=request.timeout_s if request.timeout_s is not None else settings.request_timeout_s,
        )
        position = self._waiting + 1 if self._slots.locked() else 0
        job.stream = TextStream(request.request_id, position, job.usage, lambda: self._cancel(job))
        self._waiting += 1
        self._jobs.add(job)
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"peekbot-remote-{request.request_id}")
        return job.stream

    def _cancel(self, job: _RemoteRequest) -> None:
        if self._end(job, "cancelled", Cancelled()):
            logger.info("request %s cancelled", job.request.request_id)
        if job.task is not None and job.task is not asyncio.current_task():
            job.task.cancel()

    def _end(self, job: _RemoteRequest, outcome: str, error: BaseException | None) -> bool:
        """Settle ``job`` once; later calls are ignored. Returns whether this call settled it."""
        if job.done:
            return False
        job.done = True
        if job.waiting:
            job.waiting = False
            self._waiting -= 1
        job.usage.total_s = time.monotonic() - job.submitted_at
        self._counters.outcome(outcome)
        if outcome == "answered":
            self._counters.answered(job.usage.total_s, job.usage.time_to_first_token_s)
        if job.stream is not None:
            job.stream._deliver(StreamEnd(error))
        return True

    async def _run(self, job: _RemoteRequest) -> None:
        request_id = job.request.request_id
        deadline = asyncio.timeout(job.timeout_s)
        try:
            async with deadline:
                image_urls = await asyncio.to_thread(self._encode_images, job.request.images)
                assert self._slots is not None
                async with self._slots:
                    if job.done:
                        return
                    job.waiting = False
                    self._waiting -= 1
                    job.usage.queue_wait_s = time.monotonic() - job.submitted_at
                    self._counters.queue_wait(job.usage.queue_wait_s)
                    self._in_flight += 1
                    try:
                        await self._generate(job, self._payload(job, image_urls))
                    finally:
                        self._in_flight -= 1
        except TimeoutError:
            if deadline.expired():
                if self._end(job, "timeout", DeadlineExceeded(job.timeout_s)):
                    logger.info("request %s exceeded its %.1f s deadline", request_id, job.timeout_s)
            else:  # a timeout that escaped the translation below: still this request's failure
                self._end(job, "failed", EngineError(key="remote.timeout"))
        except asyncio.CancelledError:
            self._end(job, "cancelled", Cancelled())
            raise
        except EngineError as exc:
            self._end(job, _OUTCOMES.get(exc.kind, "failed"), exc)
        except Exception as exc:  # a bug must not leave the asker waiting
            logger.exception("request %s failed unexpectedly", request_id)
            self._end(job, "failed", EngineError(key="engine.failed", detail=repr(exc)))
        else:
            self._end(job, "answered", None)
        finally:
            self._jobs.discard(job)

    def _encode_images(self, images: list[Image]) -> list[str]:
        return [image_data_url(image, self.core.openai_image_format) for image in images]

    def _payload(self, job: _RemoteRequest, image_urls: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(job.request, image_urls, self.settings.system_prompt),
            "max_tokens": job.max_new_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if job.min_new_tokens > 0:
            payload["min_tokens"] = job.min_new_tokens  # vLLM/SGLang extension; only sent when asked for
        return payload

    async def _generate(self, job: _RemoteRequest, payload: dict[str, Any]) -> None:
        """Stream one answer, retrying retryable failures while no text has been streamed yet."""
        retries = max(0, self.core.openai_retries)
        attempt = 0
        while True:
            try:
                await self._attempt(job, payload)
                return
            except _Retryable as failure:
                if job.first_text_at is not None or attempt >= retries:
                    logger.warning("request %s: %s; giving up after %d attempts", job.request.request_id,
                                   failure.why, attempt + 1)
                    raise failure.final from None
                delay = failure.retry_after_s
                if delay is None:
                    delay = self.core.openai_retry_backoff_s * 2**attempt * (1 + random.random() / 4)
                delay = min(delay, MAX_RETRY_DELAY_S)
                left = job.timeout_s - (time.monotonic() - job.submitted_at)
                if delay >= left:
                    logger.warning("request %s: %s; no time left to retry", job.request.request_id, failure.why)
                    raise failure.final from None
                attempt += 1
                logger.warning("request %s: %s; retry %d of %d in %.2f s", job.request.request_id, failure.why,
                               attempt, retries, delay)
                await asyncio.sleep(delay)

    async def _attempt(self, job: _RemoteRequest, payload: dict[str, Any]) -> None:
        session = self._session
        if session is None:
            raise EngineUnavailable(note("engine.shutting_down"))
        try:
            # No redirects: the API key goes to the configured server only (a redirect is reported instead).
            url = self._endpoint("chat/completions")
            async with session.post(url, json=payload, allow_redirects=False) as response:
                if response.status != 200:
                    body = await response.content.read(_ERROR_BODY_LIMIT)
                    self._raise_http_error(response.status, body.decode("utf-8", "replace"), response.headers)
                if "text/event-stream" not in response.headers.get("Content-Type", ""):
                    await self._read_whole(job, response)
                else:
                    await self._read_events(job, response)
        except aiohttp.ClientResponseError as exc:
            self._raise_http_error(exc.status, exc.message, exc.headers or {})
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self._connection_lost(job, exc)

    def _endpoint(self, path: str) -> str:
        """``{base}/{path}``, keeping a query the base URL carries (gateways that take ``?api-version=`` …)."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{path}"))

    def _connection_lost(self, job: _RemoteRequest, exc: BaseException) -> NoReturn:
        what = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if job.first_text_at is not None:
            raise EngineError(key="remote.broke", detail=what)
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            logger.warning("cannot reach the model server at %s: %s", self.shown_url, what)
            final: EngineError = EngineUnavailable(note("remote.unreachable"))
        else:
            final = EngineUnavailable(note("remote.unstable"))
        raise _Retryable(final, f"connection problem ({what})")

    def _raise_http_error(self, status: int, body: str, headers: Any) -> NoReturn:
        message, code = _error_message(body)
        where = f"{self.shown_url}/chat/completions"
        if 300 <= status < 400:
            logger.error("the model server %s answered a redirect (HTTP %d to %s); the API key is never sent on to "
                         "another address: set PEEKBOT_OPENAI_BASE_URL to the final one", where, status,
                         _location(headers))
            raise EngineUnavailable(note("remote.moved"))
        if status in (401, 403):
            logger.error("the model server %s refused the API key (HTTP %d: %s); check PEEKBOT_OPENAI_API_KEY",
                         where, status, message)
            raise EngineUnavailable(note("remote.key_refused"))
        if status == 404:
            logger.error("the model server %s does not serve model %r (HTTP 404: %s); check PEEKBOT_OPENAI_MODEL "
                         "and PEEKBOT_OPENAI_BASE_URL (usually ending in /v1)", where, self.model, message)
            raise EngineUnavailable(note("remote.unknown_model"))
        if status == 413 or (status in (400, 422) and (code == "context_length_exceeded"
                                                        or _CONTEXT_LENGTH.search(message))):
            logger.info("the question does not fit the model's context (HTTP %d: %s)", status, message)
            raise PromptTooLong(detail=message)
        if status == 429:
            raise _Retryable(ServerBusy(), f"HTTP 429 ({message})", _retry_after(headers))
        if status in _RETRY_STATUSES or status >= 500:
            final = EngineUnavailable(note("remote.trouble"))
            raise _Retryable(final, f"HTTP {status} ({message})", _retry_after(headers))
        logger.error("the model server %s rejected the request (HTTP %d: %s)", where, status, message)
        raise EngineError(key="remote.rejected", detail=f"HTTP {status}: {message}")

    async def _read_events(self, job: _RemoteRequest, response: aiohttp.ClientResponse) -> None:
        events = _SseEvents([])
        stall = self.core.openai_stall_timeout_s
        finished = False
        while not finished:
            try:
                if job.first_text_at is None or stall <= 0:
                    raw = await response.content.readline()
                else:
                    raw = await asyncio.wait_for(response.content.readline(), stall)
            except TimeoutError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                raise EngineError(key="remote.stalled", detail=f"no data for {stall:g} s") from None
            data = events.feed(raw.decode("utf-8", "replace").rstrip("\r\n")) if raw else events.end()
            if data is not None:
                finished = self._handle_event(job, data)
            if not raw:
                break
        if finished:
            self._settle_usage(job)
            return
        raise aiohttp.ServerDisconnectedError("the stream ended before [DONE]")

    async def _read_whole(self, job: _RemoteRequest, response: aiohttp.ClientResponse) -> None:
        """A server that ignored ``stream=true`` and sent one JSON completion."""
        data = await response.json(content_type=None)
        choices = data.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        self._record_usage(job, data.get("usage"))
        if text:
            self._emit(job, text)
        self._settle_usage(job)

    def _handle_event(self, job: _RemoteRequest, data: str) -> bool:
        """Apply one event; returns True at ``[DONE]``."""
        if data.strip() == "[DONE]":
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            logger.debug("request %s: ignoring a malformed event", job.request.request_id)
            return False
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk:
            message, _ = _error_message(json.dumps(chunk))
            if _CONTEXT_LENGTH.search(message):
                raise PromptTooLong(detail=message)
            raise EngineError(key="remote.failed", detail=message)
        self._record_usage(job, chunk.get("usage"))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._emit(job, text)
        return False

    def _emit(self, job: _RemoteRequest, text: str) -> None:
        if job.done or job.stream is None:
            return
        if job.first_text_at is None:
            job.first_text_at = time.monotonic()
            job.usage.time_to_first_token_s = job.first_text_at - job.submitted_at
        job.chunks += 1
        job.stream._deliver(text)

    @staticmethod
    def _record_usage(job: _RemoteRequest, usage: Any) -> None:
        if isinstance(usage, dict):
            job.usage.prompt_tokens = int(usage.get("prompt_tokens") or job.usage.prompt_tokens)
            job.usage.generated_tokens = int(usage.get("completion_tokens") or job.usage.generated_tokens)

    def _settle_usage(self, job: _RemoteRequest) -> None:
        if not job.usage.generated_tokens:
            job.usage.generated_tokens = job.chunks  # servers without usage: about one token per chunk
        self._counters.tokens(job.usage.generated_tokens)

    # ------------------------------------------------------------ health, stats

    async def ping(self, timeout_s: float) -> float:
        """``GET {base}/models``: the round trip in seconds. ``TimeoutError`` when the server does not answer in
        time; ``EngineUnavailable`` when it cannot be reached, refuses the key or does not list the model."""
        session = self._session
        if session is None:
            raise EngineUnavailable(note("error.not_running"))
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                async with session.get(self._endpoint("models"), headers={"Accept": "application/json"},
                                       allow_redirects=False) as response:
                    body = await response.content.read(_ERROR_BODY_LIMIT)
                    status = response.status
                    location = _location(response.headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise TimeoutError(f"connecting to {self.shown_url} timed out") from exc
        except aiohttp.ClientError as exc:
            raise EngineUnavailable(f"the model server at {self.shown_url} cannot be reached ({exc})") from exc
        round_trip = time.monotonic() - started
        if 300 <= status < 400:
            raise RemoteMisconfigured(f"the model server at {self.shown_url} answered a redirect (HTTP {status} to "
                                      f"{location}); the API key is never sent on to another address: set "
                                      "PEEKBOT_OPENAI_BASE_URL to the final one")
        if status in (401, 403):
            raise RemoteMisconfigured(f"the model server at {self.shown_url} refused the API key (HTTP {status}); "
                                      "check PEEKBOT_OPENAI_API_KEY")
        if status != 200:
            message, _ = _error_message(body.decode("utf-8", "replace"))
            raise EngineUnavailable(f"the model server at {self.shown_url} answered HTTP {status} ({message})")
        try:
            listed = [str(item.get("id")) for item in json.loads(body).get("data", []) if isinstance(item, dict)]
        except (ValueError, AttributeError):
            listed = []
        if listed and self.model not in listed:
            raise RemoteMisconfigured(f"the model server at {self.shown_url} does not serve {self.model!r} "
                                    f"(it serves {', '.join(listed[:5])}); check PEEKBOT_OPENAI_MODEL")
        return round_trip

    async def cleanup(
        self, *, force: bool, fragmentation_threshold: float, unused_reserved_bytes: int, timeout_s: float
    ) -> CleanupReport:
        """Nothing to do: the model, and its GPU memory, live on the remote server."""
        return CleanupReport(skipped="the model runs on a remote server (PEEKBOT_BACKEND=openai): there is no "
                             "local model to clean up after")

    def running_requests(self) -> list[GenerationRequest]:
        """The requests streaming from the server now (holding a slot), not those waiting for one."""
        return [job.request for job in self._jobs if not job.waiting and not job.done]

    @property
    def ready(self) -> bool:
        return self._accepting and self._session is not None and not self._session.closed

    def stats(self) -> EngineStats:
        snapshot = self._counters.snapshot()
        return EngineStats(
            model=self.model,
            device=f"remote {urlsplit(self.base_url).netloc.rpartition('@')[2] or self.shown_url}",
            ready=self.ready,
            queue_depth=self._waiting,
            queue_limit=self.settings.queue_limit,
            in_flight=self._in_flight,
            memory=memory_snapshot(None),
            **snapshot.engine_fields(),
        )

    def describe(self) -> dict[str, Any]:
        key = self.core.openai_api_key
        return {
            "backend": "openai",
            "base_url": self.shown_url,
            "model": self.model,
            "api_key": "set" if key is not None and key.get_secret_value() else "not set",
            "max_concurrency": self.core.openai_max_concurrency,
            "queue_limit": self.settings.queue_limit,
            "max_new_tokens": self.settings.max_new_tokens,
            "request_timeout_s": self.settings.request_timeout_s,
            "retries": self.core.openai_retries,
            "image_format": self.core.openai_image_format,
            "max_pixels": self.settings.max_pixels,
            "ready": self.ready,
        }


def _location(headers: Any) -> str:
    """A redirect's target as logs may show it (credentials masked)."""
    return redact_url(str(headers.get("Location", "") or "")) or "nowhere"


def configuration_problem(core: CoreSettings) -> str | None:
    """What is missing or wrong for ``PEEKBOT_BACKEND=openai``, or None."""
    missing = [name for name, value in (("PEEKBOT_OPENAI_BASE_URL", core.openai_base_url),
                                        ("PEEKBOT_OPENAI_MODEL", core.openai_model)) if not value]
    if missing:
        return (f"PEEKBOT_BACKEND=openai needs {' and '.join(missing)} (e.g. http://vllm:8000/v1 and "
                "Qwen/Qwen2.5-VL-7B-Instruct)")
    parts = urlsplit(core.openai_base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = redact_url(core.openai_base_url or "")
        return f"PEEKBOT_OPENAI_BASE_URL={shown!r} is not an http(s) URL (e.g. http://vllm:8000/v1)"
    if parts.username is not None and core.openai_api_key is not None and core.openai_api_key.get_secret_value():
        return ("PEEKBOT_OPENAI_BASE_URL carries a user name and password and PEEKBOT_OPENAI_API_KEY is set too; "
                "a request has room for one of them (HTTP Basic or Bearer): drop the other")
    if core.openai_max_concurrency < 1:
        return "PEEKBOT_OPENAI_MAX_CONCURRENCY must be at least 1"
    return None

