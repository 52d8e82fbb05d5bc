"""`ChangeLog`: appends changes inside the writer's transaction, reads them back by position.

Ordering: on PostgreSQL every appending transaction first takes one transaction-scoped advisory
lock, so positions are drawn and committed one transaction at a time, and a row becomes visible
only after every row below it did (the lock is released after the commit is visible). Readers can
therefore resume from "the last position I saw" without ever missing a late commit below it.
On SQLite writers are serialized anyway (BEGIN IMMEDIATE). Appending transactions are short
(an account change), so the lock costs nothing measurable; it is the price of a feed that needs no
gap tracking.

In the same transaction PostgreSQL gets `NOTIFY lading_changes` (delivered at commit) so every
replica's `ChangeHub` wakes at once; the appender also calls `committed()` after its commit to wake
this process's hub (SQLite has no NOTIFY).

Retention: `prune` deletes changes older than the retention and records the highest position
deleted (`registry_flags` row `change_feed_pruned_through`): a subscriber that resumes from below
it has missed changes and must rebuild (ChangeService's `reset`).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metadata.changes.tables import changes
from services.metadata.gc.tables import registry_flags
from services.metadata.store.access import Kind
from services.metadata.store.dialect import upsert
from services.metadata.store.engine import Database

# PostgreSQL NOTIFY channel of the feed.
NOTIFY_CHANNEL = "lading_changes"
# Any fixed 64-bit number, the same on every replica: the advisory lock of appending transactions
# (distinct from the migration lock in services/metadata/migrations).
_APPEND_LOCK_KEY = 0x6C6164696E6743  # "ladingC"
PRUNED_THROUGH_FLAG = "change_feed_pruned_through"
# Changes this process committed and keeps in memory for the streams (`recent_after`), at most.
_RECENT = 1024


@dataclass(frozen=True, slots=True)
class StoredChange:
    position: int
    kind: str
    subject: str
    body: Mapping[str, Any]
    created_at: datetime


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ChangeLog:
    def __init__(self, database: Database) -> None:
        self._db = database
        # Reads are PRIMARY_READs (store/access.py): never a lagging replica, which would make a
        # subscriber look ahead of the head.
        self._listeners: list[Callable[[int | None], None]] = []
        self._set_flag = upsert(database.dialect, registry_flags, ["name"], {"value": None})
        # Built once (appends are on every tag push's path); each append only binds values.
        self._insert = insert(changes).values(
            kind=bindparam("kind"), subject=bindparam("subject"), body=bindparam("body"),
            created_at=bindparam("created_at"))
        # What `append_sync` wrote, by position, until its appender says it committed
        # (`committed(position)`): then it moves to `_recent`, the last `_RECENT` changes this
        # process committed, which `recent_after` serves without a read. An append rolled back
        # is never published (its position may come back with another change, which replaces it).
        self._appended: dict[int, StoredChange] = {}
        self._recent: dict[int, StoredChange] = {}
        # `_appended` is written on the writer's thread (store/writes.py) and read on the loop's.
        self._appended_lock = threading.Lock()

    def on_commit(self, listener: Callable[[int | None], None]) -> None:
        """`listener(position)` runs (in this process) after each commit that appended a change:
        `position` is the highest it appended when the appender says (None: unknown)."""
        self._listeners.append(listener)

    def committed(self, position: int | None = None) -> None:
        """Called by appenders after their transaction committed; `position`: the one change it
        appended (`append_sync`'s answer), when it appended exactly one and says so."""
        if position is not None:
            with self._appended_lock:
                change = self._appended.pop(position, None)
            if change is not None:
                self._recent[position] = change
                if len(self._recent) > _RECENT:
                    for old in list(itertools.islice(self._recent, len(self._recent) - _RECENT)):
                        del self._recent[old]
        for listener in self._listeners:
            listener(position)

    def recent_after(self, position: int, through: int, limit: int, *, kinds: Collection[str] = (),
                     subject: str = "") -> list[StoredChange] | None:
        """`read_after(position, limit, ...)` up to `through` from memory, when this process
        committed every change in (`position`, `through`] itself and still holds them (rows become
        visible in position order, so none can appear there later); None otherwise (read them)."""
        if through <= position or through - position > len(self._recent):
            return None
        subject = subject[:255]
        found: list[StoredChange] = []
        for at in range(position + 1, through + 1):
            change = self._recent.get(at)
            if change is None:
                return None
            if (kinds and change.kind not in kinds) or (subject and change.subject != subject):
                continue
            found.append(change)
            if len(found) == limit:
                break
        return found

    async def append(self, conn: AsyncConnection, kind: str, subject: str, body: Mapping[str, Any]) -> None:
        """Adds one change inside the caller's write transaction (`conn`); the caller calls
        `committed()` once it has committed."""
        if self._db.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})
        await conn.execute(self._insert, self._values(kind, subject, body))
        if self._db.dialect == "postgresql":
            await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))

    def append_sync(self, conn: Connection, kind: str, subject: str, body: Mapping[str, Any]) -> int:
        """`append` for the store's synchronous write bodies (store/writes.py). Call it as the
        transaction's last statement: on PostgreSQL the append lock is then held only from here
        to the commit, so manifest pushes serialise on nothing but their commit. Returns the
        change's position."""
        if self._db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})
        values = self._values(kind, subject, body)
        position = int(conn.execute(self._insert, values).inserted_primary_key[0])
        if self._db.dialect == "postgresql":
            conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        change = StoredChange(position, kind, values["subject"], dict(body), values["created_at"])
        with self._appended_lock:
            self._appended[position] = change
            if len(self._appended) > _RECENT:  # appends rolled back, never published
                for old in list(itertools.islice(self._appended, len(self._appended) - _RECENT)):
                    del self._appended[old]
        return position

    @staticmethod
    def _values(kind: str, subject: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": kind, "subject": subject[:255], "body": json.dumps(body, separators=(",", ":")),
                "created_at": datetime.now(UTC)}

    async def head(self) -> int:
        """The newest position (0 when there is none)."""
        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            return int((await conn.execute(select(func.max(changes.c.position)))).scalar() or 0)

    async def horizon(self) -> int:
        """The highest position deleted by `prune` (0 when nothing was)."""
        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            value = (await conn.execute(
                select(registry_flags.c.value).where(registry_flags.c.name == PRUNED_THROUGH_FLAG)
            )).scalar()
        return int(value) if value else 0

    async def read_after(self, position: int, limit: int, *, kinds: Collection[str] = (),
                         subject: str = "") -> list[StoredChange]:
        """Up to `limit` changes with a position above `position`, in order; only of `kinds`
        (empty: all) and of `subject` (empty: all)."""
        statement = select(changes).where(changes.c.position > position)
        if kinds:
            statement = statement.where(changes.c.kind.in_(list(kinds)))
        if subject:
            statement = statement.where(changes.c.subject == subject[:255])
        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            rows = await conn.execute(statement.order_by(changes.c.position).limit(limit))
            return [StoredChange(r.position, r.kind, r.subject, json.loads(r.body), _aware(r.created_at))
                    for r in rows]

    async def prune(self, retention_seconds: float) -> int:
        """Deletes changes older than the retention; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
        async with self._db.access.transaction() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})
            through = (await conn.execute(
                select(func.max(changes.c.position)).where(changes.c.created_at < cutoff)
            )).scalar()
            if not through:
                return 0
            deleted = (await conn.execute(delete(changes).where(changes.c.position <= through))).rowcount
            current = (await conn.execute(
                select(registry_flags.c.value).where(registry_flags.c.name == PRUNED_THROUGH_FLAG)
            )).scalar()
            await conn.execute(self._set_flag.values(
                name=PRUNED_THROUGH_FLAG, value=str(max(int(through), int(current or 0)))))
            return int(deleted or 0)
