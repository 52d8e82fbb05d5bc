"""The blob plane's use cases, free of gRPC: stat, read and delete blobs; upload sessions.

Backend failures are translated into registry errors here, once (`registry_error`): every public
call of `BlobStore`, and the streams it hands out, raise RegistryError, never a BackendError.
Transport code only maps messages to these calls.

Redirected reads: a backend that can presign GET URLs (`PresignsReads`, the S3 backend), or the
blob plane's own direct-read server (filesystem, services/blob/direct_reads.py), lets
`read_redirect` hand out a URL instead of bytes when the store was built with
`redirect_reads=True`, so blob bytes never pass through gRPC.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from services.blob.backends import keys
from services.blob.backends.base import (
    BackendAccessDenied,
    BackendError,
    BackendFull,
    BackendLimitExceeded,
    BackendUnavailable,
    BlobBackend,
    InvalidRange,
    ObjectNotFound,
)
from services.blob.listing import BlobPage, list_blobs
from services.blob.uploads import CommittedBlob, UploadSessions, UploadStatus
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError, storage_full

log = logging.getLogger("lading.blob")

# Modification times travel as floats and some stores keep whole seconds (S3's HEAD): bytes count
# as written after a listing only when later by more than this.
_MODIFIED_TOLERANCE_SECONDS = 1.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BlobDeletion:
    """What DeleteBlob did: `deleted` the bytes, or `kept_newer` ones written after the listing."""

    deleted: bool
    kept_newer: bool = False


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


@runtime_checkable
class PresignsReads(Protocol):
    """A backend that can sign a credential-free GET URL for one object (S3)."""

    async def presigned_get_url(self, key: str, expires: float | None = None) -> str:
        """A URL that GETs `key` (whole, honouring HTTP Range) until `expires` seconds (None:
        the backend's configured lifetime) have passed. No existence check."""
        ...


def registry_error(error: BackendError) -> RegistryError:
    """The registry error a client sees for a backend failure that no use case handled."""
    if isinstance(error, BackendUnavailable):
        return RegistryError(ErrorKind.UNAVAILABLE, f"blob storage is unavailable, retry later: {error}")
    if isinstance(error, BackendAccessDenied):
        return RegistryError(ErrorKind.INTERNAL, str(error))
    if isinstance(error, BackendLimitExceeded):
        return RegistryError(ErrorKind.UNSUPPORTED, str(error))
    if isinstance(error, BackendFull):
        log.error("blob storage is full, writes fail until space is freed: %s", error)
        return storage_full(str(error))
    log.error("unexpected blob backend error: %r", error)
    return RegistryError(ErrorKind.INTERNAL, "blob storage failed unexpectedly; the blob service logs say more")


def _translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`method` raising RegistryError (`registry_error`) where the backend raised a BackendError."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except BackendError as error:
            raise registry_error(error) from error

    return call


class _TranslatedStream:
    """A byte stream whose BackendErrors (mid-read: S3 went away) become registry errors."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream

    def __aiter__(self) -> _TranslatedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._stream)
        except BackendError as error:
            raise registry_error(error) from error

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _blob_unknown(digest: Digest) -> RegistryError:
    return RegistryError(ErrorKind.BLOB_UNKNOWN, f"blob {digest} is not stored", {"digest": str(digest)})


def _range_invalid(digest: Digest, offset: int, length: int | None, size: int) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_RANGE_INVALID,
        f"range starting at {offset} (length {length}) is outside blob {digest} of {size} bytes",
        {"digest": str(digest), "size": size},
    )


class BlobStore:
    """Blobs and upload sessions over one backend.

    `upload_expiry_seconds` is the default age after which `purge_uploads` removes a session.
    `redirect_reads`: `read_redirect` hands out URLs signed by `presigner` (default: the backend,
    if it can presign, as S3 can; the filesystem's direct reads pass `SignedBlobUrls`); ignored
    when there is neither.
    """

    def __init__(
        self,
        backend: BlobBackend,
        *,
        upload_expiry_seconds: float,
        sessions: UploadSessions | None = None,
        redirect_reads: bool = False,
        presigner: PresignsReads | None = None,
    ):
        self.backend = backend
        self.upload_expiry_seconds = upload_expiry_seconds
        self.sessions = sessions or UploadSessions(backend)
        if presigner is None and isinstance(backend, PresignsReads):
            presigner = backend
        self._presigner: PresignsReads | None = presigner if redirect_reads else None

    @property
    def redirects_reads(self) -> bool:
        """True when `read_redirect` hands out URLs."""
        return self._presigner is not None

    @property
    def min_chunk_size(self) -> int:
        """Smallest chunk (but the last) the backend stores without re-staging; 0 for any."""
        return self.backend.min_part_size

    # -- blobs --------------------------------------------------------------------------------

    @_translated
    async def stat_blob(self, digest: str) -> BlobInfo:
        """Raises DIGEST_INVALID, BLOB_UNKNOWN."""
        parsed = Digest.parse(digest)
        try:
            info = await self.backend.stat(keys.blob_key(parsed))
        except ObjectNotFound:
            raise _blob_unknown(parsed) from None
        return BlobInfo(parsed, info.size)

    @_translated
    async def read_blob(self, digest: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Opens `[offset, offset+length)` of a blob (`length` None: to the end) for streaming.

        Raises DIGEST_INVALID, BLOB_UNKNOWN, and BLOB_RANGE_INVALID for a negative offset or
        length, or an offset at or past the end of a non-empty blob. An empty blob read from
        offset 0 yields nothing. Errors are raised before the first byte is streamed.
        """
        parsed = Digest.parse(digest)
        key = keys.blob_key(parsed)
        try:
            if offset > 0:
                # offset == size is a valid empty read for the backend but not for a client.
                info = await self.backend.stat(key)
                if offset >= info.size:
                    raise InvalidRange(key, offset, length, info.size)
            return _TranslatedStream(await self.backend.get(key, offset, length))
        except ObjectNotFound:
            raise _blob_unknown(parsed) from None
        except InvalidRange as error:
            raise _range_invalid(parsed, offset, length, error.size) from None

    @_translated
    async def read_redirect(self, digest: str, *, offset: int = 0, length: int | None = None) -> str | None:
        """A presigned URL serving the whole blob, or None when this store does not redirect reads.

        The blob and the range are checked first, with the same errors as `read_blob`
        (DIGEST_INVALID, BLOB_UNKNOWN, BLOB_RANGE_INVALID): one HEAD on S3, so a client is never
        sent to a URL that answers S3's own 404. The URL ignores `offset`/`length`; the caller
        forwards its client's HTTP Range, which the URL honours.
        """
        if self._presigner is None:
            return None
        parsed = Digest.parse(digest)
        key = keys.blob_key(parsed)
        try:
            info = await self.backend.stat(key)
        except ObjectNotFound:
            raise _blob_unknown(parsed) from None
        if offset < 0 or (length is not None and length < 0) or (offset > 0 and offset >= info.size):
            raise _range_invalid(parsed, offset, length, info.size)
        return await self._presigner.presigned_get_url(key)

    @_translated
    async def delete_blob(self, digest: str, *, listed_modified_at: float = 0.0) -> BlobDeletion:
        """Physically deletes a blob's bytes (`deleted`: they existed). Idempotent. Raises
        DIGEST_INVALID.

        Only the metadata plane's garbage collection calls this, after checking no manifest or
        link references the blob. `listed_modified_at` (non-zero): the modification time its
        listing showed; bytes written since (a commit after the listing: `kept_newer`) are kept.
        Nothing else deletes or rewrites bytes that exist in between (an absent blob is written
        only by a commit, which then vouches for it), so the check and the deletion need no lock.
        """
        parsed = Digest.parse(digest)
        key = keys.blob_key(parsed)
        try:
            info = await self.backend.stat(key)
        except ObjectNotFound:
            return BlobDeletion(deleted=False)
        if listed_modified_at and info.modified > listed_modified_at + _MODIFIED_TOLERANCE_SECONDS:
            log.info("kept %s: written again at %.0f, after the listing the deletion was decided on (%.0f)",
                     parsed, info.modified, listed_modified_at)
            return BlobDeletion(deleted=False, kept_newer=True)
        await self.backend.delete(key)
        return BlobDeletion(deleted=True)

    @_translated
    async def list_blobs(self, *, page_token: str = "", page_size: int = 0) -> BlobPage:
        """One page of the stored blobs (see `listing.list_blobs`)."""
        return await list_blobs(self.backend, page_token=page_token, page_size=page_size)

    # -- uploads ------------------------------------------------------------------------------

    @_translated
    async def start_upload(self, repository: str, owner: str = "") -> UploadStatus:
        """Raises TOOMANYREQUESTS when `owner` holds the maximum of open sessions already."""
        return await self.sessions.start(repository, owner)

    @_translated
    async def append_upload(
        self, upload_id: str, repository: str, *, expected_offset: int, chunks: AsyncIterable[bytes]
    ) -> UploadStatus:
        return await self.sessions.append(upload_id, repository, expected_offset=expected_offset, chunks=chunks)

    @_translated
    async def upload_status(self, upload_id: str, repository: str) -> UploadStatus:
        return await self.sessions.status(upload_id, repository)

    @_translated
    async def commit_upload(
        self,
        upload_id: str,
        repository: str,
        *,
        digest: str,
        expected_size: int | None,
        final_data: bytes = b"",
        final_offset: int | None = None,
    ) -> CommittedBlob:
        """See `UploadSessions.commit` (`final_data`: a last chunk appended in the same call)."""
        return await self.sessions.commit(
            upload_id,
            repository,
            digest=digest,
            expected_size=expected_size,
            final_data=final_data,
            final_offset=final_offset,
        )

    @_translated
    async def cancel_upload(self, upload_id: str, repository: str) -> None:
        await self.sessions.cancel(upload_id, repository)

    @_translated
    async def purge_uploads(self, older_than_seconds: float | None = None) -> int:
        """Removes sessions older than `older_than_seconds` (None or 0: the configured expiry)."""
        age = older_than_seconds or self.upload_expiry_seconds
        return await self.sessions.purge(age)

    @_translated
    async def purge_abandoned_writes(self) -> int:
        """Lets the backend clean up what it left behind and nobody lists, untouched for the
        upload expiry (`BlobBackend.clean_up`: S3's multipart uploads of crashed writers, the
        filesystem's idle empty folders); returns how many things went."""
        return await self.backend.clean_up(self.upload_expiry_seconds)

    # -- health -------------------------------------------------------------------------------

    async def check(self) -> None:
        """Raises unless the backend can write, read and delete (the readiness check); a backend
        that is only full passes (BackendFull: reads work, and writes answer STORAGE_FULL)."""
        key = keys.probe_key(keys.new_token())
        try:
            await self.backend.put(key, _one(b"ok"))
        except BackendFull as error:
            # The store answers, it only has no room: pulls are served, pushes get STORAGE_FULL.
            log.error("blob storage is full, writes fail until space is freed: %s", error)
            return
        try:
            data = await self.backend.read_whole(key)
            if data != b"ok":
                raise RuntimeError(f"blob backend read back {data!r} from a readiness probe")
        finally:
            await self.backend.delete(key)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
