"""FetchService: translates FetchBlob to `FetchOnMiss` (services/blob/fetch.py) over a source."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lading.blob.v1 import fetch_pb2, fetch_pb2_grpc

from services.blob.fetch import FetchOnMiss
from services.common.errors import ErrorKind, RegistryError
from services.common.upstream import Upstreams

SERVICE_NAME = "lading.blob.v1.FetchService"


class FetchServicer(fetch_pb2_grpc.FetchServiceServicer):
    def __init__(self, fetcher: FetchOnMiss, upstreams: Upstreams | None) -> None:
        self._fetcher = fetcher
        self._upstreams = upstreams

    async def FetchBlob(self, request: fetch_pb2.FetchBlobRequest, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[fetch_pb2.FetchBlobResponse]:
        kind = request.source.WhichOneof("kind")
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

        async for item in self._fetcher.fetch(digest, source, describe=upstream.describe(), confirm=confirm):
            if isinstance(item, int):
                yield fetch_pb2.FetchBlobResponse(size=item)
            else:
                yield fetch_pb2.FetchBlobResponse(data=bytes(item))


def add_to_server(servicer: FetchServicer, server: grpc.aio.Server) -> None:
    fetch_pb2_grpc.add_FetchServiceServicer_to_server(servicer, server)
