"""The filesystem backend reads cached bytes on the event loop (RWF_NOWAIT) and everything else
in its pool; both give the same bytes."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
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


# --- the event loop never frees a deleted blob's blocks ---------------------------------------------


def _still_open(fd: int, inode: int) -> bool:
    """Whether `fd` is still this process's handle on the file `inode`."""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError as error:
        assert error.errno == errno.EBADF, error
        return False


@pytest.mark.parametrize("ending", ["read to the end", "aclose"])
async def test_a_readers_last_handle_on_a_deleted_blob_is_closed_in_the_pool(
    backend: FilesystemBackend, ending: str
) -> None:
    """Garbage collection may delete a blob while it is read: the reader's descriptor is then the
    file's last, and closing it frees the file's blocks (tens of ms per 64 MiB on ext4), so the
    reader closes it in the backend's pool, never on the event loop. The pool is held busy here,
    so a close handed to it has not run yet when the reader's end returns to the loop."""
    reader = await backend.get(KEY)
    assert isinstance(reader, file_reader.FileReader)
    fd = reader._fd
    assert fd is not None
    inode = os.fstat(fd).st_ino
    await backend.delete(KEY)  # what GC does: the reader's handle is now the file's last
    assert os.fstat(fd).st_nlink == 0
    received = bytearray()
    if ending == "read to the end":
        while len(received) < len(DATA):
            received += await anext(reader)
        assert bytes(received) == DATA
    gate = threading.Event()
    busy = [backend._pool.submit(gate.wait) for _ in range(2)]  # both of the pool's threads
    try:
        if ending == "read to the end":
            with pytest.raises(StopAsyncIteration):
                await anext(reader)
        else:
            await reader.aclose()
        assert _still_open(fd, inode), "closed on the event loop"
    finally:
        gate.set()
    for waiting in busy:
        waiting.result(timeout=10)
    await asyncio.wrap_future(backend._pool.submit(lambda: None))  # the close queued behind them
    assert not _still_open(fd, inode), "never closed"
