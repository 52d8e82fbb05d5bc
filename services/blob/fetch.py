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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from services.blob.core import BlobStore
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.blob.fetch")

# Opens the source's body for one blob: (size, -1 when unknown; the chunks).
Source = Callable[[], AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]]
# Confirms that the source holds the blob (raises, e.g. BLOB_UNKNOWN naming it, when it does not).
Confirm = Callable[[], Awaitable[object]]
# The opaque repository tag of the upload sessions fetches store through.
FETCH_SESSION_TAG = "lading-fetch"
# Chunks buffered between the source and a slower reader.
_QUEUE_CHUNKS = 4
_END = object()


class FetchOnMiss:
    def __init__(self, store: BlobStore) -> None:
        self._store = store

    async def fetch(self, digest: str, source: Source, *, describe: str, confirm: Confirm
                    ) -> AsyncIterator[int | bytes]:
        """Yields the blob's size (-1: unknown) first, then its bytes. Already stored: from the
        store, once `confirm` said the source holds it too (bytes stored for another repository
        are not served to a reader of this one on the strength of their digest alone). Otherwise
        from `source` (named `describe` in errors), stored on the way.

        Raises DIGEST_INVALID for a malformed digest; UPSTREAM_FAILED (after some bytes, maybe)
        when the source fails or its bytes do not hash to `digest` (nothing is stored then);
        whatever the source raises before its first byte (e.g. BLOB_UNKNOWN naming it).
        """
        Digest.parse(digest)
        try:
            info = await self._store.stat_blob(digest)
        except RegistryError as error:
            if error.kind is not ErrorKind.BLOB_UNKNOWN:
                raise
        else:
            await confirm()
            yield info.size
            if info.size:
                async for chunk in await self._store.read_blob(digest):
                    yield chunk
            return
        async with source() as (size, chunks):
            yield size
            async for item in self._store_while_streaming(digest, size, chunks, describe):
                yield item

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
            if error.kind in (ErrorKind.DIGEST_INVALID, ErrorKind.SIZE_INVALID):
                raise RegistryError(
                    ErrorKind.UPSTREAM_FAILED,
                    f"{describe} failed: it served blob {digest} with content that does not match it "
                    f"({error.message}); nothing was stored",
                    {"digest": digest},
                ) from None
            raise
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self._cancel(session.upload_id)
            raise
        if held is not None:
            yield held

    async def _cancel(self, upload_id: str) -> None:
        # A session the commit already removed (or cancelled itself) is gone: fine.
        with contextlib.suppress(RegistryError):
            await self._store.cancel_upload(upload_id, FETCH_SESSION_TAG)
