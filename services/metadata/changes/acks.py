"""`ChangeAcks`: read-your-writes through every gateway's manifest cache (issue 15, items 4-5).

The change feed alone races the client: a push answered 201 through gateway 1 while gateway 2
had not yet heard of it, so an immediate GET of the moved tag through gateway 2 could answer the
previous digest from its cache. Acknowledgements close that race:

- Every gateway cache is a *subscriber* (one per process, gateway/cache_feed.py). After applying
  the feed's changes up to a position it calls `AcknowledgeChanges(subscriber, position)`, at
  least four times per lease, and gets a **lease**: it may keep serving entries in its coherent
  mode for `lease_seconds` counted from when it *sent* the acknowledgement (so its view ends
  before ours). Without a valid lease it must not serve coherent entries (it falls back to the
  short TTL).
- A write that put a change on the feed (tag pushed, moved or deleted, manifest deleted) answers
  only once `settle(position)` returned: every subscriber whose lease is valid has acknowledged
  `position`. A subscriber that has not within `ack_wait_seconds` is *fenced*: no renewal until it
  acknowledges the position; the write then answers when its lease has run out (at most
  `lease_seconds` later). A dead gateway therefore stalls writes at most `lease_seconds` after its
  last acknowledgement, and only once: a subscriber whose lease ran out is not waited for.
- A subscriber renewed after its lease had run out (writes may have answered without it) gets a
  new `epoch`: it must drop everything it cached before it serves in its coherent mode again.

Invariant: when `settle(p)` returns, every cache that can still claim coherence has applied `p`.

Where acknowledgements live: on PostgreSQL in the `change_subscribers` table (any metadata replica
takes a gateway's acknowledgement; the replica of the write reads them), with the database's clock
for leases, `NOTIFY lading_change_acks` to wake waiting writes at once (changes/hub.py LISTENs)
and a short poll as the safety net; acknowledgement commits do not wait for the WAL flush (losing
one only makes a write wait for the next). On SQLite, in this process's memory.

Regions: each row names the subscriber's region, and a write waits only for the subscribers of
the region it answers in, so a replica region's lag never slows the primary region's writes.
- In the primary region (and without regions) writes wait for the rows of `regions.local`.
- In a REPLICA region (its database is a read-only standby) the region's metadata plane forwards
  AcknowledgeChanges to the primary region's plane (services/metadata/regions.py), which stores the
  row with the region the call came from (`lading-region`) and grants the lease; those commits
  flush locally (`synchronous_commit = local`) so that they stream to the standbys at once. If the
  primary region cannot be reached the acknowledgement fails and the gateway serves with its short
  TTL until it can again. A write forwarded from the replica region answers there only once (1)
  the primary answered it (after its own region's gateways acknowledged), (2) the region's standby
  replayed its commit (ReplayGate) and (3) `settle(position)` here saw, on the standby, every
  subscriber of the region with a lease acknowledge the change's position (the primary names it in
  the `lading-change-position` trailer). A lease counts as ended on the standby only when it ended
  before the last transaction the standby replayed committed (`pg_last_xact_replay_timestamp()`,
  the primary's clock, like `lease_until`): a renewal the standby has not replayed yet then
  committed after the lease had ended, so either the primary answered it with a new epoch, or the
  gateway's own view of its lease (counted from when it sent, shorter) had run out before the
  answer came: either way that gateway dropped its cache before serving coherently again. A laggard is fenced on the primary (`FenceSubscribers`, called by the replica region's
  plane as itself, naming its region), so its lease runs out there and the write answers then, as
  in the primary region. If the primary cannot be reached for that, the write answers after
  `ack_wait_seconds + lease_seconds` (logged, `lading_change_ack_gave_up_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from lading.metadata.v1 import change_acks_pb2, change_acks_pb2_grpc
from sqlalchemy import text

from services.common.metrics import Metrics
from services.common.settings import ChangeFeedSettings
from services.metadata.blob_regions import REGION_HEADER
from services.metadata.store.access import Kind
from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.changes.acks")

ACK_NOTIFY_CHANNEL = "lading_change_acks"
# Rows of subscribers whose lease ended this long ago are deleted (gateways that went away).
_FORGET_AFTER_SECONDS = 3600.0
# Polls between wake-ups (a NOTIFY may be lost while LISTEN reconnects): first pause, longest.
_FIRST_PAUSE_SECONDS = 0.002
_LONGEST_PAUSE_SECONDS = 0.02
# A write gives up after the bound plus this (a database too slow to say; logged and counted).
_SLACK_SECONDS = 0.5

# The change positions settled while one call is answered: the primary region's CommitPositions
# (services/metadata/regions.py) puts a list here for each write RPC and sends the highest to the
# forwarding replica region in the `lading-change-position` trailer, which settles it there too.
settled_positions: ContextVar[list[int] | None] = ContextVar("lading_settled_positions", default=None)

_ACK = text(
    "INSERT INTO change_subscribers AS s (subscriber, acked, fence, lease_until, epoch, region) "
    "VALUES (:subscriber, :position, 0, clock_timestamp() + CAST(:lease AS double precision) * interval '1 second', 1, "
    ":region) "
    "ON CONFLICT (subscriber) DO UPDATE SET "
    "region = excluded.region, "
    "acked = greatest(s.acked, excluded.acked), "
    "fence = CASE WHEN greatest(s.acked, excluded.acked) >= s.fence THEN 0 ELSE s.fence END, "
    "lease_until = CASE WHEN greatest(s.acked, excluded.acked) >= s.fence THEN excluded.lease_until "
    "ELSE s.lease_until END, "
    "epoch = CASE WHEN greatest(s.acked, excluded.acked) >= s.fence AND s.lease_until <= clock_timestamp() "
    "THEN s.epoch + 1 ELSE s.epoch END "
    "RETURNING s.fence = 0 AS granted, s.epoch"
)
_LEAVE = text("UPDATE change_subscribers SET lease_until = clock_timestamp() WHERE subscriber = :subscriber "
              "RETURNING epoch")
_LAGGARDS = text("SELECT subscriber FROM change_subscribers "
                 "WHERE region = :region AND acked < :position AND lease_until > clock_timestamp()")
# On a replica region's standby: "now" is the commit time of the last transaction it replayed (see
# the module docstring); a standby promoted meanwhile uses its clock.
_STANDBY_LAGGARDS = text(
    "SELECT subscriber FROM change_subscribers WHERE region = :region AND acked < :position AND lease_until > "
    "CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_xact_replay_timestamp(), clock_timestamp()) "
    "ELSE clock_timestamp() END")
_FENCE = text("UPDATE change_subscribers SET fence = greatest(fence, :position) "
              "WHERE region = :region AND acked < :position AND lease_until > clock_timestamp() "
              "RETURNING subscriber")
_FORGET = text("DELETE FROM change_subscribers "
               "WHERE lease_until < clock_timestamp() - CAST(:seconds AS double precision) * interval '1 second'")


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to an acknowledgement: `lease_seconds` (0: not renewed) and the `epoch`."""

    lease_seconds: float
    epoch: int


