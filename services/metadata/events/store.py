"""Outbox queries for the delivery worker and the EventsService: claim, settle, list, replay, purge.

Claiming is one UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING on PostgreSQL
(concurrent workers skip each other's rows instead of waiting) and the same statement inside
BEGIN IMMEDIATE on SQLite (`Access.transaction`: one writer at a time). The claim pushes
`next_attempt_at` one lease ahead, so a worker that dies after claiming delays its rows by the lease
and another worker then sends them (at least once); a worker that stops hands its claim back
(`release`), so nothing waits for the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select, update

from services.metadata.events.tables import DEAD, DELIVERED, PENDING
from services.metadata.events.tables import event_outbox as o
from services.metadata.store.access import Kind

if TYPE_CHECKING:
    from services.metadata.store.engine import Database


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    body: str
    attempts: int
    # The lease end the claim wrote (`next_attempt_at`): the row is still this claim's while it holds it.
    lease_until: datetime


class OutboxStore:
    def __init__(self, database: Database) -> None:
        # Claims and state changes are async transactions on the primary; listings and counts
        # (admin, metrics) are READs, which may come from the replica (store/access.py decides).
        self._access = database.access

    async def claim(self, endpoint: str, limit: int, lease_seconds: float) -> list[Claimed]:
        """Due pending rows of `endpoint` (oldest first, at most `limit`), leased to the caller."""
        now = datetime.now(UTC)
        lease_until = now + timedelta(seconds=lease_seconds)
        due = (
            select(o.c.id)
            .where(o.c.state == PENDING, o.c.endpoint == endpoint, o.c.next_attempt_at <= now)
            .order_by(o.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(o)
            .where(o.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=lease_until)
            .returning(o.c.id, o.c.body, o.c.attempts)
        )
        async with self._access.transaction() as conn:
            rows = list(await conn.execute(statement))
        rows.sort(key=lambda row: row[0])
        return [Claimed(id=row[0], body=row[1], attempts=row[2], lease_until=lease_until) for row in rows]

    async def release(self, batch: list[Claimed]) -> None:
        """Hands back the rows of a claimed batch that the claim still holds (pending, its lease
        end unchanged): due now, the attempt not counted. A row settled meanwhile (delivered, or
        failed with its backoff) or claimed again by another worker after the lease ran out is
        left as it is."""
        if not batch:
            return
        async with self._access.transaction() as conn:
            await conn.execute(
                update(o).where(o.c.id.in_([row.id for row in batch]), o.c.state == PENDING,
                                o.c.next_attempt_at == batch[0].lease_until)
                .values(next_attempt_at=datetime.now(UTC))
            )

    async def delivered(self, ids: list[int]) -> None:
        async with self._access.transaction() as conn:
            await conn.execute(
                update(o).where(o.c.id.in_(ids)).values(
                    state=DELIVERED, delivered_at=datetime.now(UTC), attempts=o.c.attempts + 1, last_error=None,
                )
            )

    async def failed(self, rows: list[Claimed], error: str, *, max_attempts: int, base: float, cap: float) -> int:
        """Counts the attempt; dead after `max_attempts`, else due again after the backoff
        min(cap, base * 2**(attempts-1)). Returns how many rows went dead."""
        now = datetime.now(UTC)
        dead = 0
        statement = update(o).where(o.c.id == bindparam("row_id")).values(
            state=bindparam("new_state"), attempts=bindparam("new_attempts"),
            next_attempt_at=bindparam("due"), last_error=bindparam("error"),
        )
        params = []
        for row in rows:
            attempts = row.attempts + 1
            if attempts >= max_attempts:
                state, due = DEAD, now
                dead += 1
            else:
                state, due = PENDING, now + timedelta(seconds=min(cap, base * 2 ** (attempts - 1)))
            params.append({"row_id": row.id, "new_state": state, "new_attempts": attempts, "due": due,
                           "error": error[:1000]})
        async with self._access.transaction() as conn:
            await conn.execute(statement, params)
        return dead

    async def list(self, *, state: str, endpoint: str, limit: int, before_id: int) -> list[Any]:
        query = select(o).order_by(o.c.id.desc()).limit(limit)
        if state:
            query = query.where(o.c.state == state)
        if endpoint:
            query = query.where(o.c.endpoint == endpoint)
        if before_id:
            query = query.where(o.c.id < before_id)
        async with self._access.connection(Kind.READ) as conn:
            return list(await conn.execute(query))

    async def replay(self, *, row_id: int, dead: bool, endpoint: str) -> int:
        """Pending again with a fresh attempt budget: row `row_id`, or (dead) every dead row."""
        statement = update(o).values(state=PENDING, attempts=0, next_attempt_at=datetime.now(UTC),
                                     delivered_at=None)
        if row_id:
            statement = statement.where(o.c.id == row_id)
        elif dead:
            statement = statement.where(o.c.state == DEAD)
        else:
            return 0
        if endpoint:
            statement = statement.where(o.c.endpoint == endpoint)
        async with self._access.transaction() as conn:
            return (await conn.execute(statement)).rowcount

    async def purge_delivered(self, older_than_seconds: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        async with self._access.transaction() as conn:
            result = await conn.execute(delete(o).where(o.c.state == DELIVERED, o.c.delivered_at < cutoff))
            return result.rowcount

    async def counts(self) -> dict[tuple[str, str], int]:
        """Rows by (endpoint, state), for metrics."""
        query = select(o.c.endpoint, o.c.state, func.count()).group_by(o.c.endpoint, o.c.state)
        async with self._access.connection(Kind.READ) as conn:
            return {(row[0], row[1]): row[2] for row in await conn.execute(query)}
