"""`GuardedStore`: the MetadataStore the metadata service serves, wrapping `SqlMetadataStore` with
maintenance mode, review holds and the blob-plane confirmation of a blob's first link.

- Maintenance mode: every mutating call raises UNSUPPORTED ("registry is in read-only maintenance
  mode") while the flag is on (cached ~1 s per replica). Reads pass.
- Review holds: before a tag, manifest or link is removed, what it referenced is held for
  gc.review_delay_seconds (written before the removal, so a GC run can never miss the hold).
- LinkBlob: when the digest has no `active` row, a `pending` row is claimed, the blob plane is
  asked (BlobService.StatBlob over gRPC) whether the bytes exist, and only then is the row made
  `active` (matching the claimed epoch) and the link written. A link whose caller vouches that
  its blob plane wrote the bytes just now (`stored_seconds_ago`, from CommitUpload's
  `stored_now`) skips the claim and the question while the orphan grace covers it. See the
  package docstring.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from services.common.errors import ErrorKind, RegistryError
from services.metadata.gc.guard import VouchLapsed
from services.metadata.gc.store import GLOBAL, GcStore
from services.metadata.store.base import MetadataStore, NewManifest, Page, Referrer, StoredManifest

# Answers whether the blob plane holds the bytes of `digest` (None: no blob plane configured).
BytesExist = Callable[[str], Awaitable[bool]]
# Below this orphan grace the window a vouched link would have is too short to be worth relying
# on (tests and small setups set it to seconds): every first link asks the blob plane.
MIN_VOUCH_GRACE_SECONDS = 60.0


def _upload_again(digest: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UNKNOWN,
        f"blob {digest} is not in storage (it may have just been garbage-collected); upload it again",
        {"digest": digest},
    )


class GuardedStore:
    def __init__(self, inner: MetadataStore, gc: GcStore, bytes_exist: BytesExist | None, *,
                 orphan_grace_seconds: float = 0.0) -> None:
        self._inner = inner
        self._gc = gc
        self._bytes_exist = bytes_exist
        self._orphan_grace = orphan_grace_seconds

    def _vouch_deadline(self, stored_seconds_ago: float | None) -> float | None:
        """Until when (time.monotonic()) a link may rely on bytes stored `stored_seconds_ago`
        without asking the blob plane; None when it may not at all.

        The orphan sweep takes bytes without a `blobs` row only once their modification time
        is `orphan_grace_seconds` old, so bytes a commit has just written are safe from it until
        their link's transaction makes the row. Half the grace is left for the clock of the
        bytes' store running behind this plane's and for a forwarded call's time in transit; with a
        grace under `MIN_VOUCH_GRACE_SECONDS` nothing is vouched for.
        """
        if stored_seconds_ago is None or self._orphan_grace < MIN_VOUCH_GRACE_SECONDS:
            return None
        if not 0 <= stored_seconds_ago < self._orphan_grace / 2:
            return None
        return time.monotonic() - stored_seconds_ago + self._orphan_grace / 2

    # -- reads pass through -----------------------------------------------------------------------

    async def ping(self) -> None:
        await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()

    async def stat_blob(self, repository: str, digest: str) -> int | None:
        return await self._inner.stat_blob(repository, digest)

    async def get_manifest(self, repository: str, *, tag: str | None = None, digest: str | None = None,
                           with_payload: bool = True) -> StoredManifest:
        return await self._inner.get_manifest(repository, tag=tag, digest=digest, with_payload=with_payload)

    async def list_tags(self, repository: str, *, last: str, limit: int) -> Page[str]:
        return await self._inner.list_tags(repository, last=last, limit=limit)

    async def list_repositories(self, *, last: str, limit: int) -> Page[str]:
        return await self._inner.list_repositories(last=last, limit=limit)

    async def list_referrers(self, repository: str, subject_digest: str, *, artifact_type: str | None,
                             last: str, limit: int) -> Page[Referrer]:
        return await self._inner.list_referrers(repository, subject_digest, artifact_type=artifact_type,
                                                last=last, limit=limit)

    # -- writes -------------------------------------------------------------------------------------

    async def link_blob(self, repository: str, digest: str, size: int, *,
                        stored_seconds_ago: float | None = None) -> None:
        await self._gc.refuse_in_maintenance()
        vouched_until = self._vouch_deadline(stored_seconds_ago)
        if vouched_until is not None:
            try:
                await self._inner.link_blob(repository, digest, size, vouched_until=vouched_until)
                return
            except VouchLapsed:
                pass  # the link came too late to rely on the orphan grace: confirm as below
        # None: an `active` row (the inner link re-checks it under a row lock).
        epoch = await self._gc.link_epoch(digest, size)
        if epoch is not None and self._bytes_exist is not None and not await self._bytes_exist(digest):
            raise _upload_again(digest)
        # The inner link activates the confirmed `pending` row (when there is one) and re-checks
        # `active` under a row lock, in the link's own transaction (guard.py).
        await self._inner.link_blob(repository, digest, size, activate_epoch=epoch)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        await self._gc.refuse_in_maintenance()
        await self._gc.holds_for_global([digest])
        return await self._inner.unlink_blob(repository, digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str | None) -> int | None:
        await self._gc.refuse_in_maintenance()
        return await self._inner.mount_blob(repository, digest, from_repository)

    async def put_manifest(self, repository: str, manifest: NewManifest, tag: str | None) -> None:
        await self._gc.refuse_in_maintenance()
        if tag is not None:
            # The manifest the tag leaves (if it moves) is held for the review delay.
            await self._gc.holds_for_tag(repository, tag)
        await self._inner.put_manifest(repository, manifest, tag)

    async def restore_tag(self, repository: str, tag: str, digest: str) -> bool:
        await self._gc.refuse_in_maintenance()
        await self._gc.holds_for_tag(repository, tag)
        return await self._inner.restore_tag(repository, tag, digest)

    async def delete_manifest(self, repository: str, digest: str) -> None:
        await self._gc.refuse_in_maintenance()
        await self._gc.holds_for_manifest(repository, digest)
        await self._inner.delete_manifest(repository, digest)

    async def delete_tag(self, repository: str, tag: str) -> None:
        await self._gc.refuse_in_maintenance()
        await self._gc.holds_for_tag(repository, tag)
        await self._inner.delete_tag(repository, tag)


__all__ = ["GLOBAL", "BytesExist", "GuardedStore"]
