"""`S3Backend`: the BlobBackend over an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW).

Built on the `minio` SDK, which is blocking: every SDK call runs on a bounded thread pool
(`run_in_executor` on a `ThreadPoolExecutor` of `blob.io_threads` threads), never on the event
loop, and no pool thread ever waits on the event loop (so a put fed by another pool-bound stream
cannot deadlock the pool). The settings factory is s3_factory.py.

How each contract call maps onto S3:
- `put`: bytes are copied on the event loop into part buffers of `part_size` bytes; an object
  smaller than one part is one PutObject, a larger one a multipart upload (one part uploading
  while the next fills, so at most two parts per write), completed atomically or aborted on
  failure. Part sizes grow every 1000 parts so that the 10,000-part limit is only reached past
  ~55,000 × `part_size` bytes (≈ 880 GiB with the default 16 MiB). Memory: every part buffer of
  the process comes from one budget (`part_buffer_budget_bytes`, see part_buffers.py), so more
  concurrent writes wait (and their streams pause) instead of buffering. The SDK is handed a
  memoryview of the buffer, not a copy. A write of ≤ 1 MiB in all, or of one chunk, is sent from
  the caller's bytes as they are, without a part buffer.
- `put_if_absent`, `replace`, `create_unsynced`: HEADs, PUTs and listings, one request per
  object (basic_calls.py). `delete_all`: a listing per prefix, then DeleteObjects requests of up
  to 1000 keys (quiet: S3 answers only the failures).
- `read_whole`: one GetObject read to its end (one response holds one version: no HEAD first).
- `get`: a HEAD checks existence and range up front; the iterator then opens one ranged GET
  conditioned on the HEAD's ETag (If-Match) and reads it in ≤ READ_CHUNK_BYTES pieces, one pool
  call per piece, only when the consumer asks for the next (no read-ahead: a read holds one piece
  plus what the socket buffers). A replacement between HEAD and GET fails the read
  (BackendUnavailable: retry) instead of mixing versions.
- `open_writer`: an object cannot grow, so each append is an object of its own, small ones are
  merged to the 5 MiB part minimum, and a commit composes them server-side (parts.PartsWriter
  over `compose`): HEADs every source (typed ObjectNotFound / PartTooSmall before any write),
  then CopyObject for a single source, else a multipart upload of UploadPartCopy parts (≤ 5 GiB
  ranges, `compose_concurrency` at a time, each conditioned on the source ETag).
- `list`: ListObjectsV2 pages of 1000, fetched one page per pool call.
- `list_blobs`: the same under `blobs/`, resumed with StartAfter (see the method).
- `delete`: DeleteObject, idempotent on S3 already.
- `prepare`: `ensure_bucket`; `clean_up`: `purge_multipart_uploads` (aborts multipart uploads
  abandoned by crashed writers) when `s3.purge_multipart_uploads` is on.

Beyond the contract: `presigned_get_url` (for 307 redirects of blob reads) and `ping` (health).

Errors, typed by S3's error codes and the SDK's exception classes (never by message text): S3's
NoSuchKey becomes ObjectNotFound; refused credentials (AccessDenied, InvalidAccessKeyId, ...)
become BackendAccessDenied with a message naming the setting to fix; a missing bucket, a refused
connection, a timeout, a 5xx, throttling, and a credential chain that finds no credentials (an
instance role's metadata service may answer later) become BackendUnavailable. A server out of
room (HTTP 507 Insufficient Storage, whatever its body: MinIO's XMinioStorageFull, SeaweedFS and
others) or over a quota (Ceph RGW's QuotaExceeded, MinIO's bucket quota) becomes BackendFull, as a
full disk does on the filesystem: no retry cures it, an operator must free or add space.

The minio calls `_create_multipart_upload`, `_upload_part`, `_upload_part_copy`,
`_complete_multipart_upload`, `_abort_multipart_upload`, `_list_multipart_uploads` and
`_delete_objects` are underscore-named in minio-py 7.x (its public `put_object`/`compose_object`/
`remove_objects` drive them); they are used directly because the public ones need a blocking
file-like source, re-HEAD every source, or hand back a lazy generator that sends nothing until
it is consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials.credentials import Credentials
from minio.credentials.providers import Provider
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from services.blob.backends.base import (
    READ_CHUNK_BYTES,
    BackendAccessDenied,
    BackendFull,
    BackendLimitExceeded,
    BackendUnavailable,
    ObjectInfo,
    ObjectNotFound,
    check_range,
    validate_key,
)
from services.blob.backends.basic_calls import BasicCalls
from services.blob.backends.keys import BLOBS_PREFIX
from services.blob.backends.part_buffers import PartBuffer, PartBuffers
from services.blob.backends.parts import PartsWriter, PartTooSmall, check_compose_args

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3's multipart rules: every part but the last ≥ 5 MiB, each part ≤ 5 GiB, ≤ 10,000 parts.
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
# Part sizes step up by `part_size` every this many parts (see the module docstring).
_PART_SIZE_STEP_EVERY = 1000
# Objects per ListObjectsV2 / uploads per ListMultipartUploads page.
_LIST_PAGE = 1000
# A write's first bytes up to this much are kept as the caller's chunks, outside the part budget:
# small objects (session states, markers) never wait behind big writes for a part buffer.
_UNBUFFERED_BYTES = 1 * MiB

# S3 error codes that mean "our credentials or permissions are wrong": an operator must act.
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
# Keys per DeleteObjects request: S3's limit.
_DELETE_BATCH = 1000
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
# S3 error codes that mean "no room for the write" (besides any HTTP 507): MinIO's full drives
# (sent with 507) and bucket quota (400), Ceph RGW's user or bucket quota (403).
_FULL_CODES = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded"})
# HTTP 507 Insufficient Storage (RFC 4918 11.5).
_INSUFFICIENT_STORAGE = 507


class NoCredentials(Exception):
    """The credential chain produced no credentials (raised inside SDK calls by
    `ReportingProvider`, translated into BackendUnavailable by `S3Backend._call`)."""


class ReportingProvider(Provider):
    """A credential provider that reports any failure of the one it wraps as `NoCredentials`,
    so that the backend recognises it by its type rather than by the SDK's message text."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    def retrieve(self) -> Credentials:
        try:
            return self._inner.retrieve()
        except Exception as error:  # noqa: BLE001 - every provider failure means "no credentials"
            raise NoCredentials(str(error)) from error


