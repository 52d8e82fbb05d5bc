"""AdminServiceServicer: translates AdminService protobuf messages to GcStore / sweep calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from lading.metadata.v1 import admin_pb2 as pb
from lading.metadata.v1 import admin_pb2_grpc

from services.common.digests import Digest
from services.common.names import validate_repository
from services.metadata.gc import sweep
from services.metadata.gc.store import GcStore, RunTotals

_MAX_LIST = 10_000


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def run_message(run: dict[str, Any]) -> pb.GcRun:
    return pb.GcRun(started_at=_seconds(run["started_at"]), finished_at=_seconds(run["finished_at"]),
                    dry_run=run["dry_run"], manifests_deleted=run["manifests_deleted"],
                    links_removed=run["links_removed"], blobs_deleted=run["blobs_deleted"],
                    bytes_freed=run["bytes_freed"], errors=run["errors"])


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, gc: GcStore, *, delete_untagged: bool, orphan_grace_seconds: float = 3600.0) -> None:
        self._gc = gc
        # Called after each recorded GC run (main.py: the quota recount, services/metadata/policies).
        self.after_run: Callable[[], Awaitable[object]] | None = None
        self._delete_untagged = delete_untagged
        self._orphan_grace = orphan_grace_seconds

    @property
    def gc(self) -> GcStore:
        return self._gc

    def _untagged(self, requested: bool) -> bool:
        return self._delete_untagged or requested

    async def GcPlan(self, request: pb.GcPlanRequest, context: grpc.aio.ServicerContext) -> pb.GcPlanResponse:
        result = await sweep.plan(self._gc, delete_untagged=self._untagged(request.delete_untagged))
        return pb.GcPlanResponse(manifests=result.manifests, manifest_bytes=result.manifest_bytes, links=result.links,
                                 blobs=result.blobs, blob_bytes=result.blob_bytes, deleting=result.deleting)

    async def GcSweepMetadata(self, request: pb.GcSweepMetadataRequest,
                              context: grpc.aio.ServicerContext) -> pb.GcSweepMetadataResponse:
        await self._gc.refuse_in_maintenance()
        manifests, links = await sweep.sweep(self._gc, delete_untagged=self._untagged(request.delete_untagged))
        return pb.GcSweepMetadataResponse(manifests_deleted=manifests, links_removed=links)

    async def GcMarkBlobs(self, request: pb.GcMarkBlobsRequest,
                          context: grpc.aio.ServicerContext) -> pb.GcMarkBlobsResponse:
        await self._gc.refuse_in_maintenance()
        marked = await sweep.mark(self._gc)
        return pb.GcMarkBlobsResponse(blobs=[pb.BlobInfo(digest=c.digest, size=c.size, state="deleting")
                                             for c in marked])

    async def GcForgetBlob(self, request: pb.GcForgetBlobRequest,
                           context: grpc.aio.ServicerContext) -> pb.GcForgetBlobResponse:
        return pb.GcForgetBlobResponse(forgotten=await self._gc.forget_blob(str(Digest.parse(request.digest))))

    async def GcClaimOrphans(self, request: pb.GcClaimOrphansRequest,
                             context: grpc.aio.ServicerContext) -> pb.GcClaimOrphansResponse:
        if not request.dry_run:
            await self._gc.refuse_in_maintenance()
        listed = [sweep.ListedBlob(str(Digest.parse(b.digest)), b.size, b.modified_at) for b in request.blobs]
        found = await sweep.orphans(self._gc, listed, grace_seconds=self._orphan_grace, claim=not request.dry_run)
        return pb.GcClaimOrphansResponse(orphans=[pb.BlobInfo(digest=c.digest, size=c.size, state=c.state)
                                                  for c in found])

    async def GcRecordRun(self, request: pb.GcRun, context: grpc.aio.ServicerContext) -> pb.GcRecordRunResponse:
        totals = RunTotals(request.manifests_deleted, request.links_removed, request.blobs_deleted,
                           request.bytes_freed, request.errors)
        await self._gc.record_run(datetime.fromtimestamp(request.started_at, UTC), request.dry_run, totals)
        await self._gc.drop_expired_holds()
        if self.after_run is not None and not request.dry_run:
            await self.after_run()
        return pb.GcRecordRunResponse()

    async def GcStats(self, request: pb.GcStatsRequest, context: grpc.aio.ServicerContext) -> pb.GcStatsResponse:
        stats = await self._gc.stats(request.last_runs or 5)
        states = stats["blobs_by_state"]
        runs = [run_message(r) for r in stats["runs"]]
        return pb.GcStatsResponse(
            active_blobs=states.get("active", (0, 0))[0], active_bytes=states.get("active", (0, 0))[1],
            pending_blobs=states.get("pending", (0, 0))[0], deleting_blobs=states.get("deleting", (0, 0))[0],
            held=stats["held"], manifest_candidates=stats["manifest_candidates"],
            link_candidates=stats["link_candidates"], blob_candidates=stats["blob_candidates"], runs=runs)

    async def ListRepositories(self, request: pb.AdminListRepositoriesRequest,
                               context: grpc.aio.ServicerContext) -> pb.AdminListRepositoriesResponse:
        return pb.AdminListRepositoriesResponse(repositories=[
            pb.RepositorySummary(name=r.name, tags=r.tags, manifests=r.manifests, bytes=r.bytes)
            for r in await self._gc.list_repositories()])

    async def ListTags(self, request: pb.AdminListTagsRequest,
                       context: grpc.aio.ServicerContext) -> pb.AdminListTagsResponse:
        validate_repository(request.repository)
        return pb.AdminListTagsResponse(tags=[pb.TagInfo(name=n, digest=d)
                                              for n, d in await self._gc.list_tags(request.repository)])

    async def ListManifests(self, request: pb.AdminListManifestsRequest,
                            context: grpc.aio.ServicerContext) -> pb.AdminListManifestsResponse:
        validate_repository(request.repository)
        return pb.AdminListManifestsResponse(manifests=[
            pb.ManifestInfo(digest=m.digest, media_type=m.media_type, size=m.size, tags=m.tags)
            for m in await self._gc.list_manifests(request.repository)])

    async def DeleteRepository(self, request: pb.DeleteRepositoryRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteRepositoryResponse:
        validate_repository(request.repository)
        await self._gc.refuse_in_maintenance()
        manifests, links = await self._gc.delete_repository(request.repository)
        return pb.DeleteRepositoryResponse(manifests=manifests, links=links)

    async def WhereBlob(self, request: pb.WhereBlobRequest, context: grpc.aio.ServicerContext) -> pb.WhereBlobResponse:
        state, size, linked, users = await self._gc.where_blob(str(Digest.parse(request.digest)))
        return pb.WhereBlobResponse(state=state, size=size, repositories=linked,
                                    manifests=[pb.ManifestRef(repository=r, digest=d) for r, d in users])

    async def ListBlobs(self, request: pb.ListBlobsRequest, context: grpc.aio.ServicerContext) -> pb.ListBlobsResponse:
        limit = min(max(request.limit, 1), _MAX_LIST) if request.limit else 1000
        return pb.ListBlobsResponse(blobs=[pb.BlobInfo(digest=d, size=s, state="active")
                                           for d, s in await self._gc.referenced_blobs(request.last, limit)])

    async def SetMaintenance(self, request: pb.SetMaintenanceRequest,
                             context: grpc.aio.ServicerContext) -> pb.MaintenanceStatus:
        await self._gc.set_maintenance(request.on)
        return pb.MaintenanceStatus(on=request.on)

    async def GetMaintenance(self, request: pb.GetMaintenanceRequest,
                             context: grpc.aio.ServicerContext) -> pb.MaintenanceStatus:
        return pb.MaintenanceStatus(on=await self._gc.maintenance(fresh=True))
