"""Errors that carry a sentence fit to show the person who asked."""

from __future__ import annotations

from bot.i18n import Said, note, say
from bot.redact import redact


class StartupError(Exception):
    """The bot cannot start as configured; the message names the setting to change (``peekbot`` exits with 2)."""


class UserFacingError(Exception):
    """An error whose sentence is shown in the chat (credentials masked, see ``bot.redact``).

    Raised with a catalogue ``key`` (``bot.i18n``) and its ``values``, ``text(lang)`` renders it in the asker's
    language; ``user_message`` is the English sentence (logs, tests). Raised with a sentence only, that sentence is
    shown in every language.
    """

    kind = "error"

    def __init__(
        self, user_message: str = "", *, detail: str | None = None, key: str = "", **values: object
    ) -> None:
        self.key = key
        self.values = values
        user_message = say(key, "en", **values) if key else user_message
        super().__init__(detail or user_message)
        self.detail = detail
        self.user_message = redact(user_message)

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by attributes, not by ``__init__`` arguments: the key and values survive a worker process."""
        return (_restore, (type(self), self.args), dict(self.__dict__))

    def text(self, lang: str) -> str:
        """The sentence to show, in ``lang`` where the catalogue has it."""
        return redact(say(self.key, lang, **self.values)) if self.key else self.user_message


def _restore(cls: type[UserFacingError], args: tuple[object, ...]) -> UserFacingError:
    """An unpickled ``UserFacingError`` of any subclass, whatever its ``__init__`` takes (state is set after)."""
    error = cls.__new__(cls)
    error.args = args
    return error


class InputError(UserFacingError):
    """The user's input (image, file, question) cannot be used."""

    kind = "bad_input"


class UnsupportedFile(InputError):
    kind = "unsupported_file"


class FileTooLarge(InputError):
    kind = "file_too_large"


class ImageRejected(InputError):
    """An image that cannot be decoded or violates a limit."""

    kind = "image_rejected"


class DocumentRejected(InputError):
    kind = "document_rejected"


class EmptyFile(InputError):
    """A zero-byte download."""

    kind = "empty_file"


class ImageTooLarge(ImageRejected):
    """The image's header claims more pixels than may be decoded (decompression-bomb guard)."""

    kind = "image_too_large"


class EncryptedDocument(DocumentRejected):
    """A PDF that needs a password to open."""

    kind = "encrypted_document"


class FileAccessDenied(UserFacingError):
    """The platform refused the download (bot not invited, missing scope)."""

    kind = "file_access"


class EngineError(UserFacingError):
    """Inference failed for this request; the engine itself keeps serving."""

    kind = "engine"


class Busy(EngineError):
    """The queue is full; nothing was queued."""

    kind = "busy"

    def __init__(self, queue_depth: int, queue_limit: int) -> None:
        super().__init__(key="error.busy", depth=queue_depth, limit=queue_limit)
        self.queue_depth = queue_depth
        self.queue_limit = queue_limit


class DeadlineExceeded(EngineError):
    kind = "timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(key="error.timeout", seconds=seconds)


class OutOfMemory(EngineError):
    kind = "oom"

    def __init__(self) -> None:
        super().__init__(key="error.oom")


class Cancelled(EngineError):
    kind = "cancelled"

    def __init__(self) -> None:
        super().__init__(key="error.cancelled")


class EngineUnavailable(EngineError):
    kind = "unavailable"

    def __init__(self, reason: Said = "") -> None:
        """``reason``: a ``bot.i18n`` Note (said in the asker's language) or a plain sentence (configuration
        problems, said in English only)."""
        if not reason or reason == say("error.not_running"):
            reason = note("error.not_running")
        super().__init__(key="error.unavailable", reason=reason)


class TooManyPending(Busy):
    """One user already has as many questions queued or running as allowed; this one was not queued."""

    kind = "too_many_pending"

    def __init__(self, pending: int, limit: int) -> None:
        EngineError.__init__(
            self,
            key="error.too_many_pending_one" if limit == 1 else "error.too_many_pending_many",
            detail=f"{pending} pending, limit {limit}",
            limit=limit,
        )
        self.queue_depth = pending
        self.queue_limit = limit


class ReplyGone(UserFacingError):
    """The place the answer was being written to is gone (a terminal reader that left): stop answering."""

    kind = "reply_gone"

    def __init__(self) -> None:
        super().__init__(key="error.reply_gone")
