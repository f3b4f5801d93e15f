"""The audit log: one record per question, no content (lengths, hashes, latency, outcome), and its summary."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bot.stats import percentile
from bot.store.base import ADMIN_EVENTS, AuditRecord, AuditSummary
from bot.store.sqlite.database import SQLitePart, placeholders

LATENCY_OUTCOMES = ("answered",)
"""Outcomes whose latency goes into the summary's mean and p95 (refusals and cache hits would hide slow answers)."""

QUESTIONS_ONLY = f"outcome NOT IN ({placeholders(len(ADMIN_EVENTS))})"
"""The summary counts questions, not admins' changes (which the audit log records too)."""


class SQLiteAudit(SQLitePart):
    """One record per question: no content, only lengths, hashes, latency and outcome."""

    async def record(self, record: AuditRecord) -> None:
        values = (
            record.job_id,
            record.platform,
            record.user,
            record.conversation,
            json.dumps(list(record.image_hashes)),
            record.question_chars,
            record.answer_chars,
            record.latency_s,
            record.outcome,
            record.created_at or self._clock(),
        )
        await self._transaction(
            lambda conn: conn.execute(
                "INSERT INTO audit (job_id, platform, user, conversation, image_hashes, question_chars, "
                "answer_chars, latency_s, outcome, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                values,
            )
        )

    async def summary(self, since: float, top: int = 5) -> AuditSummary:
        """Questions since ``since``: counts by outcome and platform, top users, latency of answered ones."""

        def summarise() -> AuditSummary:
            conn = self._db
            by_outcome = dict(
                conn.execute(
                    f"SELECT outcome, COUNT(*) FROM audit WHERE created_at >= ? AND {QUESTIONS_ONLY} "
                    "GROUP BY outcome ORDER BY 2 DESC, 1",
                    (since, *ADMIN_EVENTS),
                ).fetchall()
            )
            by_platform = dict(
                conn.execute(
                    f"SELECT platform, COUNT(*) FROM audit WHERE created_at >= ? AND {QUESTIONS_ONLY} "
                    "GROUP BY platform ORDER BY 2 DESC, 1",
                    (since, *ADMIN_EVENTS),
                ).fetchall()
            )
            top_users = [
                (row[0], row[1])
                for row in conn.execute(
                    f"SELECT user, COUNT(*) FROM audit WHERE created_at >= ? AND {QUESTIONS_ONLY} "
                    "GROUP BY user ORDER BY 2 DESC, 1 LIMIT ?",
                    (since, *ADMIN_EVENTS, max(0, top)),
                )
            ]
            latencies = [
                row[0]
                for row in conn.execute(
                    "SELECT latency_s FROM audit WHERE created_at >= ? "
                    f"AND outcome IN ({placeholders(len(LATENCY_OUTCOMES))})",
                    (since, *LATENCY_OUTCOMES),
                )
            ]
            return AuditSummary(
                since=since,
                questions=sum(by_outcome.values()),
                by_outcome=by_outcome,
                by_platform=by_platform,
                top_users=top_users,
                mean_latency_s=sum(latencies) / len(latencies) if latencies else None,
                p95_latency_s=percentile(latencies, 0.95),
            )

        return await self._run(summarise)

    async def count_for_user(self, user: str, since: float, outcomes: Sequence[str] = ("answered", "cached")) -> int:
        wanted = list(outcomes)
        if not wanted:
            return 0
        rows = await self._query(
            "SELECT COUNT(*) FROM audit WHERE user = ? AND created_at >= ? "
            f"AND outcome IN ({placeholders(len(wanted))})",
            (user, since, *wanted),
        )
        return int(rows[0][0])

    async def expire_audit(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return await self._transaction(
            lambda conn: conn.execute("DELETE FROM audit WHERE created_at < ?", (cutoff,)).rowcount
        )
