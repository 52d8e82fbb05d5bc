"""FetchService: translates FetchBlob to `FetchOnMiss` (services/blob/fetch.py) over a source."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lading.blob.v1 import fetch_pb2, fetch_pb2_grpc

from services.blob.fetch import COMMITTED, Begun, FetchOnMiss
from services.blob.region_source import RegionSources
from services.common.errors import ErrorKind, RegistryError
from services.common.upstream import Upstreams
from services.common.wire import already_encoded, bytes_field_number, encode_bytes_field

SERVICE_NAME = "lading.blob.v1.FetchService"
_DATA_FIELD = bytes_field_number(fetch_pb2.FetchBlobResponse, "data")
_COMMITTED = fetch_pb2.FetchBlobResponse(committed=True)


def _begun(item: Begun) -> fetch_pb2.FetchBlobResponse:
    return fetch_pb2.FetchBlobResponse(size=item.size, redirect_url=item.redirect_url,
                                       commit_follows=item.commit_follows)


class FetchServicer(fetch_pb2_grpc.FetchServiceServicer):
    def __init__(self, fetcher: FetchOnMiss, upstreams: Upstreams | None,
                 regions: RegionSources | None = None) -> None:
        self._fetcher = fetcher
        self._upstreams = upstreams
        self._regions = regions

    async def FetchBlob(self, request: fetch_pb2.FetchBlobRequest, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[fetch_pb2.FetchBlobResponse]:
        async for item in self._items(request):
            if isinstance(item, Begun):
                yield _begun(item)
            elif item is COMMITTED:
                yield _COMMITTED
            else:
                yield fetch_pb2.FetchBlobResponse(data=bytes(item))  # type: ignore[arg-type]

    async def fetch_blob_encoded(self, request: fetch_pb2.FetchBlobRequest, context: grpc.aio.ServicerContext
                                 ) -> AsyncIterator[bytes]:
        """FetchBlob yielding each FetchBlobResponse already in wire form (see `add_to_server`)."""
        async for item in self._items(request):
            if isinstance(item, Begun):
                yield _begun(item).SerializeToString()
            elif item is COMMITTED:
                yield _COMMITTED.SerializeToString()
            else:
                yield encode_bytes_field(_DATA_FIELD, item)  # type: ignore[arg-type]

    async def _items(self, request: fetch_pb2.FetchBlobRequest) -> AsyncIterator[Begun | bytes | object]:
        """`Begun` (the size, maybe a URL to read the bytes from), then the bytes, then maybe
        `COMMITTED` (FetchOnMiss.fetch)."""
        kind = request.source.WhichOneof("kind")
        if kind == "region":
            async for item in self._from_regions(request.digest, list(request.source.region.regions)):
                yield item
            return
        if kind != "upstream":
            raise RegistryError(ErrorKind.UNSUPPORTED, f"blob source {kind or '(none)'} is not supported here")
        if self._upstreams is None:
            raise RegistryError(ErrorKind.INTERNAL, "this blob plane has no [[proxy.upstreams]]; every plane needs "
                                "the same proxy settings")
        upstream = self._upstreams.named(request.source.upstream.upstream)
        remote = request.source.upstream.repository
        digest = request.digest

        def source():  # type: ignore[no-untyped-def]
            return upstream.open_blob(remote, digest)

        async def confirm() -> int:
            return await upstream.head_blob(remote, digest)

        async for item in self._fetcher.fetch(digest, source, describe=upstream.describe(), confirm=confirm,
                                              redirect=request.allow_redirect,
                                              tail_when_verified=request.tail_when_verified):
            yield item

    async def _from_regions(self, digest: str, regions: list[str]) -> AsyncIterator[Begun | bytes]:
        """Another region's blob plane as the source (services/blob/region_source.py). Bytes already
        stored here are served as they are: the metadata plane checked the link, and a region's
        storage holds every region's blobs under the same digest."""
        sources = self._regions
        if sources is None:
            raise RegistryError(ErrorKind.BLOB_UNKNOWN, f"blob {digest} is not in this region's storage, and this "
                                "blob plane has no regions.peers[].blob_target to fetch it from", {"digest": digest})

        def source():  # type: ignore[no-untyped-def]
            return sources.open(digest, regions)

        async def confirm() -> None:
            return None

        async for item in self._fetcher.fetch(digest, source, describe=sources.describe(regions), confirm=confirm):
            yield item


def add_to_server(servicer: FetchServicer, server: grpc.aio.Server) -> None:
    """FetchBlob's data messages are encoded by hand, as ReadBlob's (services/blob/servicer.py
    says why: a fresh upb message around 1 MiB cost ~2.7 ms per MiB to build and serialise here,
    0.17 s of a 64 MiB cold pull); the wire format is the generated one."""
    fetch_pb2_grpc.add_FetchServiceServicer_to_server(servicer, server)
    server.add_registered_method_handlers(
        SERVICE_NAME,
        {
            "FetchBlob": grpc.unary_stream_rpc_method_handler(
                servicer.fetch_blob_encoded,
                request_deserializer=fetch_pb2.FetchBlobRequest.FromString,
                response_serializer=already_encoded,
            ),
        },
    )
