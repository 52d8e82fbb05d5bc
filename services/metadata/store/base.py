"""The `MetadataStore` seam: what the metadata plane needs from a database, and its contract.

Inputs are already validated by the caller (core.py): repository names and tags match the spec's
grammar, digests parse, sizes are non-negative, page limits are resolved (>= 0). Every failure a
client should see is raised as `RegistryError` with the kind named below; a database that cannot be
reached (connection refused, pool exhausted, lock or statement timeout) raises
`RegistryError(ErrorKind.UNAVAILABLE)` from any method. A failing call leaves no rows behind.

Writes are idempotent and converge under concurrency: the same link, manifest or tag written by
many callers at once yields one row, and every caller succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NewManifest:
    """A validated manifest ready to store (see `services.metadata.manifests.ParsedManifest`)."""

    digest: str
    media_type: str
    payload: bytes
    subject_digest: str | None
    artifact_type: str | None
    config_media_type: str | None
    # JSON object text, or None.
    annotations: str | None
    blob_digests: tuple[str, ...]
    manifest_digests: tuple[str, ...]
    # Cached from a pull-through upstream (services/metadata/proxy): its blobs and child
    # manifests are fetched when asked for, so `put_manifest` does not require them yet.
    from_upstream: bool = False


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    size: int
    # None when the caller asked for no payload (HEAD).
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    # JSON object text, or None.
    annotations: str | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Up to `limit` items in ascending byte-wise order; `has_more` is True when more items follow
    the cursor than were returned (for a `limit` of 0: when any item follows the cursor)."""

    items: list[T]
    has_more: bool


class MetadataStore(Protocol):
    async def ping(self) -> None:
        """Returns when the database answers a trivial query; raises UNAVAILABLE otherwise."""

    async def close(self) -> None:
        """Releases pooled connections. Idempotent."""

    async def link_blob(self, repository: str, digest: str, size: int, *, activate_epoch: int | None = None,
                        vouched_until: float | None = None) -> None:
        """Links `digest` into `repository`, creating the repository if needed. Idempotent: an
        existing link is kept as is (its first recorded size wins). `activate_epoch` (GC guard):
        first turn the `pending` blob row of that epoch `active` in the same transaction.
        `vouched_until` (GC guard): the bytes were just written; see BlobRowGuard.claim_for_link."""

    async def stat_blob(self, repository: str, digest: str) -> int | None:
        """The linked blob's size, or None when the blob is not linked there (or the repository does
        not exist). One indexed query."""

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        """Removes the link; False when there was none. Manifests that reference the blob are not
        touched (garbage collection must still honour their references)."""

    async def mount_blob(self, repository: str, digest: str, from_repository: str | None) -> int | None:
        """Links `digest` into `repository` when it is linked in `from_repository` (or, when that is
        None, in any repository); returns the size, or None (and writes nothing) when no source holds
        the blob."""

    async def put_manifest(self, repository: str, manifest: NewManifest, tag: str | None) -> None:
        """Stores the manifest, its references and (optionally) moves `tag` onto it, in one
        transaction, creating the repository if needed.

        Raises MANIFEST_BLOB_UNKNOWN (detail `{"blobs": [...], "blob_count": n, "manifests": [...],
        "manifest_count": m}`: the first few missing digests of each kind and how many are missing)
        when a blob in `manifest.blob_digests` is not linked in the repository or a digest in
        `manifest.manifest_digests` is not a manifest there. Re-storing a digest that exists keeps the
        stored row (its first media type wins) and still moves the tag. A tag move is atomic: readers
        see the old or the new manifest, never neither.
        """

    async def restore_tag(self, repository: str, tag: str, digest: str) -> bool:
        """Points `tag` at the manifest `digest` that the repository still stores (a tag restore),
        under the same immutable-tag rules and history as a push. False when it already pointed
        there. Raises NAME_UNKNOWN, MANIFEST_UNKNOWN (not stored), DENIED (immutable)."""

    async def get_manifest(
        self, repository: str, *, tag: str | None = None, digest: str | None = None, with_payload: bool = True
    ) -> StoredManifest:
        """The manifest `tag` points at, or the one with `digest` (exactly one of the two is given).

        Raises NAME_UNKNOWN when the repository does not exist, MANIFEST_UNKNOWN when the tag or
        digest does not. One indexed query.
        """

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Deletes the manifest, every tag on it and its references. Referrers whose subject it is
        stay. Raises NAME_UNKNOWN (no repository) or MANIFEST_UNKNOWN (no such manifest)."""

    async def delete_tag(self, repository: str, tag: str) -> None:
        """Deletes one tag (the manifest stays). Raises NAME_UNKNOWN or MANIFEST_UNKNOWN (no tag)."""

    async def list_tags(self, repository: str, *, last: str, limit: int) -> Page[str]:
        """Tags strictly after `last` ("" for the start). Raises NAME_UNKNOWN. One query."""

    async def list_repositories(self, *, last: str, limit: int) -> Page[str]:
        """Repository names strictly after `last`."""

    async def list_referrers(
        self, repository: str, subject_digest: str, *, artifact_type: str | None, last: str, limit: int
    ) -> Page[Referrer]:
        """Manifests in `repository` whose subject is `subject_digest`, ordered by digest, strictly after
        `last`, only those of `artifact_type` when given. An unknown repository or subject gives an
        empty page, never an error."""
