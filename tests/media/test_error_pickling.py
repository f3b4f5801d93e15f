"""A refusal raised while opening a file keeps its catalogue key across a process boundary (pickling), so the
asker still gets it in their own language."""

from __future__ import annotations

import pickle

import pytest

from bot import errors
from bot.media.pool import FileTooExpensive
from bot.media.worker import PortableError

MEDIA_ERRORS = [
    errors.InputError, errors.UnsupportedFile, errors.FileTooLarge, errors.ImageRejected, errors.DocumentRejected,
    errors.EmptyFile, errors.ImageTooLarge, errors.EncryptedDocument, FileTooExpensive,
]  # fmt: skip


@pytest.mark.parametrize("error_class", MEDIA_ERRORS, ids=lambda c: c.__name__)
def test_a_media_error_keeps_its_key_values_and_detail_when_pickled(error_class: type[errors.UserFacingError]) -> None:
    error = error_class(key="media.file_empty", detail="zero bytes", named=" (a.png)")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is error_class
    assert (again.key, again.values, again.detail) == ("media.file_empty", {"named": " (a.png)"}, "zero bytes")
    assert again.user_message == "This file (a.png) is empty."
    assert again.text("zh") == "这个文件 (a.png)是空的。"
    assert str(again) == "zero bytes"


def test_an_error_with_its_own_arguments_and_a_plain_sentence_survive_pickling() -> None:
    pending = pickle.loads(pickle.dumps(errors.TooManyPending(3, 2)))
    assert (pending.queue_depth, pending.queue_limit) == (3, 2)
    assert pending.text("zh") == errors.TooManyPending(3, 2).text("zh")
    plain = pickle.loads(pickle.dumps(errors.ImageRejected("Custom sentence.")))
    assert plain.text("zh") == plain.user_message == "Custom sentence."


def test_what_a_worker_sends_back_rebuilds_with_its_key() -> None:
    error = errors.ImageTooLarge(key="media.image_pixels", named="", size="9×9", limit="1 megapixel")
    rebuilt = pickle.loads(pickle.dumps(PortableError.of(error))).rebuild()
    assert type(rebuilt) is errors.ImageTooLarge
    assert rebuilt.text("en") == "This image is 9×9 pixels; the limit is 1 megapixel."
    assert rebuilt.text("zh") == "这张图片有 9×9 像素；上限为 1 megapixel。"
