"""Regions (issue 15, items 2, 7, 8): writes have one home, the primary region.

`settings.regions` names the local region, the primary region and how to reach the other regions'
metadata planes. Nothing here runs without `regions.local`.

In a REPLICA region the metadata plane reads from the region's hot standby (`database_url`) and
never writes to it. `ForwardWrites`, a server interceptor that runs after the access check, sends
every write RPC (`WRITES`) as it came — the request's bytes and the caller's `authorization` — to
the primary region's metadata plane, and answers with the primary's answer (its error too, rich
details included). Before answering a write that succeeded it waits until the local standby has
replayed the commit, whose WAL position the primary sends in the trailer `lading-commit-lsn`
(bounded by `metadata.read_your_writes.wait_seconds`; store/replay.py), then wakes the local
change feed: a client that pushed through this region pulls its push from this region at once.
A write that put a change on the feed (the primary names its position in `lading-change-position`)
then also waits until this region's gateways acknowledged it (changes/acks.py); their
acknowledgements (AcknowledgeChanges) are forwarded to the primary region too, without a replay wait.
When the primary region cannot be reached (or does not answer within
`regions.forward_timeout_seconds`), the write answers UNAVAILABLE (HTTP 503) with a message that
names the primary region; reads go on from the standby.

In the PRIMARY region `CommitPositions` adds `lading-commit-lsn` (the primary's WAL flush position
after the write) to the trailer of every successful write RPC, and tells the store which region a
write comes from (`lading-region`, sent by the forwarding replica region; else the local one), so
LinkBlob records where the blob's bytes are (blob_regions.py).

`RegionServicer` answers `lading region status`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.metadata.v1 import accounts_pb2, regions_pb2_grpc
from lading.metadata.v1 import regions_pb2 as pb

from services.common.errors import ErrorKind, RegistryError
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.metrics import Metrics
from services.common.settings import RegionSettings
from services.common.tls import channel_credentials, channel_options
from services.metadata.accounts.core import NeedsPrimaryRegion
from services.metadata.blob_regions import REGION_HEADER, REGION_NAME_LENGTH, writing_region
from services.metadata.changes.acks import settled_positions
from services.metadata.store.replay import ReplayGate

log = logging.getLogger("lading.metadata.regions")

COMMIT_LSN_KEY = "lading-commit-lsn"
# The highest change feed position the write settled (changes/acks.py): the replica region waits
# until its own gateways acknowledged it too.
CHANGE_POSITION_KEY = "lading-change-position"
# The gateways' acknowledgements of the change feed: a replica region forwards them (the primary
# region's database keeps them and grants the leases), without waiting for its standby's replay.
ACKNOWLEDGE_CHANGES = "/lading.metadata.v1.ChangeAckService/AcknowledgeChanges"
REGION_SERVICE_NAME = "lading.metadata.v1.RegionService"
_PROBE_SECONDS = 2.0

# Every RPC that writes to the metadata database (all unary): forwarded from a replica region.
# `Authenticate` is not among them: it is answered locally unless it must write (WRITES_WHEN_NEEDED).
WRITES: frozenset[str] = frozenset(
    f"/lading.metadata.v1.{service}/{method}"
    for service, methods in {
        "MetadataService": ("LinkBlob", "UnlinkBlob", "MountBlob", "PutManifest", "DeleteManifest"),
        "AccountService": ("CreateUser", "SetPassword", "DeleteAccount", "CreateRobot", "Grant", "Revoke",
                           "RevokeTokens", "RotateRobotSecret", "SetAccountDisabled", "MapGroup", "UnmapGroup"),
        "AdminService": ("GcSweepMetadata", "GcMarkBlobs", "GcForgetBlob", "GcClaimOrphans", "GcRecordRun",
                         "DeleteRepository", "SetMaintenance"),
        "EventsService": ("ReplayEvents",),
        "PolicyService": ("SetImmutableRule", "DeleteImmutableRule", "AllowTagOverride", "RestoreTag", "SetQuota",
                          "DeleteQuota", "RecountQuotas", "SetRetentionPolicy", "DeleteRetentionPolicy",
                          "RunRetention", "SetSignaturePolicy", "DeleteSignaturePolicy", "SetVulnerabilityPolicy",
                          "DeleteVulnerabilityPolicy"),
        "ConsoleService": ("CreateSession", "CompleteOidcSignIn", "EndSession", "CreateCliSecret",
                           "RevokeCliSecret", "DeleteTag", "AdminCreateUser", "AdminDeleteAccount",
                           "AdminSetAccountDisabled", "AdminCreateRobot", "AdminGrant", "AdminRevoke",
                           "AdminMapGroup", "AdminUnmapGroup", "AdminReplayEvents", "AdminSetMaintenance"),
    }.items()
    for method in methods
)
# RPCs answered in the replica region unless answering must write (the service raises
# NeedsPrimaryRegion), then forwarded like WRITES: a directory (LDAP) user's first login creates
# the account, and stale directory groups are stored, on the primary.
WRITES_WHEN_NEEDED: dict[str, Any] = {
    "/lading.metadata.v1.AccountService/Authenticate": accounts_pb2.AuthenticateResponse,
}
# Reads a replica region answers from its standby. While the standby does not answer (stopped,
# restarting, its server down) they answer UNAVAILABLE naming the region's standby, or, with
# `regions.read_failover = "primary"`, are answered by the primary region's metadata plane.
READS: frozenset[str] = frozenset(
    f"/lading.metadata.v1.{service}/{method}"
    for service, methods in {
        "MetadataService": ("GetManifest", "StatBlob", "ListTags", "ListRepositories", "ListReferrers"),
        "AccountService": ("Authorize", "GetCredentialStates"),
    }.items()
    for method in methods
)
# The message of RegistryError(UNAVAILABLE) when the metadata database does not answer (the stores'
# _translate); another UNAVAILABLE (the blob plane, a lease) is no reason to fail over.
_DATABASE_UNAVAILABLE = "the metadata database is unavailable"
# What the forwarded call carries of the caller's metadata.
_FORWARDED_HEADERS = ("authorization",)
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Repositories read from the primary region at most (older pins are dropped: back to the standby).
_PINNED_KEPT = 10_000


def _repository_of(parse: Callable[[bytes], Any] | None, request: bytes) -> str:
    """The repository a forwarded write names ('' when it names none or cannot be read)."""
    if parse is None:
        return ""
    try:
        return str(getattr(parse(request), "repository", "") or "")
    except Exception:  # noqa: BLE001 - the primary will say what is wrong with the request
        return ""


def role(settings: RegionSettings) -> str:
    if not settings.local:
        return "single"
    return "primary" if settings.local == settings.primary else "replica"


def peer_channel(settings: RegionSettings, target: str) -> grpc.aio.Channel:
    options = [*CHANNEL_OPTIONS, *channel_options(settings.tls),
               ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]
    if settings.tls.enabled:
        return grpc.aio.secure_channel(target, channel_credentials(settings.tls, section="regions.tls"),
                                       options=options)
    return grpc.aio.insecure_channel(target, options=options)


def primary_target(settings: RegionSettings) -> str:
    for peer in settings.peers:
        if peer.name == settings.primary:
            return peer.metadata_target
    raise ValueError(f"regions.primary {settings.primary!r} is not among regions.peers: name its metadata_target "
                     "(LADING_REGIONS__PEERS='[{\"name\": \"...\", \"metadata_target\": \"...\"}]')")


class ForwardWrites(grpc.aio.ServerInterceptor):
    def __init__(self, settings: RegionSettings, channel: grpc.aio.Channel, replay: ReplayGate,
                 on_replayed: Callable[[], None]) -> None:
        self._settings = settings
        self._channel = channel
        self._replay = replay
        self._on_replayed = on_replayed
        # changes/acks.py ChangeAcks.settle (set by main.py): a forwarded write that put a change on
        # the feed answers once this region's gateways acknowledged it.
        self.settle: Callable[[int], Awaitable[None]] | None = None
        self.forwarded = 0
        self.failures = 0
        # Reads answered by the primary region because the local standby did not answer.
        self.read_failovers = 0
        # repository → the WAL position of a forwarded write the standby had not replayed within
        # the bound: this process reads that repository from the primary region until it has.
        self._pinned: OrderedDict[str, str] = OrderedDict()
        self.pinned_reads = 0

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method
        if method in WRITES_WHEN_NEEDED:
            return await self._local_first(continuation, handler_call_details)
        if method in READS:
            return await self._standby_first(continuation, handler_call_details)
        if method == ACKNOWLEDGE_CHANGES:
            acknowledge = self._channel.unary_unary(method)  # bytes in, bytes out

            async def forward_ack(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return await self._forward(acknowledge, request, context, ack=True)

            return grpc.unary_unary_rpc_method_handler(forward_ack)
        if method not in WRITES:
            return await continuation(handler_call_details)
        call = self._channel.unary_unary(method)  # bytes in, bytes out
        local = await continuation(handler_call_details)
        parse = local.request_deserializer if local is not None else None

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._forward(call, request, context, repository=_repository_of(parse, request))

        return grpc.unary_unary_rpc_method_handler(forward)

    async def _local_first(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        """Answered here, unless answering must write (NeedsPrimaryRegion): then forwarded."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method
        call = self._channel.unary_unary(method)  # bytes in, bytes out
        response_type = WRITES_WHEN_NEEDED[method]

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except NeedsPrimaryRegion:
                pass
            return response_type.FromString(await self._forward(call, request.SerializeToString(), context))

        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer,
                                                   handler.response_serializer)

    async def _standby_first(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        """A read answered from the region's standby; when the standby does not answer, UNAVAILABLE
        naming it, or (regions.read_failover = "primary") the primary region's answer."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, serialize = handler.unary_unary, handler.response_serializer
        call = self._channel.unary_unary(handler_call_details.method)  # bytes in, bytes out
        local, primary = self._settings.local, self._settings.primary

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            if await self._pinned_to_primary(getattr(request, "repository", "")):
                answer = await self._forward(call, request.SerializeToString(), context, read=True)
                self.pinned_reads += 1
                return answer
            try:
                response = await inner(request, context)
            except RegistryError as error:
                if error.kind is not ErrorKind.UNAVAILABLE or not error.message.startswith(_DATABASE_UNAVAILABLE):
                    raise
                if self._settings.read_failover != "primary":
                    raise RegistryError(
                        ErrorKind.UNAVAILABLE,
                        f"region {local!r} cannot read: its database (the region's standby) does not answer "
                        f"and reads are not failed over to the primary region {primary!r} "
                        "(regions.read_failover); retry shortly",
                        {"region": local, "primary_region": primary},
                    ) from None
            else:
                return serialize(response) if serialize is not None else response
            answer = await self._forward(call, request.SerializeToString(), context, read=True)
            self.read_failovers += 1
            return answer

        # Bytes out: the local answer serialized here, the primary's passed on as it came.
        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer, None)

    async def _pinned_to_primary(self, repository: str) -> bool:
        """Whether a read of `repository` must go to the primary region: a write of it forwarded
        from here is not yet replayed by the standby (it was slower than the bound)."""
        lsn = self._pinned.get(repository) if repository and self._pinned else None
        if lsn is None:
            return False
        try:
            if await self._replay.replayed(lsn):
                self._pinned.pop(repository, None)
                return False
        except Exception:  # noqa: BLE001 - a standby that cannot say has not caught up
            pass
        return True

    def _pin(self, repository: str, lsn: str) -> None:
        self._pinned[repository] = lsn
        self._pinned.move_to_end(repository)
        while len(self._pinned) > _PINNED_KEPT:
            self._pinned.popitem(last=False)

    async def _forward(self, call: Any, request: bytes, context: grpc.aio.ServicerContext, *,
                       read: bool = False, ack: bool = False, repository: str = "") -> bytes:
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k in _FORWARDED_HEADERS)
        metadata += ((REGION_HEADER, self._settings.local),)
        primary = self._settings.primary
        timeout = self._settings.forward_timeout_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))  # the caller's deadline holds across regions
        try:
            pending = call(request, metadata=metadata, timeout=timeout)
            response = await pending
            trailers = await pending.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            # A status with rich details is the primary's own answer (its database down, say);
            # one without is gRPC's: the primary region was not reached.
            own_answer = any(k == "grpc-status-details-bin" for k, _ in error.trailing_metadata() or ())
            if error.code() in _UNREACHABLE and not own_answer and read:
                raise RegistryError(
                    ErrorKind.UNAVAILABLE,
                    f"region {self._settings.local!r} cannot read: its database (the region's standby) does not "
                    f"answer and neither does the primary region {primary!r}; retry shortly",
                    {"primary_region": primary, "region": self._settings.local},
                ) from None
            if error.code() in _UNREACHABLE and not own_answer:
                if not ack:  # a gateway retries its acknowledgement every few ms: not a write refused
                    self.failures += 1
                raise RegistryError(
                    ErrorKind.UNAVAILABLE,
                    f"region {self._settings.local!r} cannot reach the primary region {primary!r}, which takes "
                    f"every write: reads go on here; retry the write later or push to region {primary!r}",
                    {"primary_region": primary, "region": self._settings.local},
                ) from None
            # The primary's own answer (its error code and rich details), as if given here.
            await context.abort(error.code(), error.details() or "", error.trailing_metadata())
            raise AssertionError("unreachable") from None
        if read or ack:
            return response
        self.forwarded += 1
        sent = dict(trailers or ())
        lsn = sent.get(COMMIT_LSN_KEY)
        if lsn:
            replayed = await self._replay.wait_for(str(lsn), self._replay.bound_seconds)
            if not replayed and repository:
                # The standby is slower than the bound (or down): until it has the write, this
                # process answers reads of the repository from the primary region, so the writer
                # still reads its write here (as ReplayGate.engine_for does in the primary region).
                log.warning("the standby did not replay a forwarded write of %s within %.3g s; reading it from "
                            "the primary region %r until it has", repository, self._replay.bound_seconds, primary)
                self._replay.timeouts += 1
                self._pin(repository, str(lsn))
            self._on_replayed()
            position = int(sent.get(CHANGE_POSITION_KEY) or 0)
            if position and self.settle is not None and (replayed or not self._replay.standby_down):
                # Once the standby has the change the feed here serves it: wait (bounded) until the
                # region's gateways applied it. A standby slower than the replay bound gets the
                # acknowledgement bound on top; a standby that does not answer, nothing.
                await self.settle(position)
        return response


class CommitPositions(grpc.aio.ServerInterceptor):
    """In the primary region: the WAL flush position after each write, in its answer's trailer."""

    def __init__(self, replay: ReplayGate, local: str) -> None:
        self._replay = replay
        self._local = local

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None:
            return handler
        if method in WRITES_WHEN_NEEDED:
            return self._position_when_forwarded(handler)
        if method not in WRITES:
            return handler
        inner = handler.unary_unary
        replay = self._replay
        local = self._local

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # The region the write comes from: a replica region names itself (blob_regions.py).
            # Read from this call's own metadata: gRPC may reuse the handler built for the first
            # call of a method for later calls, so nothing per call may be captured above.
            sent = dict(context.invocation_metadata() or ()).get(REGION_HEADER, "")
            writing_region.set(str(sent)[:REGION_NAME_LENGTH] or local)
            positions: list[int] = []
            settled_positions.set(positions)
            response = await inner(request, context)
            try:
                trailer = [(COMMIT_LSN_KEY, await replay.primary_position())]
                if positions:
                    trailer.append((CHANGE_POSITION_KEY, str(max(positions))))
                context.set_trailing_metadata(tuple(trailer))
            except Exception as exc:  # noqa: BLE001 - the write stands; the replica only skips its wait
                log.warning("could not read the WAL position after a write: %s", exc)
            return response

        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer,
                                                   handler.response_serializer)


    def _position_when_forwarded(self, handler: Any) -> Any:
        """A call a replica region forwarded (it names itself) may have written: its answer
        carries the WAL position too, so the replica waits for its standby before answering
        (the account a first login created is there for the next call). Local calls pay nothing."""
        inner, replay = handler.unary_unary, self._replay

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            response = await inner(request, context)
            if dict(context.invocation_metadata() or ()).get(REGION_HEADER):
                try:
                    context.set_trailing_metadata(((COMMIT_LSN_KEY, await replay.primary_position()),))
                except Exception as exc:  # noqa: BLE001 - the answer stands; the replica only skips its wait
                    log.warning("could not read the WAL position after a forwarded call: %s", exc)
            return response

        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer,
                                                   handler.response_serializer)


