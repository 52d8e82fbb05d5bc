"""Other regions' blob planes as a source of fetch on miss (issue 15, item 3).

A blob linked in a repository whose bytes this region's storage lacks (pushed in another region;
storage replication lagging or absent) is fetched by `FetchOnMiss` (services/blob/fetch.py) from a
region that holds it: the metadata plane names the regions to try (RegionFetchService, from the
`blob_regions` rows), and `RegionSources` opens the blob on the first of them whose blob plane has
it (`regions.peers[].blob_target`), over BlobService.StatBlob and ReadBlob. Only loaded when a peer
has a blob target.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from services.common.bearer import token_file_interceptors
from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import RegionSettings
from services.common.tls import channel_credentials, channel_options

_STAT_SECONDS = 10.0


class RegionSources:
    """Channels to the other regions' blob planes (opened lazily by gRPC), by region name."""

    def __init__(self, settings: RegionSettings, *, stream_timeout_seconds: float) -> None:
        self._settings = settings
        self._timeout = stream_timeout_seconds
        self._stubs: dict[str, blob_pb2_grpc.BlobServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        interceptors = token_file_interceptors(settings.blob_token_file, "regions.blob_token_file") or None
        options = [*CHANNEL_OPTIONS, *channel_options(settings.tls)]
        for peer in settings.peers:
            if not peer.blob_target or peer.name == settings.local:
                continue
            if settings.tls.enabled:
                channel = grpc.aio.secure_channel(
                    peer.blob_target, channel_credentials(settings.tls, section="regions.tls"),
                    options=options, interceptors=interceptors)
            else:
                channel = grpc.aio.insecure_channel(peer.blob_target, options=options, interceptors=interceptors)
            self._channels.append(channel)
            self._stubs[peer.name] = blob_pb2_grpc.BlobServiceStub(channel)

    @staticmethod
    def build(settings: RegionSettings, *, stream_timeout_seconds: float) -> RegionSources | None:
        if not settings.local or not any(p.blob_target for p in settings.peers if p.name != settings.local):
            return None
        return RegionSources(settings, stream_timeout_seconds=stream_timeout_seconds)

    def describe(self, regions: Sequence[str]) -> str:
        return f"region {'/'.join(regions)}'s blob plane"

    @contextlib.asynccontextmanager
    async def open(self, digest: str, regions: Sequence[str]) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """(size, chunks) of `digest` from the first of `regions` whose blob plane holds it.
        Raises BLOB_UNKNOWN when none does (naming them), UPSTREAM_FAILED when none answers."""
        failures: list[str] = []
        for region in regions:
            stub = self._stubs.get(region)
            if stub is None:
                failures.append(f"{region}: no regions.peers[].blob_target")
                continue
            try:
                info = await stub.StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=_STAT_SECONDS)
            except grpc.RpcError as error:
                failure = from_rpc_error(error)
                failures.append(f"{region}: {failure.message}")
                continue
            call = stub.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest), timeout=self._timeout)

            async def chunks(call=call, region=region) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
                try:
                    async for message in call:
                        yield message.data
                except grpc.RpcError as error:
                    raise RegistryError(ErrorKind.UPSTREAM_FAILED,
                                        f"region {region}'s blob plane broke off blob {digest}: "
                                        f"{from_rpc_error(error).message}", {"digest": digest}) from None

            try:
                yield info.size, chunks()
            finally:
                call.cancel()
            return
        unknown = all("unknown" in f.lower() for f in failures) and failures
        raise RegistryError(
            ErrorKind.BLOB_UNKNOWN if unknown else ErrorKind.UPSTREAM_FAILED,
            f"blob {digest} is not in this region's storage, and no other region could serve it "
            f"({'; '.join(failures) or 'none named'})",
            {"digest": digest},
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
