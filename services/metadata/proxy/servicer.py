"""ProxyService: translates between protobuf and `ProxyCache` (services/metadata/proxy/cache.py)."""

from __future__ import annotations

import grpc
from lading.common.v1 import sources_pb2
from lading.metadata.v1 import proxy_pb2 as pb
from lading.metadata.v1 import proxy_pb2_grpc

from services.metadata.proxy.cache import ProxyCache

SERVICE_NAME = "lading.metadata.v1.ProxyService"
_OUTCOMES = {
    "no_source": pb.BeginBlobFetchResponse.OUTCOME_NO_SOURCE,
    "linked": pb.BeginBlobFetchResponse.OUTCOME_LINKED,
    "fetch": pb.BeginBlobFetchResponse.OUTCOME_FETCH,
}


class ProxyServicer(proxy_pb2_grpc.ProxyServiceServicer):
    def __init__(self, cache: ProxyCache | None) -> None:
        # None: no upstream configured (every blob has no source; the status is empty).
        self._cache = cache

    async def BeginBlobFetch(self, request: pb.BeginBlobFetchRequest, context: grpc.aio.ServicerContext
                             ) -> pb.BeginBlobFetchResponse:
        if self._cache is None:
            return pb.BeginBlobFetchResponse(outcome=pb.BeginBlobFetchResponse.OUTCOME_NO_SOURCE)
        decision = await self._cache.begin_blob_fetch(request.repository, request.digest,
                                                      wait_seconds=request.wait_seconds)
        response = pb.BeginBlobFetchResponse(outcome=_OUTCOMES[decision.outcome], size=decision.size,
                                             lease_id=decision.lease_id)
        if decision.outcome == "fetch":
            response.lease_seconds = self._cache.leases.lifetime_seconds
            response.source.CopyFrom(sources_pb2.BlobSource(
                upstream=sources_pb2.UpstreamSource(upstream=decision.upstream, repository=decision.remote)))
        return response

    async def EndBlobFetch(self, request: pb.EndBlobFetchRequest, context: grpc.aio.ServicerContext
                           ) -> pb.EndBlobFetchResponse:
        if self._cache is not None:
            await self._cache.end_blob_fetch(request.repository, request.digest, lease_id=request.lease_id,
                                             fetched=request.fetched, size=request.size)
        return pb.EndBlobFetchResponse()

    async def RenewBlobFetch(self, request: pb.RenewBlobFetchRequest, context: grpc.aio.ServicerContext
                             ) -> pb.RenewBlobFetchResponse:
        if self._cache is None:
            return pb.RenewBlobFetchResponse(held=False)
        return pb.RenewBlobFetchResponse(held=await self._cache.renew_blob_fetch(request.digest, request.lease_id))

    async def ProxyStatus(self, request: pb.ProxyStatusRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ProxyStatusResponse:
        if self._cache is None:
            return pb.ProxyStatusResponse()
        return pb.ProxyStatusResponse(upstreams=[pb.UpstreamStatus(**row) for row in await self._cache.status()])


    async def EvictCached(self, request: pb.EvictCachedRequest, context: grpc.aio.ServicerContext
                          ) -> pb.EvictCachedResponse:
        if self._cache is None:
            return pb.EvictCachedResponse()
        chosen, removed = await self._cache.evict(older_than_seconds=request.older_than_seconds,
                                                  upstream=request.upstream, dry_run=request.dry_run)
        return pb.EvictCachedResponse(
            blobs=[pb.EvictedBlob(upstream=u, digest=d, size=size, reason=reason) for u, d, size, reason in chosen],
            manifests_removed=removed,
        )


def add_to_server(servicer: ProxyServicer, server: grpc.aio.Server) -> None:
    proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server)