class _BucketAlreadyThere(BackendUnavailable):
    """make_bucket lost a race with another creator: the bucket exists, which is what we want."""


class _UploadGone(BackendUnavailable):
    """NoSuchUpload: a multipart upload was completed or aborted by someone else."""


@dataclass(frozen=True, slots=True)
class _Head:
    """One HEAD's answer: the object's info and the ETag that pins its current version."""

    info: ObjectInfo
    etag: str


class S3Backend(BasicCalls):
    """BlobBackend over one bucket, optionally under a key prefix. See the module docstring."""

    # S3's minimum multipart part size: what `compose` needs of every source but the last.
    min_part_size: int = S3_MIN_PART_SIZE

    def __init__(
        self,
        client: Minio,
        *,
        bucket: str,
        key_prefix: str = "",
        executor: Executor | None = None,
        io_threads: int = 16,
        part_size: int = 16 * MiB,
        part_buffer_budget: int = 32 * MiB,
        compose_concurrency: int = 4,
        presign_client: Minio | None = None,
        presign_expiry_seconds: int = 900,
        http: urllib3.PoolManager | None = None,
        description: str = "S3",
        create_bucket: bool = False,
        purge_multipart_uploads: bool = False,
    ) -> None:
        """`executor`: the pool for SDK calls; when None the backend makes (and `close` shuts
        down) its own of `io_threads` threads. `http`: the client's PoolManager, cleared by
        `close`. `presign_client`: signs presigned URLs (defaults to `client`); no I/O.
        `key_prefix` is normalised to "" or "<segments>/". `create_bucket` is `ensure_bucket`'s
        default; `purge_multipart_uploads` lets `clean_up` abort abandoned multipart uploads.
        `part_buffer_budget`: bytes all concurrent puts may hold in part buffers (see
        `PartBuffers`). Raises ValueError on bad sizes.
        """
        if not bucket:
            raise ValueError("an S3 bucket name is required (LADING_BLOB__S3__BUCKET)")
        if part_size < S3_MIN_PART_SIZE or part_size > S3_MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {S3_MIN_PART_SIZE} and {S3_MAX_PART_SIZE} bytes")
        self._client = client
        self._presign_client = presign_client or client
        self._bucket = bucket
        stripped = key_prefix.strip("/")
        self._prefix = f"{stripped}/" if stripped else ""
        self._owns_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=io_threads, thread_name_prefix="lading-s3"
        )
        if part_buffer_budget <= 0:
            raise ValueError("part_buffer_budget must be positive")
        self._part_size = part_size
        self._buffers = PartBuffers(part_buffer_budget)
        self._compose_concurrency = max(1, compose_concurrency)
        self._presign_expiry = presign_expiry_seconds
        self._http = http
        self._description = description
        self._create_bucket = create_bucket
        self._purges_multipart_uploads = purge_multipart_uploads
        self._closed = False

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def part_buffers(self) -> PartBuffers:
        """The part buffer budget of this backend (its `peak_reserved` shows how much was held)."""
        return self._buffers

    # ---- the BlobBackend protocol -------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """See BlobBackend.put. A failing `chunks` aborts the multipart upload and re-raises."""
        name = self._name(key)
        incoming = aiter(chunks)
        # The first bytes stay the caller's chunks while they are ≤ _UNBUFFERED_BYTES, and so
        # does a big first chunk that turns out to be the only one (a commit's bytes): those
        # are sent as they are. Anything else goes through part buffers.
        head: list[bytes] = []
        head_size = 0
        while (chunk := await _first_non_empty(incoming)) is not None:
            if head_size + len(chunk) <= _UNBUFFERED_BYTES:
                head.append(chunk)
                head_size += len(chunk)
                continue
            head.append(chunk)
            if len(head) == 1:
                following = await _first_non_empty(incoming)
                if following is None:
                    await self._put_whole(key, name, head)
                    return len(chunk)
                head.append(following)
            return await self._put_buffered(key, name, _chain(head, incoming))
        await self._put_whole(key, name, head)
        return head_size

    async def _put_buffered(self, key: str, name: str, chunks: AsyncIterator[bytes]) -> int:
        """`put` through part buffers of the budget: one PutObject when the bytes fit one part,
        else a multipart upload with one part uploading while the next fills."""
        total = 0
        upload_id: str | None = None
        parts: list[Part] = []
        buffer: PartBuffer | None = None  # the part filling
        in_flight: asyncio.Task[Part] | None = None  # the part uploading
        try:
            async for chunk in chunks:
                size = len(chunk)
                total += size
                taken = 0
                while taken < size:
                    if buffer is None:
                        number = len(parts) + (in_flight is not None) + 1
                        buffer = await self._buffers.acquire(self._target_part_size(number - 1))
                    taken += buffer.write(chunk, taken)
                    if not buffer.full:
                        continue
                    if upload_id is None:
                        upload_id = await self._call(
                            functools.partial(self._client._create_multipart_upload, self._bucket, name, {}),
                            key=key,
                        )
                    if in_flight is not None:
                        parts.append(await asyncio.shield(in_flight))
                        in_flight = None
                    in_flight = self._start_part(key, name, upload_id, len(parts) + 1, buffer)
                    buffer = None
            if upload_id is None:
                # Smaller than one part: a single PutObject is already atomic.
                if buffer is not None:
                    in_flight, buffer = self._start_part(key, name, None, 0, buffer), None
                    await asyncio.shield(in_flight)
                    in_flight = None
                return total
            if in_flight is not None:
                parts.append(await asyncio.shield(in_flight))
                in_flight = None
            if buffer is not None and buffer.filled:
                in_flight, buffer = self._start_part(key, name, upload_id, len(parts) + 1, buffer), None
                parts.append(await asyncio.shield(in_flight))
                in_flight = None
            await self._call(
                functools.partial(
                    self._client._complete_multipart_upload, self._bucket, name, upload_id, parts
                ),
                key=key,
            )
            upload_id = None
            return total
        except BaseException:
            # Let a part still uploading finish (a thread cannot be cancelled) before aborting,
            # so the abort is not raced by a late part; then abort, best-effort and shielded.
            if in_flight is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(in_flight)
            if upload_id is not None:
                await self._abort_quietly(name, upload_id)
            raise
        finally:
            if buffer is not None:
                self._buffers.release(buffer)

    async def _put_whole(self, key: str, name: str, chunks: list[bytes]) -> None:
        """One PutObject of bytes the caller already holds (at most one copy, to join them)."""
        data: bytes | memoryview = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" for none
        chunks.clear()
        await self._call(
            functools.partial(self._client._put_object, self._bucket, name, data, _octet_stream()), key=key
        )

    def _start_part(
        self, key: str, name: str, upload_id: str | None, number: int, buffer: PartBuffer
    ) -> asyncio.Task[Part]:
        """Uploads `buffer` as part `number` of `upload_id` (None: as the whole object, with a
        PutObject) in a task of its own that gives the buffer back once the pool thread is done
        with it: await it shielded, so that a cancelled put never frees a buffer being sent."""
        data = buffer.view()

        async def upload() -> Part:
            finished = False  # the pool call returned or raised: no thread holds `data` any more
            try:
                if upload_id is None:
                    await self._call(
                        functools.partial(self._client._put_object, self._bucket, name, data, _octet_stream()),
                        key=key,
                    )
                    finished = True
                    return Part(0, "")
                etag = await self._call(
                    functools.partial(self._client._upload_part, self._bucket, name, data, None, upload_id, number),
                    key=key,
                )
                finished = True
                return Part(number, etag)
            except asyncio.CancelledError:
                raise  # (only at shutdown: puts await parts shielded) the thread may still send
            except BaseException:
                finished = True
                raise
            finally:
                with contextlib.suppress(BufferError):
                    if finished:
                        data.release()
                self._buffers.release(buffer, reuse=finished)

        return asyncio.ensure_future(upload())

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """See BlobBackend.get. Raises ObjectNotFound, InvalidRange, InvalidKey up front; the
        iterator raises BackendUnavailable if the object is replaced or the connection drops
        mid-read."""
        head = await self._head(key)
        count = check_range(key, offset, length, head.info.size)
        return self._stream(key, offset, count, head.etag)

    async def read_whole(self, key: str) -> bytes:
        """See BlobBackend.read_whole."""
        return await self._call(functools.partial(self._get_whole, self._name(key)), key=key, reading=True)

    def _get_whole(self, name: str) -> bytes:
        """On the pool: one GetObject, read to its end."""
        response = self._client.get_object(self._bucket, name)
        try:
            data = response.read()
        except BaseException:
            response.close()  # a half-read connection cannot be reused
            raise
        finally:
            response.release_conn()
        return data

    async def stat(self, key: str) -> ObjectInfo:
        """See BlobBackend.stat."""
        return (await self._head(key)).info

    async def delete(self, key: str) -> None:
        """See BlobBackend.delete (S3's DeleteObject is idempotent)."""
        await self._call(
            functools.partial(self._client.remove_object, self._bucket, self._name(key)), key=key
        )

    async def delete_all(self, targets: Sequence[str]) -> None:
        """See BlobBackend.delete_all: the keys, and what a listing finds under each prefix, in
        DeleteObjects requests of up to 1000 keys (one DeleteObject per key cost an upload
        session's end three requests more)."""
        doomed: dict[str, None] = {}  # ordered, without duplicates
        for target in targets:
            if target.endswith("/"):
                async for info in self.list(target):
                    doomed[info.key] = None
            else:
                doomed[target] = None
        names = list(doomed)
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start : start + _DELETE_BATCH]
            result = await self._call(
                functools.partial(
                    self._client._delete_objects,
                    self._bucket,
                    [DeleteObject(self._name(key)) for key in batch],
                    quiet=True,
                ),
                key=batch[0],
            )
            failed = [error for error in result.error_list if error.code not in _NOT_FOUND_CODES]
            if failed:
                first = failed[0]
                if first.code in _AUTH_CODES:
                    raise BackendAccessDenied(
                        f"S3 at {self._description} refused to delete {first.name!r} ({first.code}); "
                        f"check the role's permissions on bucket {self._bucket!r}"
                    )
                raise BackendUnavailable(
                    f"S3 at {self._description} did not delete {len(failed)} of {len(batch)} objects "
                    f"({first.name!r}: {first.code}: {first.message}); retry"
                )

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See BlobBackend.list, in lexical order on every S3 implementation.

        Walks the key space one `/`-level at a time (ListObjectsV2 with a delimiter) and sorts
        each level before descending, instead of trusting a flat listing's order: SeaweedFS (at
        least up to 4.48) lists the keys under `a/` where `a` would sort, before siblings such
        as `a-b`, while real S3 sorts by the whole key. Memory is bounded by the widest level
        (for Lading's layout: the blobs sharing a two-hex-digit shard), not by the listing.
        """
        async for info in self._walk(self._prefix + prefix):
            yield info

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """See BlobBackend.list_blobs. A level-by-level walk like `list`'s, that skips folders
        sorting entirely before `start_after` and lists the level holding `start_after` from it
        (ListObjectsV2 StartAfter): resuming costs about one request, whatever the position."""
        async for info in self._walk_after(self._prefix + BLOBS_PREFIX, self._prefix + start_after if start_after else ""):
            yield info

    async def open_writer(self, key: str) -> PartsWriter:
        """See BlobBackend.open_writer: parts composed server-side (module docstring). No I/O."""
        return PartsWriter(self, key)

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        """For `PartsWriter` (parts.ComposingStore.compose). Server-side copies only; no byte
        passes through this process."""
        keys = check_compose_args(dest, sources)
        heads = await _gather_bounded(self._compose_concurrency, [self._head(key) for key in keys])
        for key, head in zip(keys[:-1], heads[:-1], strict=True):
            if head.info.size < self.min_part_size:
                raise PartTooSmall(key, head.info.size, self.min_part_size)
        total = sum(head.info.size for head in heads)
        # (key, etag, first byte, last byte, whole object?) per part; empty sources add nothing.
        pieces: list[tuple[str, str, int, int, bool]] = []
        for key, head in zip(keys, heads, strict=True):
            size = head.info.size
            for start in range(0, size, S3_MAX_PART_SIZE):
                end = min(start + S3_MAX_PART_SIZE, size) - 1
                pieces.append((key, head.etag, start, end, start == 0 and end == size - 1))
        if len(pieces) > S3_MAX_PARTS:
            raise BackendLimitExceeded(f"compose of {len(pieces)} parts exceeds S3's limit of {S3_MAX_PARTS}")
        name = self._name(dest)
        if not pieces:
            await self._call(
                functools.partial(self._client._put_object, self._bucket, name, b"", _octet_stream()),
                key=dest,
            )
            return 0
        if len(pieces) == 1 and pieces[0][4]:
            source = CopySource(self._bucket, self._name(pieces[0][0]), match_etag=pieces[0][1])
            await self._call(
                functools.partial(self._client.copy_object, self._bucket, name, source), key=pieces[0][0]
            )
            return total
        upload_id = await self._call(
            functools.partial(self._client._create_multipart_upload, self._bucket, name, {}), key=dest
        )
        try:
            copies = [
                self._copy_part(name, upload_id, number, key, etag, start, end)
                for number, (key, etag, start, end, _) in enumerate(pieces, start=1)
            ]
            parts = await _gather_bounded(self._compose_concurrency, copies)
            await self._call(
                functools.partial(
                    self._client._complete_multipart_upload, self._bucket, name, upload_id, parts
                ),
                key=dest,
            )
        except BaseException:
            await self._abort_quietly(name, upload_id)
            raise
        return total

    async def close(self) -> None:
        """Shuts down the pool (only if this backend made it) and drops pooled connections."""
        if self._closed:
            return
        self._closed = True
        self._buffers.close()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._http is not None:
            self._http.clear()

    # ---- beyond the protocol ------------------------------------------------------------

    async def presigned_get_url(
        self,
        key: str,
        expires: float | timedelta | None = None,
        *,
        response_headers: dict[str, str] | None = None,
    ) -> str:
        """A URL that GETs the object at `key` without credentials until `expires` (seconds or a
        timedelta; default `presign_expiry_seconds`; 1 s to 7 days) has passed.

        Does not check that the object exists (the URL then answers 404). `response_headers`
        become S3's `response-*` overrides, e.g. {"response-content-type": "..."}.
        Raises InvalidKey, ValueError (expiry out of range), BackendUnavailable when the
        credential chain cannot produce credentials.
        """
        validate_key(key)
        if expires is None:
            expires = self._presign_expiry
        lifetime = expires if isinstance(expires, timedelta) else timedelta(seconds=expires)
        if not timedelta(seconds=1) <= lifetime <= timedelta(days=7):
            raise ValueError("a presigned URL lives between 1 second and 7 days")
        # In the pool: the credential chain may ask the instance metadata service.
        return await self._call(
            functools.partial(
                self._presign_client.presigned_get_object,
                self._bucket,
                self._name(key),
                expires=lifetime,
                response_headers=dict(response_headers) if response_headers else None,
            ),
            key=key,
        )

    async def purge_multipart_uploads(self, older_than: float | timedelta) -> int:
        """Aborts every multipart upload under this backend's key prefix started more than
        `older_than` (seconds or a timedelta) ago; returns how many were aborted.

        Writers abort their own uploads on failure; this catches those of crashed processes,
        whose parts would otherwise be billed forever. Uploads a live writer started within the
        window are untouched, so pass at least the longest a put or compose may take.
        Raises BackendUnavailable.
        """
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        cutoff = time.time() - age
        aborted = 0
        key_marker: str | None = None
        upload_id_marker: str | None = None
        while True:
            page = await self._call(
                functools.partial(
                    self._client._list_multipart_uploads,
                    self._bucket,
                    prefix=self._prefix,
                    key_marker=key_marker,
                    upload_id_marker=upload_id_marker,
                    max_uploads=_LIST_PAGE,
                )
            )
            for upload in page.uploads:
                started = upload.initiated_time.timestamp() if upload.initiated_time else None
                if started is None or started >= cutoff or not upload.upload_id:
                    continue
                try:
                    await self._call(
                        functools.partial(
                            self._client._abort_multipart_upload,
                            self._bucket,
                            upload.object_name,
                            upload.upload_id,
                        )
                    )
                    aborted += 1
                except _UploadGone:
                    pass  # completed or aborted meanwhile
            if not page.is_truncated or not page.uploads:
                return aborted
            # Continue after the last upload seen (minio 7.2 mis-stores NextUploadIdMarker).
            key_marker = page.uploads[-1].object_name
            upload_id_marker = page.uploads[-1].upload_id

    async def clean_up(self, older_than: float) -> int:
        """See BlobBackend.clean_up: `purge_multipart_uploads(older_than)` when
        `s3.purge_multipart_uploads` is on; 0 without a call when it is off."""
        if not self._purges_multipart_uploads:
            return 0
        return await self.purge_multipart_uploads(older_than)

    async def prepare(self) -> None:
        """See BlobBackend.prepare: `ensure_bucket` with the configured `create_bucket`."""
        await self.ensure_bucket()

    async def ensure_bucket(self, *, create: bool | None = None) -> None:
        """Start-up check: the bucket exists, or is created when `create` (default: the
        `s3.create_bucket` setting; races with another replica creating it are fine). Raises
        BackendUnavailable naming the setting to change when it is missing and `create` is off,
        or when S3 does not answer."""
        if create is None:
            create = self._create_bucket
        exists = await self._call(functools.partial(self._client.bucket_exists, self._bucket))
        if exists:
            return
        if not create:
            raise BackendUnavailable(
                f"bucket {self._bucket!r} does not exist at {self._description}; create it or set "
                "LADING_BLOB__S3__CREATE_BUCKET=true",
            )
        try:
            await self._call(functools.partial(self._client.make_bucket, self._bucket))
        except _BucketAlreadyThere:
            pass

    async def ping(self) -> None:
        """Health: returns when the bucket answers; raises BackendUnavailable otherwise."""
        if not await self._call(functools.partial(self._client.bucket_exists, self._bucket)):
            raise BackendUnavailable(f"bucket {self._bucket!r} does not exist at {self._description}")

    # ---- internals ----------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + key

    def _target_part_size(self, part_number: int) -> int:
        """Size at which the next part is cut: `part_size`, one step larger every 1000 parts."""
        return min(self._part_size * (1 + part_number // _PART_SIZE_STEP_EVERY), S3_MAX_PART_SIZE)

    async def _walk(self, level_prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects whose full name starts with `level_prefix`, in lexical order (see `list`)."""
        # A lazy generator: no request until advanced; each page is fetched inside a pool call.
        pages = self._client.list_objects(self._bucket, prefix=level_prefix, recursive=False)
        entries = []
        while True:
            page = await self._call(functools.partial(_take, pages, _LIST_PAGE))
            entries.extend(page)
            if len(page) < _LIST_PAGE:
                break
        # A "folder" entry ends with "/", so sorting names puts `a-b` < `a/` < `a0` as S3 would.
        entries.sort(key=lambda entry: entry.object_name or "")
        for entry in entries:
            name = entry.object_name or ""
            if not name.startswith(level_prefix):
                continue
            if entry.is_dir or name.endswith("/"):
                if name == level_prefix:
                    continue  # never descend into the level itself
                async for info in self._walk(name):
                    yield info
                continue
            modified = entry.last_modified.timestamp() if entry.last_modified else time.time()
            yield ObjectInfo(name[len(self._prefix) :], entry.size or 0, modified)

    async def _walk_after(self, level_prefix: str, after: str) -> AsyncIterator[ObjectInfo]:
        """Objects under `level_prefix` whose full name sorts after `after` ("" for all), one
        level at a time like `_walk`, but a page (of ≤ 1000) at a time instead of a whole level:
        a shard of the blob layout holds only files and the levels above only folders, so the
        per-page sort gives lexical order there (see `list_blobs`)."""
        # StartAfter only where `after` names an object of this very level: how S3 servers roll
        # keys after it up into the "folders" of a delimited listing varies.
        inside = bool(after) and after.startswith(level_prefix) and "/" not in after[len(level_prefix):]
        pages = self._client.list_objects(self._bucket, prefix=level_prefix, recursive=False,
                                          start_after=after if inside else None)
        while True:
            page = await self._call(functools.partial(_take, pages, _LIST_PAGE))
            page.sort(key=lambda entry: entry.object_name or "")
            for entry in page:
                name = entry.object_name or ""
                if not name.startswith(level_prefix) or name == level_prefix:
                    continue
                if entry.is_dir or name.endswith("/"):
                    if name < after and not after.startswith(name):
                        continue  # every name below sorts before `after`
                    async for info in self._walk_after(name, after):
                        yield info
                elif name > after:
                    modified = entry.last_modified.timestamp() if entry.last_modified else time.time()
                    yield ObjectInfo(name[len(self._prefix) :], entry.size or 0, modified)
            if len(page) < _LIST_PAGE:
                break

    async def _head(self, key: str) -> _Head:
        stat = await self._call(
            functools.partial(self._client.stat_object, self._bucket, self._name(key)), key=key
        )
        modified = stat.last_modified.timestamp() if stat.last_modified else time.time()
        return _Head(ObjectInfo(key, stat.size or 0, modified), (stat.etag or "").strip('"'))

    async def _copy_part(
        self, name: str, upload_id: str, number: int, source_key: str, etag: str, start: int, end: int
    ) -> Part:
        headers: dict[str, Any] = CopySource(
            self._bucket, self._name(source_key), match_etag=etag
        ).gen_copy_headers()
        headers["x-amz-copy-source-range"] = f"bytes={start}-{end}"
        part_etag, _ = await self._call(
            functools.partial(self._client._upload_part_copy, self._bucket, name, upload_id, number, headers),
            key=source_key,
        )
        return Part(number, part_etag)

    async def _abort_quietly(self, name: str, upload_id: str) -> None:
        """Aborts a multipart upload; failures are left to `purge_multipart_uploads`."""
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self._call(
                    functools.partial(self._client._abort_multipart_upload, self._bucket, name, upload_id)
                )
            )

    async def _stream(self, key: str, offset: int, count: int, etag: str) -> AsyncIterator[bytes]:
        """Yields `count` bytes of `key` from `offset`, from the version whose ETag is `etag`."""
        if count == 0:
            return
        headers = {"If-Match": f'"{etag}"'} if etag else None
        response = await self._call(
            functools.partial(
                self._client.get_object,
                self._bucket,
                self._name(key),
                offset=offset,
                length=count,
                request_headers=headers,
            ),
            key=key,
            reading=True,
        )
        remaining = count
        try:
            while remaining > 0:
                piece = await self._call(
                    functools.partial(response.read, min(READ_CHUNK_BYTES, remaining)), key=key, reading=True
                )
                if not piece:
                    raise BackendUnavailable(
                        f"S3 closed the read of {key!r} after {count - remaining} of {count} bytes; retry"
                    )
                remaining -= len(piece)
                yield piece
        finally:
            # Unread bytes make the connection unusable: close it before handing it back.
            if remaining:
                response.close()
            response.release_conn()

    async def _call(self, fn: Callable[[], T], *, key: str | None = None, reading: bool = False) -> T:
        """Runs one blocking SDK call on the pool and translates its failures (module docstring)."""
        if self._closed:
            raise BackendUnavailable("the S3 blob backend is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except S3Error as exc:
            raise self._translate(exc, key, reading=reading) from exc
        except NoCredentials as exc:
            # Transient when it comes from an instance role (the metadata service did not
            # answer), so a retry may cure it: unavailable, with what to set otherwise.
            raise BackendUnavailable(
                "no S3 credentials: set LADING_BLOB__S3__ACCESS_KEY/SECRET_KEY or provide "
                f"AWS credentials (environment, ~/.aws/credentials, instance role): {exc}"
            ) from exc
        except (ServerError, InvalidResponseError) as exc:
            # No XML error body (a proxy's page, an empty body): only the status tells
            # (InvalidResponseError keeps it in `_code`, with no public accessor in minio 7.2).
            status = exc.status_code if isinstance(exc, ServerError) else getattr(exc, "_code", None)
            if status == _INSUFFICIENT_STORAGE:
                raise self._full(f"HTTP {status}") from exc
            raise BackendUnavailable(f"S3 at {self._description} did not answer: {_short(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(f"S3 at {self._description} did not answer: {_short(exc)}") from exc
        except MinioException as exc:
            raise BackendUnavailable(f"S3 at {self._description}: {_short(exc)}") from exc

    def _full(self, answer: str) -> BackendFull:
        return BackendFull(
            f"S3 at {self._description} has no room for the write ({answer}); free or add space "
            f"on the S3 server, or raise the quota of bucket {self._bucket!r}"
        )

    def _translate(self, exc: S3Error, key: str | None, *, reading: bool) -> Exception:
        """The BackendError for an S3 error response, by its code."""
        code = exc.code or ""
        if code in _NOT_FOUND_CODES and key is not None:
            return ObjectNotFound(key)
        if code == "NoSuchBucket":
            return BackendUnavailable(f"bucket {self._bucket!r} does not exist at {self._description}")
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return _BucketAlreadyThere(f"bucket {self._bucket!r} exists ({code})")
        if code == "NoSuchUpload":
            return _UploadGone("the multipart upload was aborted meanwhile (by a purge?); retry")
        if code in ("PreconditionFailed", "InvalidRange") and (reading or key is not None):
            return BackendUnavailable(f"object {key!r} was replaced while being read or copied; retry")
        if code in _FULL_CODES or exc.response.status == _INSUFFICIENT_STORAGE:
            return self._full(f"{code}: {exc.message}")
        if code in _AUTH_CODES:
            return BackendAccessDenied(
                f"S3 at {self._description} refused Lading's credentials ({code}); check "
                "LADING_BLOB__S3__ACCESS_KEY/SECRET_KEY or the role's permissions on "
                f"bucket {self._bucket!r}"
            )
        return BackendUnavailable(f"S3 at {self._description} failed: {code}: {exc.message}")


def _octet_stream() -> dict[str, str]:
    return {"Content-Type": "application/octet-stream"}


async def _first_non_empty(chunks: AsyncIterator[bytes]) -> bytes | None:
    async for chunk in chunks:
        if chunk:
            return chunk
    return None


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks of `first` (dropped from the list as they go), then the non-empty ones of `rest`."""
    first.reverse()
    while first:
        yield first.pop()
    async for chunk in rest:
        if chunk:
            yield chunk


def _take(iterator: Any, count: int) -> list[Any]:
    """Up to `count` items of a (blocking) iterator; run inside the pool."""
    return list(itertools.islice(iterator, count))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


async def _gather_bounded(limit: int, awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """`asyncio.gather` with at most `limit` awaitables running; cancels the rest on failure."""
    semaphore = asyncio.Semaphore(limit)

    async def one(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    tasks = [asyncio.ensure_future(one(awaitable)) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        # Wait for copies already running on the pool so a later abort is not raced by them.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
