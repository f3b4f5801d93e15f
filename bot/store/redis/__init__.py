"""A Redis-backed store for several replicas of the bot (``PEEKBOT_STORE_URL=redis://host:6379/0``).

Replicas must agree on what was already seen (dedupe keys), on who answers which question (the job journal
and its leases), on each conversation's turns and files, on cached answers, on the controls (the pause flag,
rate-limit buckets), on the ratings of answers and on each channel's instructions: those live in Redis.
Documents (page text and the full-text index) and the audit log stay in each replica's LOCAL SQLite file:
page text is a cache that any replica can rebuild from the conversation's files, and every replica keeps
the audit of the questions it answered. The per-user count of answered questions (the daily quota) is shared.

Keys (all under ``key_prefix``):

- ``dedupe:<key>``: a string with a TTL (``SET NX PX``).
- ``job:<id>``: a hash per job; ``jobs:unfinished``: sorted set of unfinished job ids scored by lease expiry;
  ``jobs:finished``: sorted set of finished job ids scored by finish time (finished jobs also get a TTL).
  Accepting, marking, renewing and taking over run as Lua scripts with the server's clock, so two replicas
  never take the same job and clock drift between hosts does not matter.
- ``conv:<conversation>:turns`` (list, capped), ``conv:<conversation>:files`` (hash keyed by content hash),
  ``conv:<conversation>:answers`` (set of cached answer keys), ``conv:<conversation>:answer:<key>`` (string
  with a TTL); ``conversations``: sorted set of conversations scored by last activity. Activity refreshes
  the conversation keys' TTL, so an idle conversation disappears even when nothing calls the expiry job.
- ``asked:<user>``: sorted set of the user's answered question ids scored by time (last two days), for quotas.
- ``control:<name>``: a shared value such as the pause flag; ``bucket:<name>``: a rate-limit token bucket (hash of
  tokens and time, a Lua script with the server's clock takes tokens; it expires once full again).
- ``instructions:<channel>``: a hash (text, set_by, set_at) of a channel's instructions; no TTL (kept until an
  admin clears them).
- ``ratings``: hash from a rating's id (JSON ``[job id, user]``) to the rating as JSON; ``ratings:by-time``: sorted
  set of the same ids scored by when they were given (summaries, expiry by ``expire_ratings``).

TTLs come from the settings (``open_store``): finished jobs are kept as long as dedupe keys
(``PEEKBOT_DEDUPE_TTL_S``), an idle conversation's keys for ``PEEKBOT_CONVERSATION_RETENTION_DAYS``, cached answers
and dedupe keys for the TTL their callers pass.

The take-over script reads job hashes whose names it builds from the prefix, so use a single Redis server
(or a primary with replicas/Sentinel), not Redis Cluster.

One module per job: ``scripts`` (the Lua scripts), ``keys`` (key names), ``client`` (the client library and the
parts' base), the parts ``jobs`` (dedupe, journal), ``conversations`` (turns, files, cached answers), ``controls``,
``ratings`` and ``audit``, and ``store`` (:class:`RedisStore`: the connection and the parts on it).
"""

from __future__ import annotations

from bot.store.redis.client import StoreUnavailable
from bot.store.redis.store import RedisStore

__all__ = ["RedisStore", "StoreUnavailable"]
