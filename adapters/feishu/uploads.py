"""A long answer posted as a file under the question: uploaded through ``im/v1/files``, then sent as a file message.

The upload (``upload``) gives a ``file_key`` nobody sees yet; the kit journals it before the file message
(``share``) shows it. The file message goes out under an idempotency key made from the question and the
``file_key``, so a process that dies after sending it and before journaling that leaves nothing to repeat: the next
one sends it under the same key, and Feishu answers with the message it sent the first time (within the hour it
remembers a key). Needs the ``im:resource`` permission (upload) besides ``im:message:send_as_bot``.
"""

from __future__ import annotations

import hashlib
import io
import json

from lark_oapi.api.im.v1 import CreateFileRequest, CreateFileRequestBody, CreateFileResponse

from adapters.feishu.rest import FeishuRest, answered

FILE_TYPE = "stream"
"""Feishu's file type for anything that is not a PDF, an Office document or a media file (Markdown is text)."""


async def upload(rest: FeishuRest, name: str, data: bytes) -> str:
    """Upload ``data`` as the file ``name``; returns its ``file_key`` (not shown in any chat yet)."""
    body = CreateFileRequestBody.builder().file_type(FILE_TYPE).file_name(name).file(io.BytesIO(data)).build()
    request = CreateFileRequest.builder().request_body(body).build()
    what = f"uploading {name}"
    return answered(await rest.call(what, request, CreateFileResponse), what, "file_key")


async def share(rest: FeishuRest, message_id: str, file_key: str, *, in_thread: bool) -> None:
    """Reply to the question ``message_id`` with the uploaded file (once per ``file_key``, see above)."""
    key = hashlib.sha1(f"{message_id}:answer-file:{file_key}".encode()).hexdigest()[:32]
    await rest.reply(
        message_id, msg_type="file", content=json.dumps({"file_key": file_key}), in_thread=in_thread, uuid=key
    )
