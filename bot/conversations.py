"""Recent turns per conversation (thread), so follow-up questions have context."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from bot.engine import ChatTurn
from bot.types import ConversationKey


class ConversationMemory:
    """Keeps the last ``max_turns`` turns of at most ``max_conversations`` threads, for ``ttl_s``."""

    def __init__(self, max_turns: int = 6, max_conversations: int = 10_000, ttl_s: float = 7 * 24 * 3600) -> None:
        self._max_turns = max_turns
        self._max_conversations = max_conversations
        self._ttl_s = ttl_s
        self._threads: OrderedDict[ConversationKey, tuple[float, deque[ChatTurn]]] = OrderedDict()

    def history(self, key: ConversationKey) -> list[ChatTurn]:
        entry = self._threads.get(key)
        if entry is None or entry[0] + self._ttl_s < time.time():
            return []
        return list(entry[1])

    def record(self, key: ConversationKey, question: str, answer: str) -> None:
        _, turns = self._threads.pop(key, (0.0, deque(maxlen=self._max_turns)))
        turns.append(ChatTurn("user", question))
        turns.append(ChatTurn("assistant", answer))
        self._threads[key] = (time.time(), turns)
        while len(self._threads) > self._max_conversations:
            self._threads.popitem(last=False)

    def reset(self, key: ConversationKey) -> bool:
        return self._threads.pop(key, None) is not None

    def expire(self) -> int:
        cutoff = time.time() - self._ttl_s
        stale = [key for key, (stamp, _) in self._threads.items() if stamp < cutoff]
        for key in stale:
            del self._threads[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._threads)
