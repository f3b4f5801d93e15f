"""Errors that carry a sentence fit to show the person who asked."""

from __future__ import annotations

from bot.redact import redact


class StartupError(Exception):
    """The bot cannot start as configured; the message names the setting to change (``peekbot`` exits with 2)."""


class UserFacingError(Exception):
    """An error whose ``user_message`` is shown in the chat (credentials masked, see ``bot.redact``)."""

    kind = "error"

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(detail or user_message)
        self.user_message = redact(user_message)


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
        super().__init__(
            f"I'm busy right now: {queue_depth} questions are waiting (the limit is {queue_limit}). "
            "Please ask again in a minute."
        )
        self.queue_depth = queue_depth
        self.queue_limit = queue_limit


class DeadlineExceeded(EngineError):
    kind = "timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"Sorry, answering took longer than {seconds:.0f} s, so I stopped. "
            "Please try a shorter question or a smaller image."
        )


class OutOfMemory(EngineError):
    kind = "oom"

    def __init__(self) -> None:
        super().__init__(
            "Sorry, the GPU ran out of memory on this question even after I shrank the images. "
            "Please send fewer or smaller images."
        )


class Cancelled(EngineError):
    kind = "cancelled"

    def __init__(self) -> None:
        super().__init__("This question was cancelled.")


class EngineUnavailable(EngineError):
    kind = "unavailable"

    def __init__(self, reason: str = "the model is not running") -> None:
        super().__init__(f"Sorry, I can't answer right now: {reason}.")


class TooManyPending(Busy):
    """One user already has as many questions queued or running as allowed; this one was not queued."""

    kind = "too_many_pending"

    def __init__(self, pending: int, limit: int) -> None:
        question = "question" if limit == 1 else "questions"
        EngineError.__init__(
            self,
            f"You already have {limit} {question} waiting; I'll take more once some are answered.",
            detail=f"{pending} pending, limit {limit}",
        )
        self.queue_depth = pending
        self.queue_limit = limit


class ReplyGone(UserFacingError):
    """The place the answer was being written to is gone (a terminal reader that left): stop answering."""

    kind = "reply_gone"

    def __init__(self) -> None:
        super().__init__("Nobody reads this answer any more.")
