"""`S3Backend`: the BlobBackend over an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW).

Built on the `minio` SDK, which is blocking: every SDK call runs on a bounded thread pool
(`run_in_executor` on a `ThreadPoolExecutor` of `blob.io_threads` threads), never on the event
loop, and no pool thread ever waits on the event loop (so a put fed by another pool-bound stream
cannot deadlock the pool).

How each protocol method maps onto S3:
- `put`: bytes are gathered on the event loop into parts of `part_size` bytes; an object smaller
  than one part is one PutObject, a larger one a multipart upload (one part uploading while the
  next fills, so at most two parts are held in memory), completed atomically or aborted on
  failure. Part sizes grow every 1000 parts so that the 10,000-part limit is only reached past
  ~55,000 × `part_size` bytes (≈ 880 GiB with the default 16 MiB).
- `get`: a HEAD checks existence and range up front; the iterator then opens one ranged GET
  conditioned on the HEAD's ETag (If-Match) and reads it in ≤ READ_CHUNK_BYTES pieces, one pool
  call per piece. A replacement between HEAD and GET fails the read (UNAVAILABLE, retry) instead
  of mixing versions.
- `compose`: HEADs every source (typed ObjectNotFound / PartTooSmall before any write), then
  server-side copies: CopyObject for a single source, else a multipart upload of UploadPartCopy
  parts (≤ 5 GiB ranges, `compose_concurrency` at a time, each conditioned on the source ETag).
- `list`: ListObjectsV2 pages of 1000, fetched one page per pool call.
- `list_blobs`: the same under `blobs/`, resumed with StartAfter (see the method).
- `delete`: DeleteObject, idempotent on S3 already.

Beyond the protocol: `presigned_get_url` (for 307 redirects of blob reads), `purge_multipart_uploads`
(aborts multipart uploads abandoned by crashed writers), `ensure_bucket` (start-up) and `ping`
(health).

Errors: S3's NoSuchKey becomes ObjectNotFound; a missing bucket, a refused connection, a timeout,
a 5xx or throttling becomes `RegistryError(ErrorKind.UNAVAILABLE)`; refused credentials become
`RegistryError(ErrorKind.INTERNAL)` with a message naming the setting to fix.

The minio calls `_create_multipart_upload`, `_upload_part`, `_upload_part_copy`,
`_complete_multipart_upload`, `_abort_multipart_upload` and `_list_multipart_uploads` are
underscore-named in minio-py 7.x (its public `put_object`/`compose_object` drive them); they are
used directly because the public ones need a blocking file-like source or re-HEAD every source.
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
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    EnvMinioProvider,
    IamAwsProvider,
    Provider,
    StaticProvider,
)
from minio.datatypes import Part
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from services.blob.backends.base import (
    READ_CHUNK_BYTES,
    ObjectInfo,
    ObjectNotFound,
    PartTooSmall,
    check_compose_args,
    check_range,
    validate_key,
    validate_prefix,
)
from services.blob.backends.keys import BLOBS_PREFIX
from services.common.errors import ErrorKind, RegistryError

if TYPE_CHECKING:
    from services.common.settings import BlobSettings, S3BackendSettings

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
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


@dataclass(frozen=True, slots=True)
class _Head:
    """One HEAD's answer: the object's info and the ETag that pins its current version."""

    info: ObjectInfo
    etag: str


class S3Backend:
    """BlobBackend over one bucket, optionally under a key prefix. See the module docstring."""

    # S3's minimum multipart part size: the protocol's compose rule.
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
        compose_concurrency: int = 4,
        presign_client: Minio | None = None,
        presign_expiry_seconds: int = 900,
        http: urllib3.PoolManager | None = None,
        description: str = "S3",
        create_bucket: bool = False,
        multipart_expiry_seconds: float | None = None,
    ) -> None:
        """`executor`: the pool for SDK calls; when None the backend makes (and `close` shuts
        down) its own of `io_threads` threads. `http`: the client's PoolManager, cleared by
        `close`. `presign_client`: signs presigned URLs (defaults to `client`); no I/O.
        `key_prefix` is normalised to "" or "<segments>/". `create_bucket` is `ensure_bucket`'s
        default; `multipart_expiry_seconds` is `purge_abandoned_uploads`'s age (None: it does
        nothing). Raises ValueError on bad sizes.
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
        self._part_size = part_size
        self._compose_concurrency = max(1, compose_concurrency)
        self._presign_expiry = presign_expiry_seconds
        self._http = http
        self._description = description
        self._create_bucket = create_bucket
        self._multipart_expiry = multipart_expiry_seconds
        self._closed = False

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key_prefix(self) -> str:
        return self._prefix

    # ---- the BlobBackend protocol -------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """See BlobBackend.put. A failing `chunks` aborts the multipart upload and re-raises."""
        validate_key(key)
        name = self._name(key)
        pending: list[bytes] = []
        pending_size = 0
        total = 0
        upload_id: str | None = None
        parts: list[Part] = []
        in_flight: asyncio.Future[Part] | None = None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                pending.append(bytes(chunk))
                pending_size += len(chunk)
                total += len(chunk)
                if pending_size < self._target_part_size(len(parts) + (in_flight is not None)):
                    continue
                data = b"".join(pending)
                pending, pending_size = [], 0
                if upload_id is None:
                    upload_id = await self._call(
                        functools.partial(self._client._create_multipart_upload, self._bucket, name, {}),
                        key=key,
                    )
                if in_flight is not None:
                    parts.append(await in_flight)
                in_flight = asyncio.ensure_future(
                    self._upload_part(key, name, upload_id, len(parts) + 1, data)
                )
            if upload_id is None:
                # Smaller than one part: a single PutObject is already atomic.
                data = b"".join(pending)
                await self._call(
                    functools.partial(self._client._put_object, self._bucket, name, data, _octet_stream()),
                    key=key,
                )
                return total
            if in_flight is not None:
                parts.append(await in_flight)
                in_flight = None
            if pending_size:
                parts.append(await self._upload_part(key, name, upload_id, len(parts) + 1, b"".join(pending)))
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

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """See BlobBackend.get. Raises ObjectNotFound, InvalidRange, InvalidKey up front; the
        iterator raises RegistryError(UNAVAILABLE) if the object is replaced or the connection
        drops mid-read."""
        validate_key(key)
        head = await self._head(key)
        count = check_range(key, offset, length, head.info.size)
        return self._stream(key, offset, count, head.etag)

    async def stat(self, key: str) -> ObjectInfo:
        """See BlobBackend.stat."""
        validate_key(key)
        return (await self._head(key)).info

    async def delete(self, key: str) -> None:
        """See BlobBackend.delete (S3's DeleteObject is idempotent)."""
        validate_key(key)
        await self._call(
            functools.partial(self._client.remove_object, self._bucket, self._name(key)), key=key
        )

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See BlobBackend.list, in lexical order on every S3 implementation.

        Walks the key space one `/`-level at a time (ListObjectsV2 with a delimiter) and sorts
        each level before descending, instead of trusting a flat listing's order: SeaweedFS (at
        least up to 4.48) lists the keys under `a/` where `a` would sort, before siblings such
        as `a-b`, while real S3 sorts by the whole key. Memory is bounded by the widest level
        (for Lading's layout: the blobs sharing a two-hex-digit shard), not by the listing.
        """
        validate_prefix(prefix)
        async for info in self._walk(self._prefix + prefix):
            yield info

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """See BlobBackend.list_blobs. A level-by-level walk like `list`'s, that skips folders
        sorting entirely before `start_after` and lists the level holding `start_after` from it
        (ListObjectsV2 StartAfter): resuming costs about one request, whatever the position."""
        if start_after:
            validate_key(start_after)
        async for info in self._walk_after(self._prefix + BLOBS_PREFIX, self._prefix + start_after if start_after else ""):
            yield info

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        """See BlobBackend.compose. Server-side copies only; no byte passes through this process."""
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
            raise RegistryError(
                ErrorKind.UNSUPPORTED, f"compose of {len(pieces)} parts exceeds S3's limit of {S3_MAX_PARTS}"
            )
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
        Raises InvalidKey, ValueError (expiry out of range), RegistryError(UNAVAILABLE) when the
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
        Raises RegistryError(UNAVAILABLE).
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

    async def purge_abandoned_uploads(self) -> int:
        """`purge_multipart_uploads` with the configured age (`blob.upload_expiry_seconds` when
        `s3.purge_multipart_uploads` is on); 0 without a call when it is off. For the service's
        periodic purge."""
        if self._multipart_expiry is None:
            return 0
        return await self.purge_multipart_uploads(self._multipart_expiry)

    async def ensure_bucket(self, *, create: bool | None = None) -> None:
        """Start-up check: the bucket exists, or is created when `create` (default: the
        `s3.create_bucket` setting; races with another replica creating it are fine). Raises
        RegistryError(UNAVAILABLE) naming the setting to change when it is missing and `create`
        is off, or when S3 does not answer."""
        if create is None:
            create = self._create_bucket
        exists = await self._call(functools.partial(self._client.bucket_exists, self._bucket))
        if exists:
            return
        if not create:
            raise RegistryError(
                ErrorKind.UNAVAILABLE,
                f"bucket {self._bucket!r} does not exist at {self._description}; create it or set "
                "LADING_BLOB__S3__CREATE_BUCKET=true",
            )
        try:
            await self._call(functools.partial(self._client.make_bucket, self._bucket))
        except _BucketAlreadyThere:
            pass

    async def ping(self) -> None:
        """Health: returns when the bucket answers; raises RegistryError(UNAVAILABLE) otherwise."""
        if not await self._call(functools.partial(self._client.bucket_exists, self._bucket)):
            raise RegistryError(
                ErrorKind.UNAVAILABLE, f"bucket {self._bucket!r} does not exist at {self._description}"
            )

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

    async def _upload_part(self, key: str, name: str, upload_id: str, number: int, data: bytes) -> Part:
        etag = await self._call(
            functools.partial(self._client._upload_part, self._bucket, name, data, None, upload_id, number),
            key=key,
        )
        return Part(number, etag)

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
                    raise RegistryError(
                        ErrorKind.UNAVAILABLE,
                        f"S3 closed the read of {key!r} after {count - remaining} of {count} bytes; retry",
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
            raise RegistryError(ErrorKind.UNAVAILABLE, "the S3 blob backend is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except S3Error as exc:
            raise self._translate(exc, key, reading=reading) from exc
        except (urllib3.exceptions.HTTPError, OSError, ServerError, InvalidResponseError) as exc:
            raise RegistryError(
                ErrorKind.UNAVAILABLE, f"S3 at {self._description} did not answer: {_short(exc)}"
            ) from exc
        except ValueError as exc:
            if "providers fail" in str(exc) or "must not be empty" in str(exc):
                raise RegistryError(
                    ErrorKind.UNAVAILABLE,
                    "no S3 credentials: set LADING_BLOB__S3__ACCESS_KEY/SECRET_KEY or provide "
                    f"AWS credentials (environment, ~/.aws/credentials, instance role): {exc}",
                ) from exc
            raise
        except MinioException as exc:
            raise RegistryError(ErrorKind.UNAVAILABLE, f"S3 at {self._description}: {_short(exc)}") from exc

    def _translate(self, exc: S3Error, key: str | None, *, reading: bool) -> Exception:
        code = exc.code or ""
        if code in _NOT_FOUND_CODES and key is not None:
            return ObjectNotFound(key)
        if code == "NoSuchBucket":
            return RegistryError(
                ErrorKind.UNAVAILABLE, f"bucket {self._bucket!r} does not exist at {self._description}"
            )
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return _BucketAlreadyThere(ErrorKind.UNAVAILABLE, f"bucket {self._bucket!r} exists ({code})")
        if code == "NoSuchUpload":
            return _UploadGone(
                ErrorKind.UNAVAILABLE, "the multipart upload was aborted meanwhile (by a purge?); retry"
            )
        if code in ("PreconditionFailed", "InvalidRange") and (reading or key is not None):
            return RegistryError(
                ErrorKind.UNAVAILABLE, f"object {key!r} was replaced while being read or copied; retry"
            )
        if code in _AUTH_CODES:
            return RegistryError(
                ErrorKind.INTERNAL,
                f"S3 at {self._description} refused Lading's credentials ({code}); check "
                "LADING_BLOB__S3__ACCESS_KEY/SECRET_KEY or the role's permissions on "
                f"bucket {self._bucket!r}",
            )
        return RegistryError(
            ErrorKind.UNAVAILABLE, f"S3 at {self._description} failed: {code}: {exc.message}"
        )


class _BucketAlreadyThere(RegistryError):
    """make_bucket lost a race with another creator: the bucket exists, which is what we want."""


class _UploadGone(RegistryError):
    """NoSuchUpload: a multipart upload was completed or aborted by someone else."""


def _octet_stream() -> dict[str, str]:
    return {"Content-Type": "application/octet-stream"}


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


# ---- construction from settings ---------------------------------------------------------


def _credentials(settings: S3BackendSettings, http: urllib3.PoolManager) -> Provider:
    """Static keys when configured, else the standard chain (env, AWS files, instance role)."""
    if settings.access_key or settings.secret_key:
        if not (settings.access_key and settings.secret_key):
            raise ValueError(
                "set both LADING_BLOB__S3__ACCESS_KEY and LADING_BLOB__S3__SECRET_KEY, or neither"
            )
        return StaticProvider(settings.access_key, settings.secret_key, settings.session_token or None)
    return ChainedProvider(
        [
            EnvAWSProvider(),
            EnvMinioProvider(),
            AWSConfigProvider(),
            # EC2/ECS metadata or a web-identity token (EKS IRSA); short timeouts via `http`.
            IamAwsProvider(http_client=http),
        ]
    )


def _http_client(settings: S3BackendSettings, pool_size: int) -> urllib3.PoolManager:
    """Timeouts and few, quick retries: a stopped S3 turns into UNAVAILABLE, never a hang."""
    retries = urllib3.Retry(
        total=settings.max_retries,
        connect=settings.max_retries,
        read=settings.max_retries,
        backoff_factor=0.2,
        backoff_max=2.0,
        status_forcelist=[500, 502, 503, 504],
        # urllib3 retries only idempotent methods by default; S3 POSTs (create/complete
        # multipart) are safe to repeat too but a retried complete may answer NoSuchUpload.
        raise_on_status=False,
    )
    ca_certs = str(settings.ca_bundle) if settings.ca_bundle else certifi.where()
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=pool_size,
        timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds),
        retries=retries,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,
    )


def _client(
    endpoint: str,
    *,
    secure: bool,
    settings: S3BackendSettings,
    http: urllib3.PoolManager,
    credentials: Provider,
) -> Minio:
    client = Minio(
        endpoint, secure=secure, region=settings.region or None, http_client=http, credentials=credentials
    )
    if settings.path_style is True:
        client.disable_virtual_style_endpoint()
    elif settings.path_style is False:
        client.enable_virtual_style_endpoint()
    return client


def create_s3_backend(settings: BlobSettings, executor: Executor | None = None) -> S3Backend:
    """Builds the S3 backend from `settings.s3` (no I/O: call `ensure_bucket` at start-up).

    `executor` is the blob plane's pool for blocking calls (the caller shuts it down); None
    gives the backend its own of `settings.io_threads` threads. Raises ValueError for settings
    that cannot work (no bucket, half a key pair, a malformed presign_endpoint).
    """
    s3 = settings.s3
    if not s3.bucket:
        raise ValueError("backend 's3' needs a bucket: set LADING_BLOB__S3__BUCKET")
    try:
        check_bucket_name(s3.bucket)
    except ValueError as exc:
        raise ValueError(f"LADING_BLOB__S3__BUCKET: {exc}") from None
    # One connection per pool thread, so concurrent calls never queue for (or drop) connections.
    http = _http_client(s3, pool_size=max(settings.io_threads, 1))
    credentials = _credentials(s3, http)
    client = _client(s3.endpoint, secure=s3.secure, settings=s3, http=http, credentials=credentials)
    presign_client = None
    if s3.presign_endpoint:
        public = urlsplit(s3.presign_endpoint)
        if public.scheme not in ("http", "https") or not public.netloc or public.path not in ("", "/"):
            raise ValueError(
                f"LADING_BLOB__S3__PRESIGN_ENDPOINT must look like https://host[:port], not {s3.presign_endpoint!r}"
            )
        # Signing needs no I/O when the region is set; it shares the connection pool anyway.
        presign_client = _client(
            public.netloc, secure=public.scheme == "https", settings=s3, http=http, credentials=credentials
        )
    scheme = "https" if s3.secure else "http"
    return S3Backend(
        client,
        bucket=s3.bucket,
        key_prefix=s3.key_prefix,
        executor=executor,
        io_threads=settings.io_threads,
        part_size=s3.part_size_bytes,
        compose_concurrency=s3.compose_concurrency,
        presign_client=presign_client,
        presign_expiry_seconds=s3.presign_expiry_seconds,
        http=http,
        description=f"{scheme}://{s3.endpoint}/{s3.bucket}",
        create_bucket=s3.create_bucket,
        multipart_expiry_seconds=settings.upload_expiry_seconds if s3.purge_multipart_uploads else None,
    )
