"""Builds the GC / admin pieces of the metadata service from Settings (used by main.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import admin_pb2_grpc

from services.common.bearer import token_file_interceptors
from services.common.errors import ErrorKind, RegistryError, from_rpc_error, is_access_refusal
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import Settings
from services.common.tls import channel_credentials, channel_options
from services.metadata.blob_regions import writing_region
from services.metadata.changes.repositories import RepositoryChanges
from services.metadata.events.outbox import EventOutbox
from services.metadata.gc.guarded import BytesExist, GuardedStore
from services.metadata.gc.loop import GcLoop
from services.metadata.gc.servicer import AdminServicer
from services.metadata.gc.store import GcStore
from services.metadata.store.base import MetadataStore
from services.metadata.store.engine import Database

ADMIN_SERVICE_NAME = "lading.metadata.v1.AdminService"
log = logging.getLogger("lading.metadata.gc")
_STAT_TIMEOUT_SECONDS = 10.0


@dataclass
class GcParts:
    store: GuardedStore
    gc: GcStore
    admin: AdminServicer
    channel: grpc.aio.Channel | None
    loop: GcLoop | None = None
    # Channels to the other regions' blob planes (first-link checks of blobs pushed there).
    peer_channels: list[grpc.aio.Channel] = field(default_factory=list)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self.admin, server)
        if self.loop is not None:
            self.loop.start()

    async def close(self) -> None:
        if self.loop is not None:
            await self.loop.stop()
        if self.channel is not None:
            await self.channel.close()
        for channel in self.peer_channels:
            await channel.close()


def blob_plane_checker(channel: grpc.aio.Channel) -> BytesExist:
    """BlobService.StatBlob as "do the bytes exist?"; UNAVAILABLE when the blob plane is down."""
    stub = blob_pb2_grpc.BlobServiceStub(channel)

    async def exists(digest: str) -> bool:
        try:
            await stub.StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=_STAT_TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if failure.kind is ErrorKind.BLOB_UNKNOWN:
                return False
            if is_access_refusal(error):
                # A deployment mistake, not an outage: say which settings to fix.
                log.error("the blob plane refused this metadata plane (give it the `metadata` role: "
                          "gc.blob_token_file or a client certificate in gc.blob_tls): %s", error.details())
                raise RegistryError(ErrorKind.UNAVAILABLE, "the blob plane refused the metadata plane's "
                                    "credentials; the metadata plane's log says which to fix") from None
            raise RegistryError(ErrorKind.UNAVAILABLE, "the blob plane did not answer; retry shortly",
                                {"reason": failure.kind.name}) from None
        return True

    return exists


def blob_channel(settings: Settings) -> grpc.aio.Channel:
    """The metadata plane's channel to the blob plane: TLS with `gc.blob_tls` when enabled, the
    `metadata` role's token of `gc.blob_token_file` on every call when set (else the identity is
    the client certificate, or a trusted unix socket). Raises TlsConfigError / AccessConfigError for
    unusable TLS or token files, so the service stops at start naming the setting."""
    tls = settings.gc.blob_tls
    options = [*CHANNEL_OPTIONS, *channel_options(tls)]
    interceptors = token_file_interceptors(settings.gc.blob_token_file, "gc.blob_token_file") or None
    if tls.enabled:
        credentials = channel_credentials(tls, section="gc.blob_tls")
        return grpc.aio.secure_channel(settings.gc.blob_target, credentials, options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(settings.gc.blob_target, options=options, interceptors=interceptors)


def build_gc(settings: Settings, database: Database, store: MetadataStore,
             events: EventOutbox | None = None, changes: RepositoryChanges | None = None) -> GcParts:
    """The guarded store the core must use, the AdminService servicer, the blob-plane channel
    (when gc.blob_target is set; the channel is opened lazily by gRPC) and the periodic collector
    (gc.interval_seconds > 0 with a blob target; started by `add_to_server`, stopped by `close`).
    `events`: the outbox the collector's manifest deletes and repository deletes write to;
    `changes`: the change feed they are put on."""
    gc = GcStore(database, delay_seconds=settings.gc.review_delay_seconds, events=events, changes=changes,
                 history_window_seconds=settings.governance.history_window_seconds)
    require = getattr(store, "require_blob_rows", None)
    if require is not None:
        require()
    channel = None
    checker = None
    peer_channels: list[grpc.aio.Channel] = []
    if settings.gc.blob_target:
        channel = blob_channel(settings)
        checker = blob_plane_checker(channel)
        if settings.regions.local:
            checker, peer_channels = _regional_checker(settings, checker)
    admin = AdminServicer(gc, delete_untagged=settings.gc.delete_untagged_manifests,
                          orphan_grace_seconds=settings.gc.orphan_grace_seconds)
    loop = None
    if channel is not None and settings.gc.interval_seconds > 0:
        loop = GcLoop(admin, blob_pb2_grpc.BlobServiceStub(channel), settings.gc.interval_seconds)
    guarded = GuardedStore(store, gc, checker, orphan_grace_seconds=settings.gc.orphan_grace_seconds)
    return GcParts(store=guarded, gc=gc, admin=admin, channel=channel, loop=loop,
                   peer_channels=peer_channels)


def _regional_checker(settings: Settings, local: BytesExist) -> tuple[BytesExist, list[grpc.aio.Channel]]:
    """With regions: a blob's first link forwarded from another region (its bytes are stored where
    they were pushed, services/metadata/blob_regions.py) is confirmed with that region's blob plane
    (`regions.peers[].blob_target`, with `regions.tls` and `regions.blob_token_file`), not this
    region's, whose storage need not hold it (no storage replication, or replication lagging). A
    region without a blob target is trusted: its gateway committed the upload just before."""
    regions = settings.regions
    checkers: dict[str, BytesExist] = {}
    channels: list[grpc.aio.Channel] = []
    interceptors = token_file_interceptors(regions.blob_token_file, "regions.blob_token_file") or None
    options = [*CHANNEL_OPTIONS, *channel_options(regions.tls)]
    for peer in regions.peers:
        if not peer.blob_target or peer.name == regions.local:
            continue
        if regions.tls.enabled:
            channel = grpc.aio.secure_channel(peer.blob_target, channel_credentials(regions.tls, section="regions.tls"),
                                              options=options, interceptors=interceptors)
        else:
            channel = grpc.aio.insecure_channel(peer.blob_target, options=options, interceptors=interceptors)
        channels.append(channel)
        checkers[peer.name] = blob_plane_checker(channel)

    async def exists(digest: str) -> bool:
        region = writing_region.get()
        if not region or region == regions.local:
            return await local(digest)
        checker = checkers.get(region)
        return True if checker is None else await checker(digest)

    return exists, channels
