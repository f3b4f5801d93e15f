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
from bot.i18n import say
from bot.settings import AccessSettings
from bot.types import ChatType, IncomingMessage

logger = logging.getLogger(__name__)

DEFAULT_CONTACT = say("access.contact")
DM_ONLY_REPLY = say("access.dm_only")
MENTION_ONLY_REPLY = say("access.mention_only")
REFUSAL_REPEAT_S = 60.0
"""A refused (or rate-limited) person is told why at most once in this many seconds; later refusals are silent."""

_WORKSPACE_WORDS = {"feishu": "access.word_organization", "lark": "access.word_organization"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not answered, and what (if anything) to say in the chat.

    ``reason`` is one of workspace_not_allowed, org_not_allowed (the sender's own organisation),
    channel_not_allowed, user_not_allowed, dm_only, mention_only.
    ``silent`` means: say nothing, the message was not meant for peekbot. ``reply`` is the English sentence;
    ``text(lang)`` says it in the asker's language (``bot.i18n``).
    """

    reason: str
    reply: str
    silent: bool = False
    key: str = ""
    values: tuple[tuple[str, str], ...] = ()
    """The ``bot.i18n`` key and values of ``reply``; values that are catalogue keys themselves end in ``@``."""

    @classmethod
    def of(cls, reason: str, key: str, *, silent: bool = False, **values: str) -> Refusal:
        """The refusal saying catalogue sentence ``key``; a value ``"access.word_…@"`` is itself translated."""
        refusal = cls(reason, "", silent, key, tuple(values.items()))
        return cls(reason, refusal.text("en"), silent, key, refusal.values)

    def text(self, lang: str) -> str:
        """The sentence in ``lang`` (``reply`` when it has no catalogue key)."""
        if not self.key:
            return self.reply
        values = {name: say(value[:-1], lang) if value.endswith("@") else value for name, value in self.values}
        return say(self.key, lang, **values)


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
        self._contact = settings.access_contact.strip() or "access.contact@"

    def check(self, message: IncomingMessage, *, is_command: bool | None = None) -> Refusal | None:
        """None when the message may be answered, else the refusal. ``is_command`` defaults to the
        same test the application uses (a platform command or text such as ``/status``)."""
        refusal = self._refusal(message, looks_like_a_command(message) if is_command is None else is_command)
        if refusal is None:
            return None
        addressed = message.chat_type is ChatType.DIRECT or message.mentions_bot or message.is_command
        if not addressed and not refusal.silent:
            refusal = Refusal(refusal.reason, refusal.reply, True, refusal.key, refusal.values)
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
            return Refusal.of("workspace_not_allowed", "access.workspace", **self._where(platform))
        org = message.user.org
        if self._workspaces and org and f"{platform}:{org}" not in self._workspaces:
            return Refusal.of("org_not_allowed", "access.org", **self._where(platform))
        is_admin = self._is_admin(message.user.key)
        if is_admin and is_command:
            return None
        if self._users and not is_admin and message.user.key not in self._users:
            return Refusal.of("user_not_allowed", "access.user", contact=self._contact)
        group = message.chat_type is ChatType.GROUP
        if group and self._channels and f"{platform}:{conversation.channel}" not in self._channels:
            return Refusal.of("channel_not_allowed", "access.channel", contact=self._contact)
        mode = self.settings.access_mode
        if group and mode == "dm_only":
            return Refusal.of("dm_only", "access.dm_only")
        if group and mode == "mention_only" and not (message.mentions_bot or message.is_command):
            return Refusal.of("mention_only", "access.mention_only", silent=True)
        return None

    def _where(self, platform: str) -> dict[str, str]:
        """The values of a workspace refusal: the platform's word for a workspace, and whom to ask."""
        return {"word": _WORKSPACE_WORDS.get(platform, "access.word_workspace") + "@", "contact": self._contact}


def looks_like_a_command(message: IncomingMessage) -> bool:
    """The application's own test: a platform command (slash command) or text such as ``/status``."""
    return message.is_command or looks_like_command(message.text)
