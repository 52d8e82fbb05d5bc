"""The small-object calls of `BlobBackend` as loops over its basic ones (put, stat, list, delete),
for backends that have nothing faster: S3 (one request per object anyway) and memory.

The filesystem has its own, each one trip to its thread pool (see filesystem.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence

from services.blob.backends.base import ObjectInfo, ObjectNotFound

# Concurrent deletes of one `delete_all` (one request per key on S3).
DELETE_CONCURRENCY = 16


class BasicCalls:
    """Mixin: `put_if_absent`, `replace`, `create_unsynced` and `delete_all` from the basic calls."""

    # Provided by the backend.
    put: Callable[[str, AsyncIterable[bytes]], Awaitable[int]]
    stat: Callable[[str], Awaitable[ObjectInfo]]
    delete: Callable[[str], Awaitable[None]]
    list: Callable[[str], AsyncIterator[ObjectInfo]]

    async def _exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """See BlobBackend.put_if_absent: a stat, then a put (an object there is durable already)."""
        if await self._exists(key):
            return False
        await self.put(key, one(data))
        return True

    async def replace(self, key: str, data: bytes) -> None:
        """See BlobBackend.replace: a stat, then a put (a removal in between is not seen)."""
        if not await self._exists(key):
            raise ObjectNotFound(key)
        await self.put(key, one(data))

    async def create_unsynced(
        self, objects: Sequence[tuple[str, bytes]], *, count_prefix: str = "", limit: int = 0
    ) -> int:
        """See BlobBackend.create_unsynced: a listing to count, then a put each (atomic and
        durable here: more than the contract asks)."""
        held = 0
        if count_prefix:
            async for _ in self.list(count_prefix):
                held += 1
        if limit > 0 and held >= limit:
            return held
        for key, data in objects:
            await self.put(key, one(data))
        return held

    async def delete_all(self, targets: Sequence[str]) -> None:
        """See BlobBackend.delete_all: keys one by one, prefixes by listing them."""
        for target in targets:
            if target.endswith("/"):
                await delete_each(self.delete, [info.key async for info in self.list(target)])
            else:
                await self.delete(target)


async def delete_each(delete: Callable[[str], Awaitable[None]], doomed: Sequence[str]) -> None:
    """Deletes `doomed`, DELETE_CONCURRENCY at a time."""
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one_key(key: str) -> None:
        async with limit:
            await delete(key)

    await asyncio.gather(*(one_key(key) for key in doomed))


async def one(data: bytes) -> AsyncIterator[bytes]:
    """`data` as a chunk stream (for `put`)."""
    yield data
