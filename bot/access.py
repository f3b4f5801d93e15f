"""Who may talk to peekbot where: workspace, channel and user allowlists and the access mode.

Allowlist entries are ``platform:id``. A workspace matches ``platform:conversation.workspace`` (Slack team id,
Feishu tenant key), a channel ``platform:conversation.channel``, a user ``user.key``; an empty list lets
everyone in. The workspace list also checks the sender's own organisation (``user.org``) when the adapter knows
it: a guest from another company in a shared channel (Slack Connect) or an external Feishu chat is refused unless
their workspace or tenant is listed too. The channel list limits group chats only: a direct message is governed
by the user list. Admins are allowed users, and their commands pass every check but the workspace allowlist.

A refused person hears the refusal at most once per ``REFUSAL_REPEAT_S`` (the application stays silent for the
others and still audits them), so a refused user cannot make the bot post without limit.

peekbot never speaks up in a group when nobody addressed it: a refused group message that neither mentions
the bot nor is a platform command (e.g. a thread follow-up without a mention) gets a silent refusal.

Example::

    policy = AccessPolicy(settings.access, settings.core.is_admin)
    refusal = policy.check(message)
    if refusal is not None:
        if not refusal.silent:
            await reply.fail(refusal.reply)
        return
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from bot.commands import looks_like_command
from bot.settings import AccessSettings
from bot.types import ChatType, IncomingMessage

logger = logging.getLogger(__name__)

DEFAULT_CONTACT = "the people who run peekbot"
DM_ONLY_REPLY = "I only answer in direct messages here — send me a DM."
MENTION_ONLY_REPLY = "Mention me to ask me something here."
REFUSAL_REPEAT_S = 60.0
"""A refused (or rate-limited) person is told why at most once in this many seconds; later refusals are silent."""

_WORKSPACE_WORDS = {"feishu": "organization", "lark": "organization"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not answered, and what (if anything) to say in the chat.

    ``reason`` is one of workspace_not_allowed, org_not_allowed (the sender's own organisation),
    channel_not_allowed, user_not_allowed, dm_only, mention_only.
    ``silent`` means: say nothing, the message was not meant for peekbot.
    """

    reason: str
    reply: str
    silent: bool = False


class AccessPolicy:
    """Decides whether a message may be answered (see the module docstring for the rules).

    ``admins`` is a collection of user keys or a predicate on a user key. Messages from
    ``trusted_platforms`` (the local console) are always allowed.
    """

    def __init__(
        self,
        settings: AccessSettings,
        admins: Collection[str] | Callable[[str], bool] = (),
        *,
        trusted_platforms: Collection[str] = ("console",),
    ) -> None:
        self.settings = settings
        self._is_admin: Callable[[str], bool] = admins if callable(admins) else frozenset(admins).__contains__
        self._workspaces = frozenset(settings.allowed_workspaces)
        self._channels = frozenset(settings.allowed_channels)
        self._users = frozenset(settings.allowed_users)
        self._trusted = frozenset(trusted_platforms)
        self._contact = settings.access_contact.strip() or DEFAULT_CONTACT

    def check(self, message: IncomingMessage, *, is_command: bool | None = None) -> Refusal | None:
        """None when the message may be answered, else the refusal. ``is_command`` defaults to the
        same test the application uses (a platform command or text such as ``/status``)."""
        refusal = self._refusal(message, looks_like_a_command(message) if is_command is None else is_command)
        if refusal is None:
            return None
        addressed = message.chat_type is ChatType.DIRECT or message.mentions_bot or message.is_command
        if not addressed and not refusal.silent:
            refusal = Refusal(refusal.reason, refusal.reply, silent=True)
        logger.info(
            "refused %s from %s in %s: %s%s",
            message.message_id,
            message.user.key,
            message.conversation,
            refusal.reason,
            " (silently)" if refusal.silent else "",
        )
        return refusal

    def _refusal(self, message: IncomingMessage, is_command: bool) -> Refusal | None:
        platform = message.platform
        if platform in self._trusted:
            return None
        conversation = message.conversation
        if self._workspaces and f"{platform}:{conversation.workspace}" not in self._workspaces:
            return Refusal("workspace_not_allowed", self._workspace_reply(platform))
        org = message.user.org
        if self._workspaces and org and f"{platform}:{org}" not in self._workspaces:
            return Refusal("org_not_allowed", self._org_reply(platform))
        is_admin = self._is_admin(message.user.key)
        if is_admin and is_command:
            return None
        if self._users and not is_admin and message.user.key not in self._users:
            return Refusal(
                "user_not_allowed",
                f"Sorry, you're not on the list of people who can use peekbot here. "
                f"Please ask {self._contact} for access.",
            )
        group = message.chat_type is ChatType.GROUP
        if group and self._channels and f"{platform}:{conversation.channel}" not in self._channels:
            return Refusal(
                "channel_not_allowed",
                "I'm not set up to answer in this channel. Send me a direct message instead, "
                f"or ask {self._contact} to enable me here.",
            )
        mode = self.settings.access_mode
        if group and mode == "dm_only":
            return Refusal("dm_only", DM_ONLY_REPLY)
        if group and mode == "mention_only" and not (message.mentions_bot or message.is_command):
            return Refusal("mention_only", MENTION_ONLY_REPLY, silent=True)
        return None

    def _workspace_reply(self, platform: str) -> str:
        word = _WORKSPACE_WORDS.get(platform, "workspace")
        return f"Sorry, this {word} isn't set up for peekbot. Please ask {self._contact} to enable it."

    def _org_reply(self, platform: str) -> str:
        word = _WORKSPACE_WORDS.get(platform, "workspace")
        return (
            f"Sorry, I only answer people from the {word}s I'm set up for, and yours isn't one of them. "
            f"Please ask {self._contact} if you need access."
        )


def looks_like_a_command(message: IncomingMessage) -> bool:
    """The application's own test: a platform command (slash command) or text such as ``/status``."""
    return message.is_command or looks_like_command(message.text)
