"""Online garbage collection, maintenance mode and admin listings for the metadata plane.

What is tracked (migration 0003_gc): a global `blobs` row per digest (`pending` | `active` |
`deleting`, with a random `epoch` per incarnation), review holds (`gc_review`), run history
(`gc_runs`) and registry flags (maintenance mode).

Rules of a run (`lading gc`, services/metadata/gc/worker.py):
1. untagged manifests go only with gc.delete_untagged_manifests (or `--delete-untagged`) and when
   nothing keeps them: not a child of any index in the repository, not the subject of a tagged
   referrer, and (for a referrer) its subject is gone. Repeated until nothing more goes;
2. a repository link goes when no manifest in that repository references the digest;
3. a blob row goes `deleting` when no repository links it; its bytes are then deleted through
   BlobService.DeleteBlob, and only then the row is removed. A failed byte deletion leaves the
   row `deleting`, retried by the next run (never `active` with missing bytes);
4. orphan bytes, stored on the blob plane with no `blobs` row (an upload committed whose LinkBlob
   never happened, leftovers), go once older than gc.orphan_grace_seconds (by the blob plane's
   time of the commit): the run lists the blob plane (BlobService.ListBlobs) and the metadata
   plane *claims* each orphan by inserting its row `deleting` where none exists (one
   transaction; a row that appeared meanwhile means it is no orphan). From then on it is like
   any `deleting` blob: a LinkBlob, mount or HEAD meets BLOB_UNKNOWN (upload it again), the
   bytes are deleted, the row forgotten, and the blob can be pushed again.
Every step waits gc.review_delay_seconds: links from their creation, blob rows from their last
state change, and anything that stopped being referenced (tag deleted or moved, manifest
deleted, blob unlinked, repository deleted) through a review hold written *before* the change.

The protocol that closes the HEAD-then-delete race (each step one transaction):
- collector: lock the row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE makes
  writers take turns), re-check in a new statement that nothing references/links it, then delete
  the link / mark the blob `deleting`;
- LinkBlob: claims the `blobs` row and locks it FOR SHARE in the link's own transaction; a row
  that is not `active` answers BLOB_UNKNOWN ("upload it again"); MountBlob mounts only `active`
  rows (otherwise the gateway falls back to an upload, 202);
- StatBlob (HEAD) and PutManifest join the `blobs` row with state `active` in the same query /
  transaction (FOR SHARE), so a blob mid-deletion is unknown to them and a manifest can never be
  stored pointing at bytes that are being deleted (MANIFEST_BLOB_UNKNOWN);
- re-upload after a GC: the gateway commits bytes on the blob plane and then calls LinkBlob. If
  the collector deleted those bytes in between, the row is gone or `deleting`. A LinkBlob that
  finds no `active` row inserts it `pending` with a fresh epoch, asks the blob plane
  (BlobService.StatBlob over gRPC, gc.blob_target) whether the bytes exist, and then flips the
  row to `active` only if it is still `pending` with *its* epoch; otherwise BLOB_UNKNOWN and the
  client uploads again. An `active` row therefore always has bytes. Without gc.blob_target (a
  metadata plane run alone) the check is skipped and LinkBlob trusts the caller.
- vouched first links (the push path's shortcut): when the blob plane's CommitUpload wrote the
  bytes itself (`stored_now`: they were not stored before, so their modification time is the
  commit's), the gateway's LinkBlob says how long ago that commit began (`stored_seconds_ago`),
  and the link inserts the row `active` (or confirms a `pending` one) in its own transaction,
  with no claim and no StatBlob. Why that is safe: bytes with no row are deleted only as orphans,
  claimed once older than gc.orphan_grace_seconds; the link must commit within half the grace
  of the commit's start (checked inside its transaction against the monotonic clock; later, it
  falls back to the claim and the question), the other half covering clock skew between the
  bytes' store and this plane. A `deleting` row still answers BLOB_UNKNOWN. One gap is left for
  the orphan sweep to close: a listing that went stale (another run deleted those old bytes
  meanwhile and a commit wrote them again) would claim fresh bytes. So the sweep's DeleteBlob
  carries the modification time it listed, the blob plane keeps bytes written later
  (`kept_newer`), and the claim is forgotten. Off with a grace under a minute.
Maintenance mode (`lading maintenance on`) is a row in `registry_flags`; every mutating metadata
call answers UNSUPPORTED (HTTP 405) "registry is in read-only maintenance mode" (cached ~1 s per
replica). The gateway asks AdminService.GetMaintenance (cached per gateway, gateway/maintenance.py)
and refuses upload POST/PATCH/PUT itself, so no bytes reach the blob plane meanwhile. The
collector's manifest deletes and `delete_repository` write delete events (services/metadata/events)
in their own transaction, as actors `lading-gc` / `lading-admin`.
"""
