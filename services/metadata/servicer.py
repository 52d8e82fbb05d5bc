"""MetadataServiceServicer: translates protobuf messages to `MetadataCore` calls and back, nothing else.

Errors are `RegistryError`s raised by the core; the shared interceptor (services.common.grpc_server)
turns them into rich gRPC statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import orjson
from lading.common.v1 import common_pb2
from lading.metadata.v1 import metadata_pb2 as pb
from lading.metadata.v1 import metadata_pb2_grpc

from services.common.digests import client_holds
from services.metadata.core import MetadataCore
from services.metadata.events import context as event_context

if TYPE_CHECKING:
    from services.metadata.events.outbox import EventOutbox
    from services.metadata.proxy.cache import ProxyCache
    from services.metadata.store.access import Access

_EMPTY_LINK = pb.LinkBlobResponse()
_EMPTY_UNLINK = pb.UnlinkBlobResponse()
_EMPTY_DELETE = pb.DeleteManifestResponse()


def _limit(page: common_pb2.PageRequest) -> int | None:
    return page.limit if page.has_limit else None


class MetadataServicer(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, core: MetadataCore, events: EventOutbox | None = None,
                 event_access: Access | None = None, on_change: Callable[[], None] | None = None,
                 proxy: ProxyCache | None = None) -> None:
        self._core = core
        # The pull-through cache, when upstreams are configured: manifests of its prefixes.
        self._proxy = proxy
        # Called after a committed change, so the event delivery worker sends at once.
        self._changed = on_change or (lambda: None)
        # Pull events (optional, sampled): written to the outbox after a manifest GET.
        self._events = events
        self._event_access = event_access

    async def LinkBlob(self, request: pb.LinkBlobRequest, context: grpc.aio.ServicerContext) -> pb.LinkBlobResponse:
        event_context.bind(request)
        stored_seconds_ago = request.stored_seconds_ago if request.HasField("stored_seconds_ago") else None
        await self._core.link_blob(request.repository, request.digest, request.size,
                                   stored_seconds_ago=stored_seconds_ago)
        self._changed()
        return _EMPTY_LINK

    async def StatBlob(self, request: pb.StatBlobRequest, context: grpc.aio.ServicerContext) -> pb.StatBlobResponse:
        size = await self._core.stat_blob(request.repository, request.digest)
        # A blob GET carries its request (HEADs do not): a layer pull, as Distribution reports it.
        if (self._events is not None and self._event_access is not None and request.HasField("context")
                and self._events.wants_pull()):
            event_context.bind(request)
            upstream = "" if self._proxy is None else self._proxy.upstream_name(request.repository)
            await self._events.record_blob_pull(self._event_access, request.repository, request.digest, size,
                                                through_cache=upstream)
            self._changed()
        return pb.StatBlobResponse(digest=request.digest, size=size)

    async def UnlinkBlob(
        self, request: pb.UnlinkBlobRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnlinkBlobResponse:
        event_context.bind(request)
        await self._core.unlink_blob(request.repository, request.digest)
        return _EMPTY_UNLINK

    async def MountBlob(self, request: pb.MountBlobRequest, context: grpc.aio.ServicerContext) -> pb.MountBlobResponse:
        event_context.bind(request)
        size = await self._core.mount_blob(request.repository, request.digest, request.from_repository)
        self._changed()
        if size is None:
            return pb.MountBlobResponse(mounted=False)
        return pb.MountBlobResponse(mounted=True, size=size)

    async def PutManifest(
        self, request: pb.PutManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutManifestResponse:
        event_context.bind(request)
        result = await self._core.put_manifest(
            request.repository, request.reference, request.media_type, request.payload
        )
        self._changed()
        return pb.PutManifestResponse(digest=result.digest, subject_digest=result.subject_digest or "")

    async def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetManifestResponse:
        warning = upstream = ""
        if self._proxy is not None:
            manifest, warning, upstream = await self._proxy.get_manifest(
                request.repository, request.reference, omit_payload=request.omit_payload
            )
        else:
            manifest = await self._core.get_manifest(
                request.repository, request.reference, omit_payload=request.omit_payload
            )
        # A GET of a manifest the client holds is answered 304 by the gateway: no pull, and no
        # payload to send it.
        held = client_holds(request.held_digests, manifest.digest)
        if (self._events is not None and self._event_access is not None and not request.omit_payload
                and not held and self._events.wants_pull()):
            event_context.bind(request)
            tag = None if ":" in request.reference else request.reference
            await self._events.record_pull(self._event_access, request.repository, tag, manifest.digest,
                                           manifest.media_type, manifest.size, through_cache=upstream)
            self._changed()
        return pb.GetManifestResponse(
            digest=manifest.digest, media_type=manifest.media_type, size=manifest.size,
            payload=b"" if held else manifest.payload or b"", warning=warning,
            pull_events=self._events is not None and self._event_access is not None and self._events.records_pulls,
        )

    async def DeleteManifest(
        self, request: pb.DeleteManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteManifestResponse:
        event_context.bind(request)
        await self._core.delete_manifest(request.repository, request.reference)
        self._changed()
        return _EMPTY_DELETE

    async def ListTags(self, request: pb.ListTagsRequest, context: grpc.aio.ServicerContext) -> pb.ListTagsResponse:
        page = await self._core.list_tags(request.repository, limit=_limit(request.page), last=request.page.last)
        return pb.ListTagsResponse(tags=page.items, page=common_pb2.PageResponse(has_more=page.has_more))

    async def ListRepositories(
        self, request: pb.ListRepositoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRepositoriesResponse:
        page = await self._core.list_repositories(limit=_limit(request.page), last=request.page.last)
        return pb.ListRepositoriesResponse(
            repositories=page.items, page=common_pb2.PageResponse(has_more=page.has_more)
        )

    async def ListReferrers(
        self, request: pb.ListReferrersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReferrersResponse:
        page = await self._core.list_referrers(
            request.repository, request.subject_digest, artifact_type=request.artifact_type,
            limit=_limit(request.page), last=request.page.last,
        )
        referrers = [
            common_pb2.Descriptor(
                media_type=item.media_type,
                digest=item.digest,
                size=item.size,
                artifact_type=item.artifact_type or "",
                annotations=orjson.loads(item.annotations) if item.annotations else None,
            )
            for item in page.items
        ]
        return pb.ListReferrersResponse(referrers=referrers, page=common_pb2.PageResponse(has_more=page.has_more))
