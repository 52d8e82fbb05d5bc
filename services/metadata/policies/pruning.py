"""Pruning of the audit log and the tag history: both grow by a row per write, and nothing else
removes them. With a retention set (`governance.audit_retention_seconds`,
`governance.tag_history_retention_seconds`; 0, the default, keeps every row), rows older than it
are deleted every `governance.prune_interval_seconds`, oldest first, in batches of `_BATCH` rows
(one short write transaction each, so pushes are not held behind a long delete).

The tag history is never pruned inside `governance.history_window_seconds`: GC and
`lading tag restore` read it there. Every metadata replica of the primary region runs the task;
two deleting the same rows at once is harmless (a row is deleted once). A replica region's
database is a read-only standby: the primary region prunes it by replication.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select

from services.common.settings import GovernanceSettings
from services.common.tasks import cancel_and_wait
from services.metadata.policies.tables import audit_log, tag_history
from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.pruning")
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Pruned:
    audit_rows: int
    history_rows: int


class RecordPruner:
    def __init__(self, database: Database, settings: GovernanceSettings) -> None:
        self._database = database
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        # Rows deleted since start (a metric).
        self.audit_rows_deleted = 0
        self.history_rows_deleted = 0

    @property
    def history_retention_seconds(self) -> float:
        """The tag history's effective retention (0: none): never shorter than the restore window."""
        wanted = self._settings.tag_history_retention_seconds
        return max(wanted, self._settings.history_window_seconds) if wanted > 0 else 0.0

    @property
    def enabled(self) -> bool:
        return self._settings.audit_retention_seconds > 0 or self.history_retention_seconds > 0

    async def prune_once(self, now: datetime | None = None) -> Pruned:
        """Deletes every row past its retention (as of `now`); returns how many of each."""
        now = now or datetime.now(UTC)
        audit = history = 0
        if self._settings.audit_retention_seconds > 0:
            cutoff = now - timedelta(seconds=self._settings.audit_retention_seconds)
            while (done := await self._database.access.write(
                    lambda conn: _delete_audit(conn, cutoff), durable=False)):
                audit += done
        if self.history_retention_seconds > 0:
            cutoff = now - timedelta(seconds=self.history_retention_seconds)
            while (done := await self._database.access.write(
                    lambda conn: _delete_history(conn, cutoff), durable=False)):
                history += done
        self.audit_rows_deleted += audit
        self.history_rows_deleted += history
        return Pruned(audit, history)

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lading-record-pruner")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                done = await self.prune_once()
                if done.audit_rows or done.history_rows:
                    log.info("pruned %d audit row(s) and %d tag history row(s) past their retention",
                             done.audit_rows, done.history_rows)
            except Exception as exc:  # noqa: BLE001 - housekeeping: tried again next interval
                log.warning("could not prune the audit log and tag history: %s", exc)
            await asyncio.sleep(self._settings.prune_interval_seconds)


def _delete_audit(conn: Connection, cutoff: datetime) -> int:
    # `at` is indexed: the oldest rows first, a batch at a time.
    ids = list(conn.execute(select(audit_log.c.id).where(audit_log.c.at < cutoff)
                            .order_by(audit_log.c.at).limit(_BATCH)).scalars())
    if ids:
        conn.execute(delete(audit_log).where(audit_log.c.id.in_(ids)))
    return len(ids)


def _delete_history(conn: Connection, cutoff: datetime) -> int:
    # `at` is not indexed, but ids grow with time: the oldest rows by id, up to the first one still
    # inside the retention (a clock step between replicas only delays a row to a later run).
    rows = conn.execute(select(tag_history.c.id, tag_history.c.at).order_by(tag_history.c.id).limit(_BATCH)).all()
    ids = []
    for row_id, at in rows:
        if (at if at.tzinfo else at.replace(tzinfo=UTC)) >= cutoff:
            break
        ids.append(row_id)
    if ids:
        conn.execute(delete(tag_history).where(tag_history.c.id.in_(ids)))
    return len(ids)
