"""An in-memory BlobBackend for tests: objects in a dict, no I/O.

Two instances built with the same `objects` dict share storage, which is how tests simulate two
blob-service replicas over one bucket. `min_part_size` is configurable so that S3's multipart
rule can be exercised without S3.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence

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

# key -> (bytes, unix seconds written)
MemoryObjects = dict[str, tuple[bytes, float]]


class MemoryBackend:
    """BlobBackend over a dict. Every method is atomic because none awaits while mutating."""

    def __init__(self, *, min_part_size: int = 0, objects: MemoryObjects | None = None) -> None:
        self.min_part_size = min_part_size
        self.objects: MemoryObjects = {} if objects is None else objects

    def sharing_storage(self) -> MemoryBackend:
        """Another backend over the same objects (a second 'replica')."""
        return MemoryBackend(min_part_size=self.min_part_size, objects=self.objects)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        validate_key(key)
        parts = [bytes(chunk) async for chunk in chunks]
        data = b"".join(parts)
        self.objects[key] = (data, time.time())
        return len(data)

    def _lookup(self, key: str) -> tuple[bytes, float]:
        validate_key(key)
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        data, _ = self._lookup(key)
        count = check_range(key, offset, length, len(data))
        return _stream(data, offset, offset + count)

    async def stat(self, key: str) -> ObjectInfo:
        data, modified = self._lookup(key)
        return ObjectInfo(key, len(data), modified)

    async def delete(self, key: str) -> None:
        validate_key(key)
        self.objects.pop(key, None)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            entry = self.objects.get(key)
            if entry is not None:
                yield ObjectInfo(key, len(entry[0]), entry[1])

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        if start_after:
            validate_key(start_after)
        for key in sorted(k for k in self.objects if k.startswith(BLOBS_PREFIX) and k > start_after):
            entry = self.objects.get(key)
            if entry is not None:
                yield ObjectInfo(key, len(entry[0]), entry[1])

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        keys = check_compose_args(dest, sources)
        datas = [self._lookup(key)[0] for key in keys]
        for key, data in zip(keys[:-1], datas[:-1], strict=True):
            if len(data) < self.min_part_size:
                raise PartTooSmall(key, len(data), self.min_part_size)
        joined = b"".join(datas)
        self.objects[dest] = (joined, time.time())
        return len(joined)

    async def close(self) -> None:
        return None


async def _stream(data: bytes, start: int, end: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for position in range(start, end, READ_CHUNK_BYTES):
        yield bytes(view[position : min(position + READ_CHUNK_BYTES, end)])