class RegionServicer(regions_pb2_grpc.RegionServiceServicer):
    def __init__(self, settings: RegionSettings, replay: ReplayGate, forward: ForwardWrites | None) -> None:
        self._settings = settings
        self._replay = replay
        self._forward = forward
        # Fetch on miss between regions (services/metadata/region_fetch.py), set by main.py.
        self.fetches: Any = None

    async def GetRegionStatus(self, request: pb.GetRegionStatusRequest, context: grpc.aio.ServicerContext
                              ) -> pb.GetRegionStatusResponse:
        if request.local_only:
            peers = []
        else:
            authorization = tuple((k, v) for k, v in context.invocation_metadata() or () if k == "authorization")
            peers = await asyncio.gather(*(self._probe(p.name, p.metadata_target, authorization)
                                           for p in self._settings.peers))
        fetches = self.fetches
        counts = {} if fetches is None else {
            "blob_fetches_started": fetches.started, "blob_fetches_completed": fetches.completed,
            "blob_fetches_failed": fetches.failed, "blob_fetch_bytes": fetches.fetched_bytes,
            "blob_fetches_shared": fetches.shared}
        return pb.GetRegionStatusResponse(
            **counts,
            local=self._settings.local, primary=self._settings.primary, role=role(self._settings),
            replication_lag_seconds=await self._replay.lag_seconds(),
            replay_waits=self._replay.waits, replay_wait_timeouts=self._replay.timeouts,
            forwarded_writes=self._forward.forwarded if self._forward else 0,
            forward_failures=self._forward.failures if self._forward else 0,
            read_failovers=self._forward.read_failovers if self._forward else 0,
            pinned_reads=self._forward.pinned_reads if self._forward else 0,
            peers=peers,
        )

    async def _probe(self, name: str, target: str, authorization: tuple[tuple[str, Any], ...]
                     ) -> pb.RegionPeerStatus:
        status = pb.RegionPeerStatus(name=name, metadata_target=target, primary=name == self._settings.primary,
                                     replication_lag_seconds=-1)
        channel = peer_channel(self._settings, target)
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                     timeout=_PROBE_SECONDS)
            status.reachable = reply.status == health_pb2.HealthCheckResponse.SERVING
            if not status.reachable:
                status.detail = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            else:
                # Its own view (lag, fetches), with the operator's credentials this call came with.
                theirs = await regions_pb2_grpc.RegionServiceStub(channel).GetRegionStatus(
                    pb.GetRegionStatusRequest(local_only=True), metadata=authorization, timeout=_PROBE_SECONDS)
                status.replication_lag_seconds = theirs.replication_lag_seconds
                status.blob_fetches_completed = theirs.blob_fetches_completed
        except grpc.aio.AioRpcError as error:
            if not status.reachable:
                status.detail = f"{error.code().name}: {error.details()}"
        finally:
            await channel.close()
        return status


