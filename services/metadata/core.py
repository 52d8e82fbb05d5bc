"""The metadata plane's use cases, independent of gRPC: validate input, parse manifests, call the store.

Every method validates what it is given again (repository names, tags, digests, sizes, page
limits), even though the gateway checks them first: defence in depth, so a buggy or hostile caller
of the gRPC API cannot store what HTTP would refuse. Errors are `RegistryError`s (see each method
and `MetadataStore` for the kinds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from services.common.digests import Digest, looks_like_digest
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag
from services.metadata.manifests import (
    ParsedManifest,
    off_the_loop_when_big,
    parse_manifest,
    parse_manifest_off_the_loop,
)
from services.metadata.store.base import MetadataStore, NewManifest, Page, Referrer, StoredManifest


class PullGate(Protocol):
    async def check(self, repository: str, tag: str | None, digest: str) -> None:
        """Raises RegistryError(DENIED) when the manifest may not be served."""


@dataclass(frozen=True, slots=True)
class PutManifestResult:
    digest: str
    # None when the manifest has no subject.
    subject_digest: str | None


@dataclass(frozen=True, slots=True)
class MetadataLimits:
    # Manifests larger than this are refused with MANIFEST_TOO_LARGE.
    max_manifest_bytes: int
    # Page size when the caller sets no limit, and the largest page served.
    default_page_size: int
    max_page_size: int
    # Larger manifests are hashed and parsed in a worker thread, smaller ones on the event loop
    # (settings: metadata.manifest_parse_inline_max_bytes).
    parse_inline_max_bytes: int = 256 * 1024


class MetadataCore:
    def __init__(self, store: MetadataStore, limits: MetadataLimits,
                 refuse_writes: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._limits = limits
        # Raises UNSUPPORTED for a repository whose content comes from elsewhere (a
        # pull-through cache's prefix: services/common/upstream.py).
        self._refuse_writes = refuse_writes or (lambda repository: None)
        # Pull policies (signatures, vulnerability reports: services/metadata/policies), set by
        # main.py: each may refuse a manifest read with DENIED.
        self.pull_gates: list[PullGate] = []

    # -- input checks -------------------------------------------------------------------------------

    def page_limit(self, limit: int | None) -> int:
        """The number of items to serve: the default for None, capped at the maximum; a negative
        limit raises PAGINATION_NUMBER_INVALID. 0 is valid (an empty page)."""
        if limit is None:
            return self._limits.default_page_size
        if limit < 0:
            raise RegistryError(
                ErrorKind.PAGINATION_NUMBER_INVALID,
                f"invalid page size {limit}: use a non-negative integer",
                {"n": limit},
            )
        return min(limit, self._limits.max_page_size)

    @staticmethod
    def _digest(text: str) -> str:
        return str(Digest.parse(text))

    # -- blobs --------------------------------------------------------------------------------------

    async def link_blob(self, repository: str, digest: str, size: int, *,
                        stored_seconds_ago: float | None = None) -> None:
        """Links a verified blob into `repository` (created on first use). Idempotent.
        Raises NAME_INVALID, DIGEST_INVALID, SIZE_INVALID (negative size). `stored_seconds_ago`:
        the caller's blob plane wrote the bytes at most that long ago (LinkBlobRequest)."""
        validate_repository(repository)
        digest = self._digest(digest)
        if size < 0:
            raise RegistryError(ErrorKind.SIZE_INVALID, f"invalid blob size {size}: must be >= 0", {"size": size})
        if stored_seconds_ago is None:
            await self._store.link_blob(repository, digest, size)
        else:
            await self._store.link_blob(repository, digest, size, stored_seconds_ago=stored_seconds_ago)

    async def stat_blob(self, repository: str, digest: str) -> int:
        """The size of a blob linked in `repository`; BLOB_UNKNOWN when it is not linked there."""
        validate_repository(repository)
        digest = self._digest(digest)
        size = await self._store.stat_blob(repository, digest)
        if size is None:
            raise _blob_unknown(repository, digest)
        return size

    async def unlink_blob(self, repository: str, digest: str) -> None:
        """Removes a blob link; BLOB_UNKNOWN when there was none."""
        validate_repository(repository)
        digest = self._digest(digest)
        if not await self._store.unlink_blob(repository, digest):
            raise _blob_unknown(repository, digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> int | None:
        """Links `digest` from `from_repository` ("" = any repository) into `repository`; returns the
        size, or None when no source holds it (an unknown source repository is not an error)."""
        validate_repository(repository)
        self._refuse_writes(repository)
        digest = self._digest(digest)
        if from_repository:
            validate_repository(from_repository)
        return await self._store.mount_blob(repository, digest, from_repository or None)

    # -- manifests ----------------------------------------------------------------------------------

    async def put_manifest(self, repository: str, reference: str, media_type: str, payload: bytes,
                           *, from_upstream: bool = False) -> PutManifestResult:
        """Validates and stores a manifest under a tag or the digest it must hash to.

        Raises NAME_INVALID, TAG_INVALID, DIGEST_INVALID (bad reference, or the payload does not
        hash to it, or a descriptor digest is malformed), MANIFEST_TOO_LARGE, MANIFEST_INVALID,
        MANIFEST_BLOB_UNKNOWN. Pushed by tag, the manifest's digest is the sha256 of the exact bytes.
        UNSUPPORTED into a pull-through cache's prefix, unless `from_upstream` (the cache storing
        what its upstream served: references are then not required to exist yet).
        """
        validate_repository(repository)
        if not from_upstream:
            self._refuse_writes(repository)
        if len(payload) > self._limits.max_manifest_bytes:
            raise RegistryError(
                ErrorKind.MANIFEST_TOO_LARGE,
                f"manifest is {len(payload)} bytes; the limit is {self._limits.max_manifest_bytes}",
                {"size": len(payload), "limit": self._limits.max_manifest_bytes},
            )
        manifest, tag = await off_the_loop_when_big(payload, self._limits.parse_inline_max_bytes,
                                                    _new_manifest, reference, media_type, payload, from_upstream)
        await self._store.put_manifest(repository, manifest, tag)
        return PutManifestResult(digest=manifest.digest, subject_digest=manifest.subject_digest)

    async def parse_stored(self, payload: bytes, media_type: str) -> ParsedManifest:
        """A stored manifest's content parsed (its children and blobs), off the loop when big
        (`MetadataLimits.parse_inline_max_bytes`)."""
        return await parse_manifest_off_the_loop(payload, media_type,
                                                 inline_max_bytes=self._limits.parse_inline_max_bytes)

    async def get_manifest(self, repository: str, reference: str, *, omit_payload: bool = False) -> StoredManifest:
        """The manifest a tag or digest names. NAME_UNKNOWN / MANIFEST_UNKNOWN when absent; DENIED
        when a pull policy refuses it (`pull_gates`)."""
        validate_repository(repository)
        tag: str | None = None
        if looks_like_digest(reference):
            found = await self._store.get_manifest(
                repository, digest=self._digest(reference), with_payload=not omit_payload
            )
        else:
            tag = validate_tag(reference)
            found = await self._store.get_manifest(repository, tag=tag, with_payload=not omit_payload)
        for gate in self.pull_gates:
            await gate.check(repository, tag, found.digest)
        return found

    async def delete_manifest(self, repository: str, reference: str) -> None:
        """By digest: deletes the manifest and its tags. By tag: deletes that tag only.
        NAME_UNKNOWN / MANIFEST_UNKNOWN when absent."""
        validate_repository(repository)
        if looks_like_digest(reference):
            await self._store.delete_manifest(repository, self._digest(reference))
        else:
            await self._store.delete_tag(repository, validate_tag(reference))

    async def restore_tag(self, repository: str, tag: str, digest: str) -> bool:
        """Points `tag` at the stored manifest `digest` (a tag restore: services/metadata/policies).
        False when it pointed there already. NAME_INVALID, TAG_INVALID, DIGEST_INVALID,
        NAME_UNKNOWN, MANIFEST_UNKNOWN, DENIED (an immutable tag)."""
        validate_repository(repository)
        return await self._store.restore_tag(repository, validate_tag(tag), self._digest(digest))

    # -- listings -----------------------------------------------------------------------------------

    async def list_tags(self, repository: str, *, limit: int | None, last: str) -> Page[str]:
        validate_repository(repository)
        return await self._store.list_tags(repository, last=_bound(last), limit=self.page_limit(limit))

    async def list_repositories(self, *, limit: int | None, last: str) -> Page[str]:
        return await self._store.list_repositories(last=_bound(last), limit=self.page_limit(limit))

    async def list_referrers(self, repository: str, subject_digest: str, *, artifact_type: str,
                             limit: int | None, last: str) -> Page[Referrer]:
        """Referrers of `subject_digest` ("" artifact_type = no filter). Unknown repository or
        subject: an empty page. NAME_INVALID / DIGEST_INVALID for malformed input."""
        validate_repository(repository)
        subject = self._digest(subject_digest)
        limit = self.page_limit(limit)
        if "\x00" in artifact_type:
            # No artifact type holds a NUL (manifests.py), and PostgreSQL refuses one as a parameter.
            return Page(items=[], has_more=False)
        return await self._store.list_referrers(
            repository, subject, artifact_type=artifact_type or None, last=_bound(last), limit=limit
        )


def _new_manifest(reference: str, media_type: str, payload: bytes,
                  from_upstream: bool) -> tuple[NewManifest, str | None]:
    """The manifest to store for `payload` pushed as `reference`, and its tag (None when pushed
    by digest): its digest checked or computed, its content parsed and validated. CPU only: big
    payloads run it in a worker thread (`MetadataLimits.parse_inline_max_bytes`). Raises
    TAG_INVALID, DIGEST_INVALID (a bad digest reference, one the payload does not hash to, or a
    malformed descriptor digest), MANIFEST_INVALID."""
    tag: str | None = None
    if looks_like_digest(reference):
        expected = Digest.parse(reference)
        actual = Digest.of(payload, expected.algorithm)
        if actual != expected:
            raise RegistryError(
                ErrorKind.DIGEST_INVALID,
                f"manifest payload hashes to {actual}, not to the reference {expected}",
                {"expected": str(expected), "actual": str(actual)},
            )
        digest = str(expected)
    else:
        tag = validate_tag(reference)
        digest = str(Digest.of(payload))
    parsed = parse_manifest(payload, media_type)
    manifest = NewManifest(
        digest=digest,
        media_type=parsed.media_type,
        payload=payload,
        subject_digest=parsed.subject_digest,
        artifact_type=parsed.artifact_type,
        config_media_type=parsed.config_media_type,
        annotations=orjson.dumps(parsed.annotations).decode() if parsed.annotations else None,
        blob_digests=parsed.blob_digests,
        manifest_digests=parsed.manifest_digests,
        from_upstream=from_upstream,
    )
    return manifest, tag


def _bound(last: str) -> str:
    """A page's `last` as the store takes it. PostgreSQL refuses a NUL in a parameter; no name, tag
    or digest holds one, so cutting `last` at its first NUL keeps exactly the same items after it
    in the byte-wise order ("a\\0b" and "a" have the same successors)."""
    return last.split("\x00", 1)[0]


def _blob_unknown(repository: str, digest: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UNKNOWN,
        f"blob {digest} is not linked in repository {repository!r}",
        {"name": repository, "digest": digest},
    )
