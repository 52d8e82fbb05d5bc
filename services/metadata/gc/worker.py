"""One GC run driven over gRPC: `lading gc` (and tests) call `run_gc` with an AdminService stub and
a BlobService stub.

Order (safety first): sweep metadata (manifests, links) → mark unlinked blobs `deleting` (from
then on nothing can link, mount, HEAD or reference them) → delete each one's bytes on the blob
plane → forget the row. A failed byte deletion leaves the row `deleting`; the next run retries it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from lading.blob.v1 import blob_pb2
from lading.metadata.v1 import admin_pb2 as pb

from services.common.errors import ErrorKind, from_rpc_error

_TIMEOUT = 300.0
Progress = Callable[[str], None]


@dataclass(slots=True)
class RunReport:
    dry_run: bool
    manifests_deleted: int = 0
    links_removed: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0
    errors: int = 0
    seconds: float = 0.0
    # Dry run: what would go.
    plan: Any = None


async def run_gc(admin: Any, blob: Any, *, dry_run: bool = False, delete_untagged: bool = False,
                 progress: Progress | None = None, progress_every: int = 100,
                 after_mark: Callable[[list[Any]], Awaitable[None]] | None = None) -> RunReport:
    """Runs one collection. `after_mark` (tests only) runs between marking and byte deletion."""
    started = time.time()
    clock = time.monotonic()
    say = progress or (lambda _line: None)
    report = RunReport(dry_run=dry_run)
    if dry_run:
        report.plan = await admin.GcPlan(pb.GcPlanRequest(delete_untagged=delete_untagged), timeout=_TIMEOUT)
        report.seconds = time.monotonic() - clock
        return report
    swept = await admin.GcSweepMetadata(pb.GcSweepMetadataRequest(delete_untagged=delete_untagged), timeout=_TIMEOUT)
    report.manifests_deleted, report.links_removed = swept.manifests_deleted, swept.links_removed
    say(f"gc: {swept.manifests_deleted} manifest(s) deleted, {swept.links_removed} link(s) removed")
    marked = (await admin.GcMarkBlobs(pb.GcMarkBlobsRequest(), timeout=_TIMEOUT)).blobs
    say(f"gc: {len(marked)} blob(s) marked for deletion")
    if after_mark is not None:
        await after_mark(list(marked))
    for index, item in enumerate(marked, 1):
        try:
            await blob.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=item.digest), timeout=_TIMEOUT)
        except grpc.RpcError as error:
            if from_rpc_error(error).kind is not ErrorKind.BLOB_UNKNOWN:
                report.errors += 1  # stays `deleting`; retried next run
                say(f"gc: deleting {item.digest} failed ({from_rpc_error(error).message}); will retry")
                continue
        await admin.GcForgetBlob(pb.GcForgetBlobRequest(digest=item.digest), timeout=_TIMEOUT)
        report.blobs_deleted += 1
        report.bytes_freed += item.size
        if index % progress_every == 0:
            say(f"gc: {index}/{len(marked)} blobs deleted")
    report.seconds = time.monotonic() - clock
    await admin.GcRecordRun(pb.GcRun(
        started_at=int(started), finished_at=int(time.time()), dry_run=False,
        manifests_deleted=report.manifests_deleted, links_removed=report.links_removed,
        blobs_deleted=report.blobs_deleted, bytes_freed=report.bytes_freed, errors=report.errors), timeout=_TIMEOUT)
    return report
