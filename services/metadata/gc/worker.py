"""One GC run driven over gRPC: `lading gc` (and tests) call `run_gc` with an AdminService stub and
a BlobService stub.

Order (safety first): sweep metadata (manifests, links) → mark unlinked blobs `deleting` (from
then on nothing can link, mount, HEAD or reference them) → delete each one's bytes on the blob
plane → forget the row. A failed byte deletion leaves the row `deleting`; the next run retries it.
Then orphan bytes: list the blob plane a page at a time (BlobService.ListBlobs); the metadata
plane claims the blobs of each page that have no row and are older than gc.orphan_grace_seconds
(GcClaimOrphans inserts their rows `deleting`), and they go the same way: bytes, then row.

In a replica region (issue 15) a run collects only the region's own bucket: the metadata sweep and
the marking belong to the primary region, whose run deletes its own bucket's bytes and forgets the
rows. Bytes this region holds (pushed here, fetched here on a miss, or copied by storage
replication) whose row the primary forgot are, from here, orphan bytes: the replica region's run
lists its blob plane, the claims and the forgetting go to the primary region's database (the replica
region's metadata plane forwards GcClaimOrphans and GcForgetBlob there, so the claim is decided
against the primary's rows in one transaction, never against a lagging standby), and the bytes are
deleted here. A blob still known anywhere keeps its bytes in every region.
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
# Blobs per ListBlobs page (and per GcClaimOrphans call) when looking for orphan bytes.
_ORPHAN_PAGE = 1000
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
    # Orphan bytes (no `blobs` row, past the grace): deleted, or in a dry run found. Deleted
    # orphans also count in blobs_deleted / bytes_freed.
    orphans: int = 0
    orphan_bytes: int = 0


async def run_gc(admin: Any, blob: Any, *, dry_run: bool = False, delete_untagged: bool = False,
                 progress: Progress | None = None, progress_every: int = 100, replica_region: bool = False,
                 after_mark: Callable[[list[Any]], Awaitable[None]] | None = None,
                 after_orphan_claim: Callable[[list[Any]], Awaitable[None]] | None = None) -> RunReport:
    """Runs one collection. `replica_region`: only this region's bucket's bytes that no region
    references any more (see the module's docstring); `admin` is then the replica region's metadata
    plane (which forwards the claims to the primary region) or the primary's own, `blob` the
    replica region's blob plane. `after_mark` (tests only) runs between marking and byte deletion,
    `after_orphan_claim` (tests only) between claiming a page's orphans and deleting their bytes."""
    started = time.time()
    clock = time.monotonic()
    say = progress or (lambda _line: None)
    report = RunReport(dry_run=dry_run)
    if dry_run:
        report.plan = (pb.GcPlanResponse() if replica_region else
                       await admin.GcPlan(pb.GcPlanRequest(delete_untagged=delete_untagged), timeout=_TIMEOUT))
        await _orphans(admin, blob, report, say, dry_run=True)
        report.seconds = time.monotonic() - clock
        return report
    if replica_region:
        say("gc: replica region: only this region's bytes that no region references any more "
            "(the primary region's collector sweeps the metadata)")
        await _orphans(admin, blob, report, say, dry_run=False, after_claim=after_orphan_claim)
        report.seconds = time.monotonic() - clock
        if report.blobs_deleted or report.errors:  # the history shows what this region freed
            await _record(admin, report, started)
        return report
    swept = await admin.GcSweepMetadata(pb.GcSweepMetadataRequest(delete_untagged=delete_untagged), timeout=_TIMEOUT)
    report.manifests_deleted, report.links_removed = swept.manifests_deleted, swept.links_removed
    say(f"gc: {swept.manifests_deleted} manifest(s) deleted, {swept.links_removed} link(s) removed")
    marked = (await admin.GcMarkBlobs(pb.GcMarkBlobsRequest(), timeout=_TIMEOUT)).blobs
    say(f"gc: {len(marked)} blob(s) marked for deletion")
    if after_mark is not None:
        await after_mark(list(marked))
    for index, item in enumerate(marked, 1):
        await _delete_bytes(admin, blob, item, report, say)
        if index % progress_every == 0:
            say(f"gc: {index}/{len(marked)} blobs deleted")
    await _orphans(admin, blob, report, say, dry_run=False, after_claim=after_orphan_claim)
    report.seconds = time.monotonic() - clock
    await _record(admin, report, started)
    return report


async def _record(admin: Any, report: RunReport, started: float) -> None:
    await admin.GcRecordRun(pb.GcRun(
        started_at=int(started), finished_at=int(time.time()), dry_run=False,
        manifests_deleted=report.manifests_deleted, links_removed=report.links_removed,
        blobs_deleted=report.blobs_deleted, bytes_freed=report.bytes_freed, errors=report.errors), timeout=_TIMEOUT)


async def _delete_bytes(admin: Any, blob: Any, item: Any, report: RunReport, say: Progress, *,
                        listed_modified_at: float = 0.0) -> bool:
    """Deletes a `deleting` blob's bytes, then forgets its row; False (row left `deleting`, for
    the next run to retry) when the blob plane fails. `listed_modified_at` (an orphan's): the
    blob plane keeps bytes written after that listing (a commit of the same digest since, whose
    LinkBlob may have vouched for them: see services/metadata/gc/__init__.py); the claim is then
    forgotten, bytes and all kept, and False is returned."""
    try:
        answer = await blob.DeleteBlob(
            blob_pb2.DeleteBlobRequest(digest=item.digest, listed_modified_at=listed_modified_at), timeout=_TIMEOUT)
    except grpc.RpcError as error:
        if from_rpc_error(error).kind is not ErrorKind.BLOB_UNKNOWN:
            report.errors += 1  # stays `deleting`; retried next run
            say(f"gc: deleting {item.digest} failed ({from_rpc_error(error).message}); will retry")
            return False
    else:
        if answer.kept_newer:
            await admin.GcForgetBlob(pb.GcForgetBlobRequest(digest=item.digest), timeout=_TIMEOUT)
            say(f"gc: kept {item.digest}: stored again after it was listed as an orphan")
            return False
    await admin.GcForgetBlob(pb.GcForgetBlobRequest(digest=item.digest), timeout=_TIMEOUT)
    report.blobs_deleted += 1
    report.bytes_freed += item.size
    return True


async def _orphans(admin: Any, blob: Any, report: RunReport, say: Progress, *, dry_run: bool,
                   after_claim: Callable[[list[Any]], Awaitable[None]] | None = None) -> None:
    """Walks the blob plane's listing; the metadata plane picks (and, unless `dry_run`, claims)
    each page's orphans, whose bytes are then deleted and rows forgotten. A blob plane or
    metadata plane without the listing calls (older versions) is skipped with a note."""
    token = ""
    try:
        while True:
            page = await blob.ListBlobs(blob_pb2.ListBlobsRequest(page_size=_ORPHAN_PAGE, page_token=token),
                                        timeout=_TIMEOUT)
            if page.blobs:
                found = list((await admin.GcClaimOrphans(pb.GcClaimOrphansRequest(
                    blobs=[pb.OrphanCandidate(digest=b.digest, size=b.size, modified_at=b.modified_at)
                           for b in page.blobs], dry_run=dry_run), timeout=_TIMEOUT)).orphans)
                if dry_run:
                    report.orphans += len(found)
                    report.orphan_bytes += sum(item.size for item in found)
                else:
                    if found and after_claim is not None:
                        await after_claim(found)
                    listed = {b.digest: b.modified_at for b in page.blobs}
                    for item in found:
                        if await _delete_bytes(admin, blob, item, report, say,
                                               listed_modified_at=listed.get(item.digest, 0.0)):
                            report.orphans += 1
                            report.orphan_bytes += item.size
            token = page.next_page_token
            if not token:
                break
    except grpc.RpcError as error:
        failure = from_rpc_error(error)
        if failure.kind is ErrorKind.UNSUPPORTED:  # an older plane without these calls; maintenance mode
            say(f"gc: orphan bytes skipped ({failure.message})")
            return
        report.errors += 1
        say(f"gc: looking for orphan bytes failed ({failure.message}); the next run goes on")
        return
    if report.orphans:
        verb = "would be deleted" if dry_run else "deleted"
        say(f"gc: {report.orphans} orphan blob(s) ({report.orphan_bytes} bytes) {verb}")
