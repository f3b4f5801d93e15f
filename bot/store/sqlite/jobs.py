"""Dedupe keys and the job journal: what was already seen, and who answers which accepted question.

``claim``, ``accept`` and ``take_over`` run in ``BEGIN IMMEDIATE`` transactions, so several processes sharing one
file hand each key and each job to exactly one of them. ``mark`` with an owner is one ``UPDATE … WHERE owner = ?``:
a process that lost a job's lease cannot finish it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.store.base import Job, JobState
from bot.store.sqlite.database import SQLitePart

log = logging.getLogger(__name__)

_UNFINISHED = (JobState.ACCEPTED.value, JobState.RUNNING.value)
_FINISHED = (JobState.ANSWERED.value, JobState.FAILED.value)


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        platform=row["platform"],
        conversation=row["conversation"],
        user=row["user"],
        message=row["message"],
        state=JobState(row["state"]),
        reply_state=json.loads(row["reply_state"] or "{}"),
        attempts=row["attempts"],
        owner=row["owner"],
        lease_until=row["lease_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        error=row["error"],
    )


class SQLiteDedupe(SQLitePart):
    """Dedupe keys with an expiry time."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        now = self._clock()

        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO dedupe_keys (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE dedupe_keys.expires_at <= ?",
                (key, now + ttl_s, now),
            )
            return cursor.rowcount == 1

        return await self._transaction(claim)

    async def expire_keys(self) -> int:
        """Forget expired dedupe keys (and expired cached answers); returns how many keys."""
        now = self._clock()

        def expire(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM dedupe_keys WHERE expires_at <= ?", (now,)).rowcount
            conn.execute("DELETE FROM answers WHERE expires_at <= ?", (now,))
            return removed

        return await self._transaction(expire)


class SQLiteJournal(SQLitePart):
    """The job journal: accepted questions, their state and who holds their lease."""

    async def accept(self, job: Job, owner: str, lease_s: float) -> bool:
        now = self._clock()
        row = (
            job.job_id,
            job.platform,
            job.conversation,
            job.user,
            job.message,
            JobState(job.state).value,
            json.dumps(dict(job.reply_state)),
            job.attempts,
            owner,
            now + lease_s,
            job.created_at or now,
            now,
            job.error,
        )

        def accept(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO jobs (job_id, platform, conversation, user, message, state, reply_state, attempts, "
                "owner, lease_until, created_at, updated_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (job_id) DO NOTHING",
                row,
            )
            return cursor.rowcount == 1

        return await self._transaction(accept)

    async def mark(
        self,
        job_id: str,
        state: JobState,
        *,
        owner: str | None = None,
        reply_state: dict[str, str] | None = None,
        error: str = "",
    ) -> bool:
        now = self._clock()
        encoded = json.dumps(dict(reply_state)) if reply_state is not None else None
        sql = (
            "UPDATE jobs SET state = ?, updated_at = ?, error = ?, reply_state = COALESCE(?, reply_state) "
            "WHERE job_id = ?"
        )
        params: tuple[Any, ...] = (JobState(state).value, now, error, encoded, job_id)
        if owner is not None:  # one statement: the owner check and the change cannot be separated
            sql += f" AND owner = ? AND state IN {_UNFINISHED!r}"
            params += (owner,)

        def mark(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        if await self._transaction(mark):
            return True
        if owner is None:
            log.warning("state store: mark %s on unknown job %s", JobState(state).value, job_id)
        else:
            log.info("state store: job %s is no longer %s's; not marked %s", job_id, owner, JobState(state).value)
        return False

    async def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> set[str]:
        if not job_ids:
            return set()
        ids = list(dict.fromkeys(job_ids))
        until = self._clock() + lease_s

        def renew(conn: sqlite3.Connection) -> set[str]:
            sql = f"UPDATE jobs SET lease_until = ? WHERE job_id = ? AND owner = ? AND state IN {_UNFINISHED!r}"
            return {job_id for job_id in ids if conn.execute(sql, (until, job_id, owner)).rowcount == 1}

        return await self._transaction(renew)

    async def take_over(self, owner: str, lease_s: float, *, include_live: bool = False) -> list[Job]:
        now = self._clock()
        until = now + lease_s

        def take(conn: sqlite3.Connection) -> list[Job]:
            # Under BEGIN IMMEDIATE no other process can change these rows between the SELECT and the UPDATE.
            sql = f"SELECT * FROM jobs WHERE state IN {_UNFINISHED!r}"
            params: tuple[Any, ...] = ()
            if not include_live:
                sql += " AND lease_until <= ?"
                params = (now,)
            jobs = [_job_from_row(row) for row in conn.execute(sql + " ORDER BY created_at, job_id", params)]
            conn.executemany(
                "UPDATE jobs SET owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE job_id = ?",
                [(owner, until, now, job.job_id) for job in jobs],
            )
            return [
                replace(job, owner=owner, lease_until=until, attempts=job.attempts + 1, updated_at=now) for job in jobs
            ]

        jobs = await self._transaction(take)
        if jobs:
            log.info("state store: %s took over %d unfinished job(s)", owner, len(jobs))
        return jobs

    async def get(self, job_id: str) -> Job | None:
        rows = await self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    async def unfinished(self) -> list[Job]:
        rows = await self._query(f"SELECT * FROM jobs WHERE state IN {_UNFINISHED!r} ORDER BY created_at, job_id")
        return [_job_from_row(row) for row in rows]

    async def pending_for(self, user: str) -> int:
        rows = await self._query(f"SELECT COUNT(*) FROM jobs WHERE user = ? AND state IN {_UNFINISHED!r}", (user,))
        return int(rows[0][0])

    async def expire_jobs(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return await self._transaction(
            lambda conn: (
                conn.execute(f"DELETE FROM jobs WHERE state IN {_FINISHED!r} AND updated_at < ?", (cutoff,)).rowcount
            )
        )
