"""The metadata-side steps of a GC run over `GcStore`: plan (dry run), sweep, mark.

A run is: `sweep` (untagged manifests when retention allows, in passes until nothing more goes;
then repository links no manifest there references) → `mark` (unlinked blobs become `deleting`)
→ the caller deletes each `deleting` blob's bytes on the blob plane and calls `forget` → the
caller lists the blob plane page by page and `orphans` claims the bytes no row accounts for
(older than gc.orphan_grace_seconds), whose bytes it then deletes and forgets the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from services.metadata.gc.guard import DELETING
from services.metadata.gc.store import GLOBAL, Candidate, GcStore

log = logging.getLogger("lading.metadata.gc")
# Manifest passes per sweep: an index freed in one pass frees its children in the next.
_MAX_PASSES = 8


@dataclass(frozen=True, slots=True)
class ListedBlob:
    """One blob the blob plane lists (BlobService.ListBlobs)."""

    digest: str
    size: int
    # Unix seconds when the bytes were put in place (the blob plane's clock).
    modified_at: float


@dataclass(frozen=True, slots=True)
class Plan:
    manifests: int
    manifest_bytes: int
    links: int
    blobs: int
    blob_bytes: int
    deleting: int


async def plan(gc: GcStore, *, delete_untagged: bool) -> Plan:
    """What a run with the same `delete_untagged` would free now: exactly what `sweep` then `mark`
    would take, untagged manifests that only become collectable after an index above them goes
    (and the links and blobs only they used) included. Computed by `GcStore.simulate`, which
    applies the run's own conditions in one transaction and rolls it back."""
    manifests, links, blobs = await gc.simulate(delete_untagged=delete_untagged, passes=_MAX_PASSES)
    return Plan(
        manifests=len(manifests), manifest_bytes=sum(c.size for c in manifests), links=len(links),
        blobs=len(blobs), blob_bytes=sum(c.size for c in blobs),
        deleting=sum(1 for c in blobs if c.state == DELETING),
    )


async def sweep(gc: GcStore, *, delete_untagged: bool) -> tuple[int, int]:
    """Deletes collectable manifests and links; returns (manifests deleted, links removed)."""
    manifests_deleted = 0
    if delete_untagged:
        for _ in range(_MAX_PASSES):
            deleted = 0
            for candidate in await gc.manifest_candidates():
                if await gc.delete_manifest_if_unreferenced(candidate):
                    deleted += 1
            manifests_deleted += deleted
            if not deleted:
                break
        await gc.settle_changes()
    links_removed = 0
    for candidate in await gc.link_candidates():
        if await gc.unlink_if_unreferenced(candidate):
            links_removed += 1
    if manifests_deleted or links_removed:
        log.info("gc sweep: %d manifest(s) deleted, %d link(s) removed", manifests_deleted, links_removed)
    return manifests_deleted, links_removed


async def mark(gc: GcStore) -> list[Candidate]:
    """Marks every collectable blob `deleting`; returns the `deleting` blobs (new and left over)."""
    marked = []
    for candidate in await gc.blob_candidates():
        if await gc.mark_deleting(candidate):
            marked.append(candidate)
    return marked


async def orphans(gc: GcStore, listed: list[ListedBlob], *, grace_seconds: float, claim: bool,
                  now: float | None = None) -> list[Candidate]:
    """The orphans among `listed`: bytes older than `grace_seconds` with no `blobs` row and no
    link. With `claim`, each is claimed first (its row inserted `deleting`, see
    GcStore.claim_orphans) and only those claimed are returned; otherwise nothing changes.

    The grace keeps a blob just committed on the blob plane, whose LinkBlob is still on its way,
    out of reach; a link that arrives after a claim anyway gets BLOB_UNKNOWN (upload it again).
    """
    cutoff = (time.time() if now is None else now) - max(0.0, grace_seconds)
    old: dict[str, ListedBlob] = {}
    for item in listed:
        if item.modified_at <= cutoff:
            old.setdefault(item.digest, item)
    found = await gc.unaccounted_digests(list(old))
    if claim:
        found = await gc.claim_orphans([(digest, old[digest].size) for digest in found])
        if found:
            log.info("gc: claimed %d orphan blob(s) for deletion", len(found))
    return [Candidate("blob", GLOBAL, digest, old[digest].size, state=DELETING if claim else "")
            for digest in found]
