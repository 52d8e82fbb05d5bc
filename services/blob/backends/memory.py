"""An in-memory BlobBackend for tests: objects in a dict, no I/O.

Two instances built with the same `objects` dict share storage, which is how tests simulate two
blob-service replicas over one bucket. Its writers are S3's (`parts.PartsWriter`), and
`min_part_size` is configurable, so S3's staging and its multipart rule can be exercised without S3.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence

from services.blob.backends.base import READ_CHUNK_BYTES, ObjectInfo, ObjectNotFound, check_range
from services.blob.backends.basic_calls import BasicCalls
from services.blob.backends.keys import BLOBS_PREFIX
from services.blob.backends.parts import PartsWriter, PartTooSmall, check_compose_args

# key -> (bytes, unix seconds written)
MemoryObjects = dict[str, tuple[bytes, float]]


class MemoryBackend(BasicCalls):
    """BlobBackend over a dict. Every method is atomic because none awaits while mutating.
    Keys are checked by the instrumented wrapper (instrumented.py)."""

    def __init__(self, *, min_part_size: int = 0, objects: MemoryObjects | None = None) -> None:
        self.min_part_size = min_part_size
        self.objects: MemoryObjects = {} if objects is None else objects

    def sharing_storage(self) -> MemoryBackend:
        """Another backend over the same objects (a second 'replica')."""
        return MemoryBackend(min_part_size=self.min_part_size, objects=self.objects)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        parts = [bytes(chunk) async for chunk in chunks]
        data = b"".join(parts)
        self.objects[key] = (data, time.time())
        return len(data)

    def _lookup(self, key: str) -> tuple[bytes, float]:
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        data, _ = self._lookup(key)
        count = check_range(key, offset, length, len(data))
        return _stream(data, offset, offset + count)

    async def read_whole(self, key: str) -> bytes:
        return self._lookup(key)[0]

    async def stat(self, key: str) -> ObjectInfo:
        data, modified = self._lookup(key)
        return ObjectInfo(key, len(data), modified)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            entry = self.objects.get(key)
            if entry is not None:
                yield ObjectInfo(key, len(entry[0]), entry[1])

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        for key in sorted(k for k in self.objects if k.startswith(BLOBS_PREFIX) and k > start_after):
            entry = self.objects.get(key)
            if entry is not None:
                yield ObjectInfo(key, len(entry[0]), entry[1])

    async def open_writer(self, key: str) -> PartsWriter:
        return PartsWriter(self, key)

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        """For `PartsWriter`: see parts.ComposingStore.compose."""
        keys = check_compose_args(dest, sources)
        datas = [self._lookup(key)[0] for key in keys]
        for key, data in zip(keys[:-1], datas[:-1], strict=True):
            if len(data) < self.min_part_size:
                raise PartTooSmall(key, len(data), self.min_part_size)
        joined = b"".join(datas)
        self.objects[dest] = (joined, time.time())
        return len(joined)

    async def prepare(self) -> None:
        return None

    async def clean_up(self, older_than: float) -> int:
        return 0

    async def close(self) -> None:
        return None


async def _stream(data: bytes, start: int, end: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for position in range(start, end, READ_CHUNK_BYTES):
        yield bytes(view[position : min(position + READ_CHUNK_BYTES, end)])
