"""The filesystem backend reads cached bytes on the event loop (RWF_NOWAIT) and everything else
in its pool; both give the same bytes."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import file_reader
from services.blob.backends.base import READ_CHUNK_BYTES
from services.blob.backends.filesystem import FilesystemBackend
from tests.contracts.blob_backend_suite import chunks_of, pattern, read

KEY = "blobs/sha256/ab/abc"
DATA = pattern(3 * READ_CHUNK_BYTES + 12_345, seed=7)


@pytest.fixture
async def backend(tmp_path) -> AsyncIterator[FilesystemBackend]:
    made = FilesystemBackend(tmp_path / "root", io_threads=2)
    await made.put(KEY, chunks_of(DATA))
    yield made
    await made.delete(KEY)
    await made.close()


@pytest.fixture
def pool_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chunks read in the pool (not on the event loop)."""
    counted: list[int] = []
    real = file_reader.pread_exact

    def counting(fd: int, amount: int, offset: int) -> bytes:
        counted.append(amount)
        return real(fd, amount, offset)

    monkeypatch.setattr(file_reader, "pread_exact", counting)
    return counted


@pytest.mark.skipif(file_reader.RWF_NOWAIT is None, reason="no RWF_NOWAIT on this platform")
async def test_cached_bytes_are_read_without_the_pool(backend: FilesystemBackend, pool_reads: list[int]) -> None:
    assert await read(backend, KEY) == DATA  # warms the page cache, if it was not
    pool_reads.clear()
    assert await read(backend, KEY) == DATA
    assert await read(backend, KEY, READ_CHUNK_BYTES - 5, READ_CHUNK_BYTES + 10) == DATA[
        READ_CHUNK_BYTES - 5 : 2 * READ_CHUNK_BYTES + 5]
    assert pool_reads == []


async def test_uncached_bytes_are_read_in_the_pool(backend: FilesystemBackend, pool_reads: list[int]) -> None:
    fd = os.open(backend.root / KEY, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop it from the page cache
    finally:
        os.close(fd)
    assert await read(backend, KEY) == DATA
    assert sum(pool_reads) <= len(DATA)


async def test_a_filesystem_refusing_nowait_reads_falls_back_to_the_pool(
    backend: FilesystemBackend, pool_reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(file_reader.os, "preadv", refuse)
    assert await read(backend, KEY) == DATA
    assert sum(pool_reads) == len(DATA)
    assert not backend._cached_reads.enabled
