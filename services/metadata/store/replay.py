"""Read-your-writes with a hot standby (issue 15, item 4): `ReplayGate`.

With `metadata.read_replica_url` naming a PostgreSQL hot standby of `database_url` (a region's
local standby), reads go to the standby and writes to the primary. A client that pushed through
one gateway and pulls through another must still see its push, so after every write the store
calls `after_write(repository)`:

1. it reads the primary's WAL flush position (`pg_current_wal_flush_lsn()`), which is at or past
   the end of the commit just acknowledged to us (PostgreSQL acknowledges a commit once its WAL is
   flushed: `synchronous_commit` must not be `off` on the primary); the insert position is not
   used, as it can point past a page header the standby never reports as replayed;
2. it waits until the standby has replayed that far (`pg_last_wal_replay_lsn()`), polling every
   `poll_seconds`, at most `read_your_writes.wait_seconds`; the write is answered only then;
3. if the standby is not there in time (lagging, or stopped), the write is answered anyway and
   this metadata process reads that repository from the primary until the standby has replayed
   the position (`engine_for`), so its readers still see the write.

The wait is what keeps the promise for every reader of the region (all metadata replicas read the
same standby); the fallback of step 3 holds for the readers of this metadata process only, and is
counted (`lading_region_replay_wait_timeouts_total`) so an operator sees a standby too slow for
the bound. A standby that is not in recovery any more (promoted) counts as caught up.

The change feed waits for the standby too (changes/hub.py): a gateway told that a tag moved must
not re-read the old digest from a standby that has not replayed the move.

A standby that does not answer (stopped, unreachable) is marked down for `_DOWN_SECONDS`: reads go
to the primary meanwhile (the store retries a failed standby read there at once), writes do not
wait for it, then the standby is tried again. The region keeps serving, from the primary.

`lag_seconds()` is the standby's replication lag for `lading_region_replication_lag_seconds`:
0 when it has replayed everything it received, else the age of the last transaction it replayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.metrics import Metrics
from services.common.settings import ReadYourWritesSettings
from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.replay")

_FLUSH_LSN = text("SELECT pg_current_wal_flush_lsn()::text")
# The position travels as text (asyncpg's binary pg_lsn codec wants an integer).
_REPLAYED = text("SELECT coalesce(pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS text) AS pg_lsn), true) "
                 "OR NOT pg_is_in_recovery()")
_LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
# Seconds a standby that failed to answer is left alone (reads go to the primary meanwhile).
_DOWN_SECONDS = 5.0
# Repositories read from the primary at most (older ones are dropped: their reads go back to the standby).
_PENDING_KEPT = 10_000


class ReplayGate:
    def __init__(self, database: Database, settings: ReadYourWritesSettings,
                 standby: AsyncEngine | None = None) -> None:
        """`standby`: the standby to wait for when it is not `database.replica` (a replica region,
        whose `database_url` is its standby: services/metadata/regions.py)."""
        self._db = database
        self._settings = settings
        self._replica = standby if standby is not None else database.replica
        # Waits after this process's own writes (a primary with a standby as its read replica).
        self.enabled = (database.replica is not None and database.dialect == "postgresql"
                        and settings.enabled)
        self._primary_reads = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        # repository → the position the standby must replay before it serves that repository again.
        self._pending: OrderedDict[str, str] = OrderedDict()
        self.waits = 0
        self.timeouts = 0
        self._down_until = 0.0
        self.wait_seconds_total = 0.0

    @property
    def primary_reads(self) -> AsyncEngine:
        return self._primary_reads

    @property
    def standby_down(self) -> bool:
        return time.monotonic() < self._down_until

    def mark_down(self, error: BaseException) -> None:
        if not self.standby_down:
            log.warning("the standby does not answer (%s): reading from the primary for %.0f s", error, _DOWN_SECONDS)
        self._down_until = time.monotonic() + _DOWN_SECONDS

    @property
    def bound_seconds(self) -> float:
        return self._settings.wait_seconds

    async def primary_position(self) -> str:
        async with self._primary_reads.connect() as conn:
            return str((await conn.execute(_FLUSH_LSN)).scalar())

    async def replayed(self, lsn: str) -> bool:
        if self._replica is None or self._db.dialect != "postgresql" or not self._settings.enabled:
            return True
        async with self._replica.connect() as conn:
            return bool((await conn.execute(_REPLAYED, {"lsn": lsn})).scalar())

    async def wait_for(self, lsn: str, seconds: float) -> bool:
        """True once the standby replayed `lsn`; False after `seconds` (or when it cannot say)."""
        deadline = time.monotonic() + seconds
        pause = self._settings.poll_seconds
        while True:
            if self.standby_down:
                return False
            try:
                if await self.replayed(lsn):
                    return True
            except Exception as exc:  # noqa: BLE001 - a standby that cannot answer is not caught up
                self.mark_down(exc)
                return False
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    async def after_write(self, repository: str | None) -> None:
        """Called after a write committed (see the module docstring)."""
        if not self.enabled:
            return
        started = time.monotonic()
        try:
            lsn = await self.primary_position()
        except Exception as exc:  # noqa: BLE001 - the write committed; reads of it go to the primary
            log.warning("could not read the primary's WAL position after a write: %s", exc)
            return
        self.waits += 1
        caught_up = await self.wait_for(lsn, self._settings.wait_seconds)
        self.wait_seconds_total += time.monotonic() - started
        if caught_up:
            return
        self.timeouts += 1
        log.warning("the standby did not replay a write within %.3g s; reading %s from the primary until it has",
                    self._settings.wait_seconds, repository or "(all)")
        if repository:
            self._pending[repository] = lsn
            self._pending.move_to_end(repository)
            while len(self._pending) > _PENDING_KEPT:
                self._pending.popitem(last=False)

    async def engine_for(self, repository: str | None, default: AsyncEngine) -> AsyncEngine:
        """Where a read of `repository` goes: the primary while the standby lacks a write of it."""
        if self.standby_down:
            return self._primary_reads
        if not self._pending or not repository:
            return default
        lsn = self._pending.get(repository)
        if lsn is None:
            return default
        try:
            if await self.replayed(lsn):
                self._pending.pop(repository, None)
                return default
        except Exception:  # noqa: BLE001 - the standby cannot say: the primary answers
            pass
        return self._primary_reads

    async def lag_seconds(self) -> float:
        """The standby's replication lag (see the module docstring); -1 when it cannot be read."""
        if self._replica is None or self._db.dialect != "postgresql":
            return 0.0
        try:
            async with self._replica.connect() as conn:
                return float((await conn.execute(_LAG)).scalar() or 0.0)
        except Exception:  # noqa: BLE001 - a gauge: say "unknown"
            return -1.0


def register_region_metrics(metrics: Metrics, gate: ReplayGate) -> None:
    """`lading_region_replication_lag_seconds` and the read-your-writes wait counters."""
    metrics.register_gauge_callback(
        "lading_region_replication_lag_seconds",
        "replication lag of this region's standby (metadata.read_replica_url): 0 when it replayed all it "
        "received, else the age of the last transaction it replayed; -1: cannot be read", gate.lag_seconds)
    metrics.register_gauge_callback(
        "lading_region_replay_waits_total", "writes that waited for the standby to replay them",
        lambda: gate.waits)
    metrics.register_gauge_callback(
        "lading_region_replay_wait_timeouts_total",
        "writes the standby had not replayed within read_your_writes.wait_seconds (then read from the primary)",
        lambda: gate.timeouts)
