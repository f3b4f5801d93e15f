"""An adapter on local files whose answers carry buttons (ratings, Stop): the core's answer-action callback, pressed
as a platform would report a click."""

from __future__ import annotations

from bot.types import AnswerAction, AnswerActionHandler, AnswerActionKind, IncomingMessage, User
from tests.support.helpers import LocalFilesAdapter

ADA = User("local", "U1", "Ada")
"""The person who asks by default (``tests.support.helpers.message`` sends as ``local:U1``)."""


class ButtonsAdapter(LocalFilesAdapter):
    """Local files, plus buttons on the answers (``ReportsAnswerActions``): ``click`` presses one."""

    def __init__(self) -> None:
        super().__init__()
        self.on_action: AnswerActionHandler | None = None

    def use_answer_action_handler(self, handler: AnswerActionHandler) -> None:
        self.on_action = handler

    async def click(self, question: IncomingMessage, kind: AnswerActionKind, user: User = ADA, reason: str = "") -> str:
        """Press ``kind`` under the answer to ``question``; returns the sentence the core has for ``user``."""
        assert self.on_action is not None, "the core did not hand over its callback before start"
        action = AnswerAction(question.platform, question.message_id, user, kind, reason, question.conversation)
        return await self.on_action(action)
