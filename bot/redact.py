"""Credentials out of everything people read: logs, ``peekbot doctor``, ``/status``, the status page, error replies.

``redact(text)`` masks, wherever they appear in free text:

- URLs: the password of the user-info (a lone user-info, often a token, entirely) and the values of query
  parameters that carry secrets (``api_key``, ``token``, ``secret``, ``password``, ``sig`` …);
- ``name=value`` / ``"name": "value"`` pairs with such names outside URLs;
- Slack tokens (``xoxb-…``, ``xapp-…``, ``xoxp-…``), ``Bearer``/``Basic`` credentials;
- every configured secret value (``secret_values(settings)``; ``remember(...)`` makes them known process-wide,
  which the logging filter and error replies rely on).

Hand-written (standard library only): the patterns are few and specific to this project's settings, and the
log filter runs on every line, so a general-purpose scrubbing library would add weight without covering more.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from bot.settings import Settings

MASK = "***"
MIN_SECRET_CHARS = 6
"""Remembered values shorter than this are not replaced in free text (too likely to hit ordinary words)."""
MIN_GIVEN_SECRET_CHARS = 3
"""Values handed to ``redact`` by its caller (who knows they are secrets) are replaced from this length."""

_SECRET_NAMES = (
    r"api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|subscription[_-]?key|key|"
    r"(?:access[_-]?|refresh[_-]?|auth[_-]?|id[_-]?|session[_-]?|tenant[_-]?access[_-]?)?token|"
    r"(?:client[_-]?|app[_-]?)?secret|password|passwd|pwd|pass|sig|signature|credentials?|authorization|"
    r"ticket|auth"
)
_SECRET_PARAM = re.compile(rf"(?:^|[_.-])(?:{_SECRET_NAMES})$", re.IGNORECASE)
_PARAM_VALUE = re.compile(r"(^|[&;])([^=&;#]*)=([^&;#]*)")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s'\"<>`]+")
_PAIR = re.compile(
    rf"""(?<![\w-])((?:{_SECRET_NAMES}))(["']?\s*[:=]\s*["']?)([^\s"'&,;)\]}}]+)""",
    re.IGNORECASE,
)
_SLACK_TOKEN = re.compile(r"\b(xox[abposre]|xapp|xoxe\.xox[bp])-[A-Za-z0-9-]+")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9._~+/=-]{6,})", re.IGNORECASE)

_NOT_SECRETS = frozenset({"set", "not", "unset", "none", "null", "true", "false", "yes", "no", "0", "1"})
"""Values of secret-named fields that only say whether a secret is there (``'api_key': 'not set'``)."""

_lock = threading.Lock()
_known: frozenset[str] = frozenset()


def is_secret_param(name: str) -> bool:
    """True for query parameter and field names that carry credentials (``api_key``, ``X-Amz-Signature`` …)."""
    return bool(_SECRET_PARAM.search(name.strip()))


def redact_url(url: str) -> str:
    """``url`` without its secrets: password (or lone user-info) and secret query values become ``***``.

    Everything else (scheme, host, port, path, harmless parameters) stays as it was, so the result still says
    where the bot connects to.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return re.sub(r"//[^/?#@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = _PARAM_VALUE.sub(_mask_param, parts.query)
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if query:
        shown += f"?{query}"
    if parts.fragment:
        shown += f"#{_PARAM_VALUE.sub(_mask_param, parts.fragment)}"
    return shown


def _mask_param(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    if value and is_secret_param(unquote(name)):
        value = MASK
    return f"{lead}{name}={value}"


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a configured URL (password, lone user-info, secret query values), raw and decoded."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username if parts.password is None else None]
    except ValueError:
        return []
    found += [m.group(3) for m in _PARAM_VALUE.finditer(parts.query) if is_secret_param(unquote(m.group(2)))]
    values = [value for value in found if value]
    return sorted({*values, *(unquote(v) for v in values)}, key=len, reverse=True)


def secret_values(settings: Settings) -> list[str]:
    """Every credential the configuration holds: secret settings and the secret parts of configured URLs, of the
    core's section and of every section loaded so far (the composition root loads each platform's at start)."""
    from pydantic import SecretStr  # here: the rest of this module (imported by bot.errors) needs no pydantic

    values: list[str] = []
    for section in (settings.core, *settings.sections):
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
            elif isinstance(value, str) and "://" in value:  # a URL: PEEKBOT_STORE_URL, SLACK_API_URL …
                values += url_secrets(value)
    return [value for value in values if value]


def remember(values: Iterable[str]) -> None:
    """Make these secret values known to every later ``redact`` call in this process (logs, error replies)."""
    global _known
    with _lock:
        _known = _known | {value for value in values if len(value) >= MIN_SECRET_CHARS}


def forget_all() -> None:
    """Drop the remembered values (tests)."""
    global _known
    with _lock:
        _known = frozenset()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked: URLs, secret pairs, tokens, and the given and remembered secret values."""
    if not text:
        return text
    text = _URL.sub(_mask_url, text)
    text = _SLACK_TOKEN.sub(lambda m: f"{m.group(1)}-{MASK}", text)
    text = _AUTH_SCHEME.sub(_mask_credential, text)
    text = _PAIR.sub(_mask_pair, text)
    values = {value for value in secrets if len(value) >= MIN_GIVEN_SECRET_CHARS} | _known
    for value in sorted(values | {quote(v, safe="") for v in values}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def _mask_url(match: re.Match[str]) -> str:
    url = match.group(0)
    tail = len(url) - len(url.rstrip(".,;:!?)]}"))  # punctuation of the sentence around the URL
    return redact_url(url[: len(url) - tail]) + url[len(url) - tail :]


def _mask_credential(match: re.Match[str]) -> str:
    scheme, space, value = match.groups()
    if value.isalpha() and len(value) < 20:
        return match.group(0)  # prose ("Bearer tokens are …"), not a credential
    return f"{scheme}{space}{MASK}"


def _mask_pair(match: re.Match[str]) -> str:
    name, separator, value = match.groups()
    if value.startswith(MASK) or value.lower() in ("bearer", "basic") or value.lower() in _NOT_SECRETS:
        return match.group(0)  # already masked, a credential scheme whose value _AUTH_SCHEME masks, or a flag
    return f"{name}{separator}{MASK}"
