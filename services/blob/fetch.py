"""Fetch on miss in the blob plane: a blob the store lacks, fetched from a source, streamed to the
reader while it is stored, committed only once its digest checks out.

`FetchOnMiss.fetch` is the one mechanism: the pull-through cache gives it an upstream registry as
the source (services/common/upstream.py), and any other source (another region's blob plane) is
just another `Source`: a callable that opens `(size or -1, chunks)` for the blob. The bytes go
through an ordinary upload session (services/blob/uploads.py), so the same verification,
durability and purge rules apply: a source that fails, breaks off or sends bytes that do not
hash to the digest leaves nothing stored (the session is cancelled, or purged when the process
died), and the reader never receives the whole of a wrong body: the last chunk is held back
until the blob is verified and committed.

One fetch per blob across replicas is the caller's business (the metadata plane's lease:
ProxyService.BeginBlobFetch); a second fetch of the same blob would still be correct, only
wasteful (commits are idempotent per digest).

Served from the direct-read server (`redirect`, when this plane has one that serves fetches):
the caller gets the URL of the blob on that server at once, and the fetch stores the blob at the
source's pace, whether or not anyone reads the URL; the server sends a reader the bytes as they
land in the session's file and holds back the end until the commit (services/blob/fetch_progress.py).
The bytes then never pass through gRPC or the gateway: a cold pull costs what a warm one does plus
the source's transfer. Only a source that names its size is served this way (the server must
send a Content-Length, and hold back a part of it). On a backend without local files (S3: the
server serves fetches only), the file readers are sent is the fetch's spool file (below): the
end is released once the fetch's own hash of the bytes matches the digest, and the generator ends
once storage committed the blob (the caller records it only then).

Streamed with `tail_when_verified` (the gateway's cold pulls on S3): storage must not set the
reader's pace. The bytes go to the reader as the source sends them, and to storage through a
spool file (services/blob/fetch_spool.py; within its budget, else at storage's pace); the last
chunk goes out once the fetch's own hash of all the bytes matches the digest (the reader then
holds the right bytes whatever storage does), and `COMMITTED` follows once the blob is stored.
The caller records the blob only then. A wrong or short body still never reaches the reader
whole, and nothing is stored.

The free-space reserve (blob.filesystem.min_free_bytes): a fetch whose source names its size is
checked whole against it before its first byte, on each disk its session and spool file will land
on (fetch_room.py), so one that cannot fit fails with STORAGE_FULL before any answer went out,
and nothing is written; the writes themselves then claim their room as they go (the filesystem
backend's, the spool's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.blob.backends import keys
from services.blob.core import BlobStore
from services.blob.fetch_progress import FetchProgress, Outcome
from services.blob.fetch_room import FetchRoom
from services.blob.fetch_spool import FetchSpool, SpoolFile
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.thread_chunks import ThreadChunks

log = logging.getLogger("lading.blob.fetch")

# Opens the source's body for one blob: (size, -1 when unknown; the chunks).
Source = Callable[[], AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]]
# Confirms that the source holds the blob (raises, e.g. BLOB_UNKNOWN naming it, when it does not).
Confirm = Callable[[], Awaitable[object]]
# The opaque repository tag of the upload sessions fetches store through.
FETCH_SESSION_TAG = "lading-fetch"
# Readers of a fetch served from the direct-read server are told about new bytes this often.
REPORT_BYTES = 1024 * 1024
# Chunks buffered between the source and a slower reader.
_QUEUE_CHUNKS = 4
_END = object()
# After the bytes, with `tail_when_verified`: the blob is committed to storage.
COMMITTED = object()

if TYPE_CHECKING:
    from services.blob.direct_reads import DirectReadServer


@dataclass(frozen=True, slots=True)
class Begun:
    """A fetch's first item: the blob's size (-1: unknown) and, when it is served from the
    direct-read server, the URL to read it from ("" otherwise: its bytes follow)."""

    size: int
    redirect_url: str = ""
    # `COMMITTED` follows the bytes (`tail_when_verified`).
    commit_follows: bool = False


class FetchOnMiss:
    def __init__(self, store: BlobStore, direct: DirectReadServer | None = None,
                 spool: FetchSpool | None = None, room: FetchRoom | None = None) -> None:
        """`direct`: the direct-read server, when it serves fetches (`redirect` is honoured);
        `spool`: where fetches with `tail_when_verified` keep the bytes storage has yet to take
        (None: storage takes them as they come, at its pace); `room`: the free-space reserve's
        check of a fetch of known size before its first byte (fetch_room.py; None: none)."""
        self._store = store
        self._direct = direct
        self._spool = spool
        self._room = room

    async def fetch(self, digest: str, source: Source, *, describe: str, confirm: Confirm,
                    redirect: bool = False, tail_when_verified: bool = False
                    ) -> AsyncIterator[Begun | bytes | object]:
        """Yields `Begun` first, then the blob's bytes. Already stored: from the store, once
        `confirm` said the source holds it too (bytes stored for another repository are not
        served to a reader of this one on the strength of their digest alone). Otherwise from
        `source` (named `describe` in errors), stored on the way.

        With `redirect` and a direct-read server that serves fetches, a blob of known, non-zero
        size is not yielded: `Begun` carries its URL there, and the generator ends once the blob
        is verified and committed (or raises as below); a stored blob gets its ordinary URL when
        the server has local files (on S3 it is streamed, as without `redirect`). On S3 this
        needs the spool (without one, or when it cannot be written, the bytes stream).

        With `tail_when_verified` (and no redirect), the last chunk is yielded once the bytes hash
        to `digest`, maybe before the blob is stored, and `COMMITTED` once it is (`Begun` says
        `commit_follows`); a failure to store it raises after the bytes.

        Raises DIGEST_INVALID for a malformed digest; UPSTREAM_FAILED (after some bytes, maybe)
        when the source fails or its bytes do not hash to `digest` (nothing is stored then);
        whatever the source raises before its first byte (e.g. BLOB_UNKNOWN naming it).
        """
        parsed = Digest.parse(digest)
        direct = self._direct if redirect else None
        try:
            info = await self._store.stat_blob(digest)
        except RegistryError as error:
            if error.kind is not ErrorKind.BLOB_UNKNOWN:
                raise
        else:
            await confirm()
            if direct is not None and direct.files is not None and info.size:
                yield Begun(info.size, await direct.urls.presigned_get_url(keys.blob_key(parsed)))
                return
            yield Begun(info.size, commit_follows=tail_when_verified)
            if info.size:
                async for chunk in await self._store.read_blob(digest):
                    yield chunk
            if tail_when_verified:
                yield COMMITTED
            return
        async with source() as (size, chunks):
            if self._room is not None and size > 0:
                # Refused before the first byte (and before any answer), nothing written.
                spooled = self._spool is not None and (
                    direct.files is None if direct is not None else tail_when_verified)
                await self._room.check(size, spooled=spooled)
            if direct is not None and size > 0:
                if direct.files is not None:
                    async for begun in self._store_for_readers(direct, parsed, size, chunks, describe):
                        yield begun
                    return
                # No local files (S3): readers get the spool file (without one, the bytes stream).
                hasher = hashlib.new(parsed.algorithm)
                spooled = await self._open_spool(hasher, digest)
                if spooled is not None:
                    async for begun in self._spool_for_readers(direct, parsed, size, chunks, describe,
                                                               spooled, hasher):
                        yield begun
                    return
            yield Begun(size, commit_follows=tail_when_verified)
            if tail_when_verified:
                async for item in self._store_behind(parsed, size, chunks, describe):
                    yield item
                yield COMMITTED
                return
            async for item in self._store_while_streaming(digest, size, chunks, describe):
                yield item

    async def _store_for_readers(self, direct: DirectReadServer, parsed: Digest, size: int,
                                 chunks: AsyncIterator[bytes], describe: str) -> AsyncIterator[Begun]:
        """Yields `Begun` with the blob's URL once readers can find the fetch there, then stores
        the blob while the direct-read server shows its file to them (see the module docstring);
        they learn how it ended."""
        digest = str(parsed)
        session = await self._store.start_upload(FETCH_SESSION_TAG)
        path = direct.files.local_path(keys.upload_data_key(session.upload_id))
        with direct.fetches.running(digest, size, path) as progress:
            try:
                yield Begun(size, await direct.urls.presigned_get_url(keys.blob_key(parsed)))
                await self._store.append_upload(session.upload_id, FETCH_SESSION_TAG, expected_offset=0,
                                                chunks=_reported(chunks, progress))
                await self._store.commit_upload(session.upload_id, FETCH_SESSION_TAG, digest=digest,
                                                expected_size=size)
            except RegistryError as error:
                progress.end(Outcome.FAILED)
                await self._cancel(session.upload_id)
                raise self._failed(error, digest, describe) from None
            except BaseException:
                progress.end(Outcome.FAILED)
                await asyncio.shield(self._cancel(session.upload_id))
                raise
            progress.end(Outcome.COMMITTED)

    async def _store_while_streaming(self, digest: str, size: int, chunks: AsyncIterator[bytes],
                                     describe: str) -> AsyncIterator[bytes]:
        session = await self._store.start_upload(FETCH_SESSION_TAG)
        queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)

        async def tee() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                await queue.put(chunk)
                yield chunk

        async def store() -> None:
            try:
                await self._store.append_upload(session.upload_id, FETCH_SESSION_TAG, expected_offset=0,
                                                chunks=tee())
                await self._store.commit_upload(session.upload_id, FETCH_SESSION_TAG, digest=digest,
                                                expected_size=size if size >= 0 else None)
            finally:
                await queue.put(_END)

        task = asyncio.create_task(store())
        held: bytes | None = None
        try:
            while (item := await queue.get()) is not _END:
                if held is not None:
                    yield held
                held = item
            await task
        except RegistryError as error:
            await self._cancel(session.upload_id)
            raise self._failed(error, digest, describe) from None
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self._cancel(session.upload_id)
            raise
        if held is not None:
            yield held

    async def _store_behind(self, parsed: Digest, size: int, chunks: AsyncIterator[bytes],
                            describe: str) -> AsyncIterator[bytes]:
        """The bytes at the source's pace, the last one once they hash to `parsed`; storage
        follows through the spool (see the module docstring). Returns once the blob is committed."""
        digest = str(parsed)
        session = await self._store.start_upload(FETCH_SESSION_TAG)
        hasher = hashlib.new(parsed.algorithm)
        pipe: SpoolFile | _Queued = await self._open_spool(hasher, digest) or _Queued(hasher)

        async def store() -> None:
            try:
                await self._store.append_upload(session.upload_id, FETCH_SESSION_TAG, expected_offset=0,
                                                chunks=pipe.chunks())
                await self._store.commit_upload(session.upload_id, FETCH_SESSION_TAG, digest=digest,
                                                expected_size=size if size >= 0 else None)
            except BaseException as error:
                pipe.abandon(error)
                raise

        task = asyncio.create_task(store())
        received = 0
        held: bytes | None = None
        try:
            async for chunk in chunks:
                received += len(chunk)
                await pipe.put(chunk)  # hashes it too
                if held is not None:
                    yield held
                held = chunk
            await pipe.finish()
            if hasher.hexdigest() != parsed.encoded or (size >= 0 and received != size):
                # The reader never gets the tail; the store would refuse the commit anyway.
                raise RegistryError(ErrorKind.DIGEST_INVALID,
                                    f"{received} bytes hashing to {parsed.algorithm}:{hasher.hexdigest()}")
            if held is not None:
                yield held
            await task
        except RegistryError as error:
            await self._stop(task)
            await self._cancel(session.upload_id)
            raise self._failed(error, digest, describe) from None
        except BaseException:
            await asyncio.shield(self._stop(task))
            await asyncio.shield(self._cancel(session.upload_id))
            raise
        finally:
            pipe.close()

    async def _open_spool(self, hasher: Any, digest: str) -> SpoolFile | None:
        """A spool file for one fetch, or None without a spool (or one that cannot be written: that
        costs speed, not the fetch)."""
        if self._spool is None:
            return None
        try:
            return await self._spool.open(hasher)
        except OSError as error:
            log.warning("fetch spool %s unusable (%s): blob %s is fetched at storage's pace",
                        self._spool.folder, error, digest)
            return None

    async def _spool_for_readers(self, direct: DirectReadServer, parsed: Digest, size: int,
                                 chunks: AsyncIterator[bytes], describe: str, spooled: SpoolFile,
                                 hasher: Any) -> AsyncIterator[Begun]:
        """`_store_for_readers` on a backend without local files: yields `Begun` with the blob's
        URL once readers can find the fetch there, writes the bytes to `spooled` (which `hasher`
        sees) at the source's pace, readers following its file and storage reading it behind;
        releases the end to readers once the bytes hash to the digest, and returns once storage
        committed the blob. Frees the spool file (readers keep their own handles on it)."""
        digest = str(parsed)
        try:
            session = await self._store.start_upload(FETCH_SESSION_TAG)
        except BaseException:
            spooled.close()
            raise

        async def store() -> None:
            try:
                await self._store.append_upload(session.upload_id, FETCH_SESSION_TAG, expected_offset=0,
                                                chunks=spooled.chunks())
                await self._store.commit_upload(session.upload_id, FETCH_SESSION_TAG, digest=digest,
                                                expected_size=size)
            except BaseException as error:
                spooled.abandon(error)
                raise

        task = asyncio.create_task(store())
        try:
            # Unregistered (no new readers) before the spool file is closed below.
            with direct.fetches.running(digest, size, reopen=spooled.reopen) as progress:
                try:
                    yield Begun(size, await direct.urls.presigned_get_url(keys.blob_key(parsed)))
                    received = reported = 0
                    async for chunk in chunks:
                        received += len(chunk)
                        await spooled.put(chunk)  # hashes it too
                        if spooled.written - reported >= REPORT_BYTES:
                            reported = spooled.written
                            progress.advanced()
                    await spooled.finish()
                    if hasher.hexdigest() != parsed.encoded or received != size:
                        # Readers never get the end; the store would refuse the commit anyway.
                        raise RegistryError(ErrorKind.DIGEST_INVALID,
                                            f"{received} bytes hashing to {parsed.algorithm}:{hasher.hexdigest()}")
                    progress.verified()
                    await task
                except RegistryError as error:
                    progress.end(Outcome.FAILED)
                    await self._stop(task)
                    await self._cancel(session.upload_id)
                    raise self._failed(error, digest, describe) from None
                except BaseException:
                    progress.end(Outcome.FAILED)
                    await asyncio.shield(self._stop(task))
                    await asyncio.shield(self._cancel(session.upload_id))
                    raise
                progress.end(Outcome.COMMITTED)
        finally:
            if not task.done():
                await asyncio.shield(self._stop(task))
            spooled.close()

    @staticmethod
    async def _stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    @staticmethod
    def _failed(error: RegistryError, digest: str, describe: str) -> RegistryError:
        """What a failed store of a fetched blob raises: UPSTREAM_FAILED for bytes that do not
        match the digest, the error itself otherwise."""
        if error.kind in (ErrorKind.DIGEST_INVALID, ErrorKind.SIZE_INVALID):
            return RegistryError(
                ErrorKind.UPSTREAM_FAILED,
                f"{describe} failed: it served blob {digest} with content that does not match it "
                f"({error.message}); nothing was stored",
                {"digest": digest},
            )
        return error

    async def _cancel(self, upload_id: str) -> None:
        # A session the commit already removed (or cancelled itself) is gone: fine.
        with contextlib.suppress(RegistryError):
            await self._store.cancel_upload(upload_id, FETCH_SESSION_TAG)


class _Queued:
    """The spool's interface without a spool: storage takes the bytes as they come (a few
    chunks ahead), so the reader gets them at storage's pace."""

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        self._queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)
        self._abandoned: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def put(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        await self._put(chunk)

    async def _put(self, item: object) -> None:
        putting = asyncio.ensure_future(self._queue.put(item)) if self._queue.full() else None
        if putting is None:
            self._queue.put_nowait(item)
            return
        try:
            await asyncio.wait([putting, self._abandoned], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not putting.done():
                putting.cancel()
        if not putting.cancelled():
            return
        self._abandoned.result()

    async def finish(self) -> None:
        await self._put(_END)

    def abandon(self, error: BaseException) -> None:
        if not self._abandoned.done():
            self._abandoned.set_exception(error)
            self._abandoned.exception()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (item := await self._queue.get()) is not _END:
            yield item

    def close(self) -> None:
        pass


def _reported(chunks: AsyncIterator[bytes], progress: FetchProgress) -> AsyncIterator[bytes]:
    """`chunks`, telling readers each time about a write batch more went to the writer that the
    file grew (the writer has written what came before by the time it asks for more). Not after
    every chunk: socket reads are small, and each wake-up costs the event loop the fetch runs on.
    Chunks read in a worker thread stay so (the filesystem writer is fed in that thread): they are
    reported from there."""
    if isinstance(chunks, ThreadChunks):
        loop = asyncio.get_running_loop()
        read = 0

        def tap(chunk: bytes) -> None:  # in the worker thread
            nonlocal read
            # The writer has written up to the chunk before this one by the time it reads more.
            read += len(chunk)
            if read >= REPORT_BYTES:
                read = 0
                with contextlib.suppress(RuntimeError):  # the loop closed (shutting down)
                    loop.call_soon_threadsafe(progress.advanced)

        return chunks.tapped(tap)
    return _reported_as_iterated(chunks, progress)


async def _reported_as_iterated(chunks: AsyncIterator[bytes], progress: FetchProgress) -> AsyncIterator[bytes]:
    pending = 0
    async for chunk in chunks:
        yield chunk
        pending += len(chunk)
        if pending >= REPORT_BYTES:
            pending = 0
            progress.advanced()