class RegionParts:
    """What services/metadata/main.py adds for regions: interceptors, the RegionService, metrics."""

    def __init__(self, settings: RegionSettings, replay: ReplayGate, on_replayed: Callable[[], None]) -> None:
        self.settings = settings
        self.role = role(settings)
        self.channel: grpc.aio.Channel | None = None
        self.forward: ForwardWrites | None = None
        self.interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.role == "replica":
            self.channel = peer_channel(settings, primary_target(settings))
            self.forward = ForwardWrites(settings, self.channel, replay, on_replayed)
            self.interceptors.append(self.forward)
        elif self.role == "primary":
            self.interceptors.append(CommitPositions(replay, settings.local))
        self.servicer = RegionServicer(settings, replay, self.forward)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        regions_pb2_grpc.add_RegionServiceServicer_to_server(self.servicer, server)

    def register(self, metrics: Metrics) -> None:
        forward = self.forward
        if forward is not None:
            metrics.register_gauge_callback("lading_region_forwarded_writes_total",
                                            "writes forwarded to the primary region", lambda: forward.forwarded)
            metrics.register_gauge_callback(
                "lading_region_forward_failures_total",
                "writes refused (UNAVAILABLE) because the primary region could not be reached",
                lambda: forward.failures)
            metrics.register_gauge_callback(
                "lading_region_read_failovers_total",
                "reads answered by the primary region because this region's standby did not answer "
                "(regions.read_failover)", lambda: forward.read_failovers)
            metrics.register_gauge_callback(
                "lading_region_pinned_reads_total",
                "reads answered by the primary region because a write of their repository forwarded from "
                "here was not yet replayed by this region's standby (slower than read_your_writes.wait_seconds)",
                lambda: forward.pinned_reads)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
