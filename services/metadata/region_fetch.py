"""Fetch on miss between regions (issue 15, item 3): RegionFetchService.

A blob linked in a repository (the metadata says so) whose bytes this region's storage lacks —
pushed in another region, storage replication lagging or absent — is fetched from a region that
holds it. The gateway orchestrates, as for the pull-through cache (gateway/resources/blobs.py):
BeginRegionFetch here, FetchService.FetchBlob with a RegionSource on its blob plane (which fetches,
verifies and stores while streaming: services/blob/fetch.py), EndRegionFetch here.

Which regions hold a blob: the `blob_regions` rows (services/metadata/blob_regions.py), the
primary region first; a blob with no row (pushed before regions were configured) is looked for
in the primary region. One fetch per blob and region across all of the region's replicas: the
fetch leases of the pull-through cache (services/metadata/fetch_leases.py), keyed
"region:<region>:<digest>", renewed by the gateway while its fetch runs (RenewRegionFetch). Lease
and rows live in the primary database, so a replica region's metadata plane passes the calls on
to the primary region (naming itself in `region`). When the
primary region cannot be reached, the fetch still goes ahead, without a lease (a second fetch of
the same blob is only wasteful), from the regions the local standby's rows name.

Counters (this process, since it started) feed `lading region status` and the metrics
`lading_region_blob_fetches_total{outcome}` and `lading_region_blob_fetch_bytes_total`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from lading.metadata.v1 import region_fetch_pb2 as pb
from lading.metadata.v1 import region_fetch_pb2_grpc
from sqlalchemy import select

from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.metrics import Metrics
from services.common.settings import RegionSettings
from services.metadata.blob_regions import REGION_NAME_LENGTH, blob_regions
from services.metadata.fetch_leases import FetchLeases
from services.metadata.store.access import Kind
from services.metadata.store.dialect import insert_ignore
from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.region_fetch")

REGION_FETCH_SERVICE_NAME = "lading.metadata.v1.RegionFetchService"
# How often a caller waiting for another replica's fetch looks again.
_WAIT_POLL_SECONDS = 0.1
_PASSED_HEADERS = ("authorization",)
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
Outcome = pb.BeginRegionFetchResponse


@dataclass
class FetchCounters:
    started: int = 0
    completed: int = 0
    failed: int = 0
    fetched_bytes: int = 0
    shared: int = 0


class RegionFetches:
    """The lease and the `blob_regions` rows, on the primary database (primary region only)."""

    def __init__(self, settings: RegionSettings, database: Database, leases: FetchLeases) -> None:
        self._settings = settings
        self._database = database
        self._leases = leases
        self._record = insert_ignore(database.dialect, blob_regions, ["digest", "region"])

    async def holders(self, digest: str) -> list[str]:
        statement = select(blob_regions.c.region).where(blob_regions.c.digest == digest)
        async with self._database.access.connection(Kind.PRIMARY_READ) as conn:
            return [row[0] for row in await conn.execute(statement)]

    def sources(self, held: list[str], region: str) -> list[str]:
        """The regions to fetch from, in order: the primary region first, then by name."""
        primary = self._settings.primary
        others = sorted({r for r in held if r != region}, key=lambda r: (r != primary, r))
        if not others and region != primary:
            others = [primary]  # no row: pushed before regions were configured, into the primary
        return others

    async def begin(self, digest: str, region: str, wait_seconds: float, *, missing_here: bool = False
                    ) -> pb.BeginRegionFetchResponse:
        """`missing_here`: the region's storage lacks the blob although a row says it holds it
        (its copy was lost): fetched anyway."""
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        key = f"region:{region}:{digest}"
        while True:
            held = await self.holders(digest)
            if region in held and not missing_here:
                return pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_PRESENT)
            sources = self.sources(held, region)
            if not sources:
                return pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_NO_SOURCE)
            lease_id = await self._leases.take(key)
            if lease_id is not None and not missing_here and region in await self.holders(digest):
                # Another replica's fetch ended between the look above and the lease.
                await self._leases.release(key, lease_id)
                return pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_PRESENT)
            if lease_id is not None:
                return pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_FETCH, lease_id=lease_id,
                                                   regions=sources, lease_seconds=self._leases.lifetime_seconds)
            if time.monotonic() >= deadline:
                raise RegistryError(
                    ErrorKind.UNAVAILABLE,
                    f"blob {digest} is being fetched into region {region!r} by another request; retry shortly",
                    {"digest": digest, "region": region},
                )
            await asyncio.sleep(_WAIT_POLL_SECONDS)

    async def renew(self, digest: str, region: str, lease_id: str) -> bool:
        return await self._leases.renew(f"region:{region}:{digest}", lease_id)

    async def end(self, digest: str, region: str, lease_id: str, fetched: bool) -> None:
        try:
            if fetched:
                values = {"digest": digest, "region": region, "created_at": datetime.now(UTC)}
                await self._database.access.write(lambda conn: conn.execute(self._record, values))
        finally:
            if lease_id:
                await self._leases.release(f"region:{region}:{digest}", lease_id)


class RegionFetchServicer(region_fetch_pb2_grpc.RegionFetchServiceServicer):
    """Primary region: answers from `RegionFetches`. Replica region: passes the call on to the
    primary region (`primary`, a channel to its metadata plane), or, when that cannot be reached,
    lets the fetch go ahead without a lease from the regions the local rows name. No regions: no
    source."""

    def __init__(self, settings: RegionSettings, fetches: RegionFetches | None,
                 primary: grpc.aio.Channel | None) -> None:
        self._settings = settings
        self._fetches = fetches
        self._primary = region_fetch_pb2_grpc.RegionFetchServiceStub(primary) if primary is not None else None
        self.counters = FetchCounters()

    def _region(self, asked: str) -> str:
        return (asked or self._settings.local)[:REGION_NAME_LENGTH]

    async def BeginRegionFetch(self, request: pb.BeginRegionFetchRequest, context: grpc.aio.ServicerContext
                               ) -> pb.BeginRegionFetchResponse:
        digest = str(Digest.parse(request.digest))
        if not self._settings.local:
            return pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_NO_SOURCE)
        region = self._region(request.region)
        if self._primary is not None:
            passed = pb.BeginRegionFetchRequest(digest=digest, wait_seconds=request.wait_seconds, region=region,
                                                missing_here=request.missing_here)
            try:
                response = await self._primary.BeginRegionFetch(
                    passed, metadata=_passed_metadata(context),
                    timeout=request.wait_seconds + self._settings.forward_timeout_seconds)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _UNREACHABLE or _own_answer(error) or self._fetches is None:
                    await context.abort(error.code(), error.details() or "", error.trailing_metadata())
                    raise AssertionError("unreachable") from None
                log.warning("the primary region %r cannot be reached (%s); fetching blob %s without a lease",
                            self._settings.primary, error.details(), digest)
                held = await self._fetches.holders(digest)  # the local standby's rows
                response = pb.BeginRegionFetchResponse(outcome=Outcome.OUTCOME_FETCH,
                                                       regions=self._fetches.sources(held, region))
        else:
            assert self._fetches is not None
            response = await self._fetches.begin(digest, region, request.wait_seconds,
                                                  missing_here=request.missing_here)
        if not request.region:  # counted in the region that asked, not where the lease is
            if response.outcome == Outcome.OUTCOME_FETCH:
                self.counters.started += 1
            elif response.outcome == Outcome.OUTCOME_PRESENT:
                self.counters.shared += 1
        return response

    async def EndRegionFetch(self, request: pb.EndRegionFetchRequest, context: grpc.aio.ServicerContext
                             ) -> pb.EndRegionFetchResponse:
        digest = str(Digest.parse(request.digest))
        if not self._settings.local:
            return pb.EndRegionFetchResponse()
        region = self._region(request.region)
        if not request.region:
            if request.fetched:
                self.counters.completed += 1
                self.counters.fetched_bytes += max(request.size, 0)
            else:
                self.counters.failed += 1
        if self._primary is not None:
            if not request.lease_id and not request.fetched:
                return pb.EndRegionFetchResponse()
            passed = pb.EndRegionFetchRequest(digest=digest, lease_id=request.lease_id, fetched=request.fetched,
                                              size=request.size, region=region)
            try:
                await self._primary.EndRegionFetch(passed, metadata=_passed_metadata(context),
                                                   timeout=self._settings.forward_timeout_seconds)
            except grpc.aio.AioRpcError as error:
                # The bytes are stored here either way; an unrecorded region only costs a fetch
                # from elsewhere later, and the lease lapses on its own.
                log.warning("could not tell the primary region %r that blob %s is in region %r: %s",
                            self._settings.primary, digest, region, error.details())
            return pb.EndRegionFetchResponse()
        assert self._fetches is not None
        await self._fetches.end(digest, region, request.lease_id, request.fetched)
        return pb.EndRegionFetchResponse()

    async def RenewRegionFetch(self, request: pb.RenewRegionFetchRequest, context: grpc.aio.ServicerContext
                               ) -> pb.RenewRegionFetchResponse:
        digest = str(Digest.parse(request.digest))
        if not self._settings.local or not request.lease_id:
            return pb.RenewRegionFetchResponse(held=False)
        region = self._region(request.region)
        if self._primary is not None:
            passed = pb.RenewRegionFetchRequest(digest=digest, lease_id=request.lease_id, region=region)
            try:
                return await self._primary.RenewRegionFetch(passed, metadata=_passed_metadata(context),
                                                            timeout=self._settings.forward_timeout_seconds)
            except grpc.aio.AioRpcError as error:
                # The holder tries again at its next renewal.
                await context.abort(error.code(), error.details() or "", error.trailing_metadata())
                raise AssertionError("unreachable") from None
        assert self._fetches is not None
        return pb.RenewRegionFetchResponse(held=await self._fetches.renew(digest, region, request.lease_id))

    def register(self, metrics: Metrics) -> None:
        counters, local = self.counters, self._settings.local
        metrics.register_gauge_callback(
            "lading_region_blob_fetches_total",
            "blobs this region fetched from another region on a miss, by outcome (started: this "
            "replica held the lease; completed/failed: how its fetches ended; shared: another "
            "replica's fetch answered the miss)",
            lambda: {(local, outcome): getattr(counters, outcome)
                     for outcome in ("started", "completed", "failed", "shared")},
            labels=("region", "outcome"))
        metrics.register_gauge_callback(
            "lading_region_blob_fetch_bytes_total", "bytes this region fetched from other regions on a miss",
            lambda: {(local,): counters.fetched_bytes}, labels=("region",))


def _passed_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in context.invocation_metadata() or () if k in _PASSED_HEADERS)


def _own_answer(error: grpc.aio.AioRpcError) -> bool:
    return any(k == "grpc-status-details-bin" for k, _ in error.trailing_metadata() or ())


def add_to_server(servicer: RegionFetchServicer, server: grpc.aio.Server) -> None:
    region_fetch_pb2_grpc.add_RegionFetchServiceServicer_to_server(servicer, server)