@dataclass(slots=True)
class _Subscriber:
    acked: int
    fence: int
    lease_until: float  # time.monotonic()
    epoch: int


class ChangeAcks:
    def __init__(self, database: Database, settings: ChangeFeedSettings, *, read_only: bool = False,
                 region: str = "") -> None:
        """`read_only`: a replica region (acknowledgements are forwarded to the primary region and
        read back from the standby); `region`: `regions.local` ('' without regions)."""
        self._db = database
        self._settings = settings
        self.enabled = settings.wait_for_caches
        self.region = region
        # A replica region's standby: rows written by the primary region, read here.
        self.standby = database.dialect == "postgresql" and read_only
        self.shared = database.dialect == "postgresql" and not read_only
        self._memory: dict[str, _Subscriber] = {}
        # A replica region: the primary region's ChangeAckService, which fences (use_primary).
        self._primary: Any = None
        self._primary_timeout = 10.0
        self._woken = asyncio.Event()
        # Counters for metrics (and tests).
        self.waits = 0
        self.fenced = 0
        self.gave_up = 0
        self.wait_seconds_total = 0.0

    @property
    def lease_seconds(self) -> float:
        return self._settings.lease_seconds

    def use_primary(self, channel: Any, timeout_seconds: float) -> None:
        """A replica region: laggards are fenced through the primary region's metadata plane."""
        self._primary = change_acks_pb2_grpc.ChangeAckServiceStub(channel)
        self._primary_timeout = timeout_seconds

    def wake(self) -> None:
        """An acknowledgement was recorded (here, or NOTIFY from another replica)."""
        previous, self._woken = self._woken, asyncio.Event()
        previous.set()

    # -- the gateways' side --------------------------------------------------------------------------

    async def acknowledge(self, subscriber: str, position: int, *, leaving: bool = False,
                          region: str | None = None) -> Grant:
        """Records that `subscriber` applied the feed up to `position`; renews its lease unless a
        write fenced it at a higher position (see the module docstring). `region`: the region the
        call was forwarded from (None: this one)."""
        lease = self._settings.lease_seconds
        if self.standby:
            # services/metadata/regions.py forwards the call to the primary region before it gets here.
            raise RuntimeError("a replica region's acknowledgements are taken by the primary region")
        if not self.shared:
            grant = self._acknowledge_here(subscriber, position, leaving, lease)
        else:
            theirs = region is not None and region != self.region
            async with self._db.access.transaction() as conn:
                # Not durable on purpose: a lost acknowledgement only makes a write wait for the next.
                # Another region's: flushed here (not waiting for synchronous standbys), else its
                # standby would receive it only with the WAL writer's next flush (up to 200 ms).
                await conn.execute(text(f"SET LOCAL synchronous_commit = {'local' if theirs else 'off'}"))
                if leaving:
                    epoch = (await conn.execute(_LEAVE, {"subscriber": subscriber})).scalar()
                    grant = Grant(0.0, int(epoch or 0))
                else:
                    row = (await conn.execute(_ACK, {"subscriber": subscriber, "position": position,
                                                     "lease": lease,
                                                     "region": self.region if region is None else region})).one()
                    grant = Grant(lease if row[0] else 0.0, int(row[1]))
                await conn.execute(text(f"NOTIFY {ACK_NOTIFY_CHANNEL}"))
        self.wake()
        return grant

    def _acknowledge_here(self, subscriber: str, position: int, leaving: bool, lease: float) -> Grant:
        now = time.monotonic()
        found = self._memory.get(subscriber)
        if found is None:
            if leaving:
                return Grant(0.0, 0)
            found = self._memory[subscriber] = _Subscriber(acked=position, fence=0, lease_until=0.0, epoch=1)
            lapsed = False
        else:
            lapsed = found.lease_until <= now
        if leaving:
            found.lease_until = now
            return Grant(0.0, found.epoch)
        found.acked = max(found.acked, position)
        if found.acked < found.fence:
            return Grant(0.0, found.epoch)
        found.fence = 0
        if lapsed:
            found.epoch += 1
        found.lease_until = now + lease
        if len(self._memory) > 1024:  # gateways that went away
            for name in [n for n, s in self._memory.items() if s.lease_until < now - _FORGET_AFTER_SECONDS]:
                del self._memory[name]
        return Grant(lease, found.epoch)

    # -- the writers' side ---------------------------------------------------------------------------

    async def settle(self, position: int | None) -> None:
        """Returns once every subscriber holding a lease has acknowledged `position` (a change this
        process just committed), fencing those that take longer than `ack_wait_seconds`; never
        raises (the write has committed: at worst it answers after the bound, logged)."""
        holder = settled_positions.get()
        if holder is not None and position:
            holder.append(position)
        if not self.enabled or not position:
            return
        started = time.monotonic()
        fence_at = started + self._settings.ack_wait_seconds
        give_up_at = fence_at + self._settings.lease_seconds + _SLACK_SECONDS
        fenced = False
        pause = _FIRST_PAUSE_SECONDS
        waited = False
        try:
            while True:
                woken = self._woken
                laggards = await self._laggards(position)
                if not laggards:
                    return
                waited = True
                now = time.monotonic()
                if not fenced and now >= fence_at:
                    fenced = True
                    names = await self._fence(position)
                    self.fenced += len(names)
                    if names:
                        log.warning("change %d: %s did not acknowledge within %.3g s; no lease renewal until "
                                    "they do, the write answers when their lease ran out", position,
                                    ", ".join(sorted(names)), self._settings.ack_wait_seconds)
                    continue
                if now >= give_up_at:
                    self.gave_up += 1
                    log.warning("change %d: still not acknowledged by %s after %.3g s; answering anyway",
                                position, ", ".join(sorted(laggards)), now - started)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(pause, max(0.0, give_up_at - now))):
                        await woken.wait()
                pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the write committed; say so and answer
            self.gave_up += 1
            log.warning("change %d: could not check the gateways' acknowledgements: %s", position, exc)
        finally:
            if waited:
                self.waits += 1
                self.wait_seconds_total += time.monotonic() - started

    async def _laggards(self, position: int) -> list[str]:
        if not self.shared and not self.standby:
            now = time.monotonic()
            return [n for n, s in self._memory.items() if s.acked < position and s.lease_until > now]
        # In a replica region the route reads its database: the region's standby.
        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            return [str(r[0]) for r in await conn.execute(_STANDBY_LAGGARDS if self.standby else _LAGGARDS,
                                                          {"position": position, "region": self.region})]

    async def fence_region(self, region: str, position: int) -> list[str]:
        """FenceSubscribers: a replica region's write waited too long for its gateways (here: the
        primary region's database)."""
        if not self.shared:
            raise RuntimeError("subscribers are fenced in the primary region's PostgreSQL database")
        async with self._db.access.transaction() as conn:
            return [str(r[0]) for r in await conn.execute(_FENCE, {"position": position, "region": region})]

    async def _fence(self, position: int) -> list[str]:
        if self.standby:
            if self._primary is None:
                return []
            try:
                answer = await self._primary.FenceSubscribers(
                    change_acks_pb2.FenceSubscribersRequest(position=position),
                    metadata=((REGION_HEADER, self.region),),
                    timeout=min(self._primary_timeout, self._settings.lease_seconds))
            except Exception as exc:  # noqa: BLE001 - the write then waits for the bound
                log.warning("change %d: could not fence this region's late gateways on the primary region: %s",
                            position, exc)
                return []
            return list(answer.subscribers)
        if not self.shared:
            now = time.monotonic()
            names = []
            for name, found in self._memory.items():
                if found.acked < position and found.lease_until > now:
                    found.fence = max(found.fence, position)
                    names.append(name)
            return names
        async with self._db.access.transaction() as conn:
            return [str(r[0]) for r in await conn.execute(_FENCE, {"position": position, "region": self.region})]

    async def forget_gone(self) -> int:
        """Deletes subscribers whose lease ended long ago; returns how many."""
        if not self.shared:
            return 0
        async with self._db.access.transaction() as conn:
            return int((await conn.execute(_FORGET, {"seconds": _FORGET_AFTER_SECONDS})).rowcount or 0)

    def register(self, metrics: Metrics) -> None:
        metrics.register_gauge_callback(
            "lading_change_ack_waits_total",
            "writes that waited for gateways to acknowledge their change (read-your-writes through caches)",
            lambda: self.waits)
        metrics.register_gauge_callback(
            "lading_change_ack_wait_seconds_total", "seconds writes spent waiting for those acknowledgements",
            lambda: self.wait_seconds_total)
        metrics.register_gauge_callback(
            "lading_change_ack_fenced_total",
            "gateways that had not acknowledged a write within change_feed.ack_wait_seconds (their lease "
            "was not renewed: they served no cached entry until they caught up)", lambda: self.fenced)
        metrics.register_gauge_callback(
            "lading_change_ack_gave_up_total",
            "writes that answered before every gateway holding a lease had acknowledged them (the bound "
            "ack_wait_seconds + lease_seconds passed, or the acknowledgements could not be read)",
            lambda: self.gave_up)
