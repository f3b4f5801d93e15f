"""A conversation's memory in the state store: the turns and files offered to the model with the next question.

Every replica reads the same store, so a follow-up is answered with the thread's earlier questions, answers and
files whichever replica took it, and a restart forgets nothing. ``StoredConversations`` is also the conversation
directory adapters consult (``bot.types.ConversationDirectory``): a conversation with stored turns is one the bot
answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.engine import ChatTurn
from bot.store.codec import decode_file, encode_file
from bot.types import ConversationKey, FileRef

if TYPE_CHECKING:
    from bot.questions import AnsweredQuestion
    from bot.store.base import Store

logger = logging.getLogger(__name__)

CONTEXT_TURNS = 12
"""Turns (questions and answers) of a conversation offered to the model; the budget may drop older ones."""
CONTEXT_FILES = 16
"""Files of a conversation offered with a follow-up question."""


@dataclass(frozen=True, slots=True)
class EarlierFile:
    """A file the conversation's store remembers and when it was first kept (with the question that first used
    it: ``StoredConversations.remember`` keeps a question's files just before its turns)."""

    file: FileRef
    stored_at: float


class StoredConversations:
    """The conversations' turns and files in ``store.conversations``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def answered_before(self, conversation: ConversationKey) -> bool:
        return bool(await self._store.conversations.turns(str(conversation), 1))

    async def history(self, conversation: str) -> list[ChatTurn]:
        """The newest :data:`CONTEXT_TURNS` turns, oldest first."""
        turns = await self._store.conversations.turns(conversation, CONTEXT_TURNS)
        return [
            ChatTurn("assistant" if t.role == "assistant" else "user", t.text, stored_at=t.created_at) for t in turns
        ]

    async def files(self, conversation: str) -> list[EarlierFile]:
        """The newest :data:`CONTEXT_FILES` files posted in the conversation (unreadable references are skipped)."""
        files: list[EarlierFile] = []
        for stored in await self._store.conversations.files(conversation, CONTEXT_FILES):
            try:
                files.append(EarlierFile(decode_file(stored.file_ref), stored.created_at))
            except Exception:
                logger.warning("skipped an unreadable stored file reference")
        return files

    async def remember(self, conversation: str, result: AnsweredQuestion, message_id: str) -> None:
        """Store the files the question used, then its question and answer turns (in that order: a file's time tells
        which question first showed it to the model); a store error is logged."""
        try:
            for file, content_hash in result.files_seen:
                await self._store.conversations.add_file(conversation, encode_file(file), content_hash)
            await self._store.conversations.add_turn(conversation, "user", result.question, message_id=message_id)
            await self._store.conversations.add_turn(conversation, "assistant", result.answer, message_id=message_id)
        except Exception:
            logger.exception("could not store the conversation's turn")
