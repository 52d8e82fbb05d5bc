"""The fetch spool: a cold fetch's bytes on their way to storage, so that the reader gets them at
the source's pace while storage (an S3 multipart upload) takes them at its own
(services/blob/fetch.py, `tail_when_verified`; settings: blob.fetch_spool).

Each fetch writes to a file of its own in the spool folder, unlinked as soon as it is created
(nothing stays behind, even after a crash), and the store reads it back behind the writer. The
bytes written and not yet read by the store count against one budget per process; a fetch that
finds the budget spent waits for room, i.e. goes at storage's pace again (the backpressure a
fetch had without a spool). Writes go to the file in batches of FLUSH_BYTES (one thread hop each).

The spool folder's disk keeps the free-space reserve (blob.filesystem.min_free_bytes) as the
filesystem backend's does: each batch claims its room before it is written (an unlinked spool
file holds the whole blob until its fetch ends), and a batch that would reach into the reserve, or
that the disk has no room for, fails the fetch with STORAGE_FULL; fetch_room.py checks a fetch of
known size whole before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from services.blob.backends.base import BackendFull
from services.blob.backends.free_space import FreeSpaceReserve
from services.common.errors import RegistryError, storage_full
from services.common.private_files import DISK_FULL_ERRNOS

# Bytes gathered in memory before they are written to the spool file (and readable by the store).
FLUSH_BYTES = 1024 * 1024
# The store reads the spool file in pieces of at most this (a gRPC-sized chunk).
READ_BYTES = 1024 * 1024


class SpoolBudget:
    """Bytes spooled and not yet stored across the fetches of one process, at most `capacity`.
    `take` waits first in first out; an amount above the capacity takes the whole of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0
        self.waited = 0  # how many takes had to wait (tests and diagnostics)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_take(self, amount: int) -> int | None:
        amount = min(amount, self.capacity)
        if self._waiters or self.capacity - self.reserved < amount:
            return None
        self.reserved += amount
        return amount

    async def take(self, amount: int, abandon: asyncio.Future[None]) -> int:
        """Reserves `amount` (capped at the capacity), waiting for room; raises what `abandon`
        ends with (the store failed: no one will give the room back for this fetch)."""
        taken = self.try_take(amount)
        if taken is not None:
            return taken
        amount = min(amount, self.capacity)
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, future))
        self.waited += 1
        try:
            await asyncio.wait([future, abandon], return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                abandon.result()  # raises the store's error
                raise RuntimeError("the fetch spool was abandoned")
        except BaseException:
            if future.done() and not future.cancelled():
                self.give_back(amount)
            else:
                future.cancel()
                self._wake()
            raise
        return amount

    def give_back(self, amount: int) -> None:
        self.reserved -= amount
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            amount, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.capacity - self.reserved < amount:
                return
            self._waiters.popleft()
            self.reserved += amount
            future.set_result(None)


class FetchSpool:
    """The spool folder and budget of one blob process; `min_free_bytes`: the free-space reserve
    its writes keep on the folder's disk (0: none)."""

    def __init__(self, folder: Path, budget_bytes: int, *, min_free_bytes: int = 0) -> None:
        self.folder = folder
        self.budget = SpoolBudget(budget_bytes)
        self.reserve = FreeSpaceReserve(folder, min_free_bytes)

    async def open(self, hasher: Any) -> SpoolFile:
        """A new spool file; `hasher` (a hashlib object) is fed the bytes as they are written."""
        return SpoolFile(await asyncio.to_thread(_anonymous_file, self.folder), self.budget, hasher,
                         self.reserve)


def _anonymous_file(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, path = tempfile.mkstemp(dir=folder, prefix="fetch-")
    os.unlink(path)
    return descriptor


class SpoolFile:
    """One fetch's spool: `put` the chunks (then `finish`) on one side, `chunks()` on the other;
    the hasher has seen every byte put once `finish` returned (it is fed in the writing thread,
    off the event loop: hashlib lets go of the GIL).
    `abandon(error)` when the reader is gone, so a writer waiting for room stops; `close` frees
    the file and whatever budget is still held."""

    def __init__(self, descriptor: int, budget: SpoolBudget, hasher: Any,
                 reserve: FreeSpaceReserve | None = None) -> None:
        self._descriptor = descriptor
        self._reserve = reserve
        self._hasher = hasher
        self._budget = budget
        self._held = 0  # budget this file holds (bytes spooled, not yet read by the store)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._written = 0
        self._read = 0
        self._ended = False
        self._closed = False
        self._grown = asyncio.Event()
        self._abandoned: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def written(self) -> int:
        """Bytes in the file so far (readable by the store and by `reopen`'s readers)."""
        return self._written

    def reopen(self) -> BinaryIO | None:
        """A new handle on the file, with an offset of its own (a reader's; the caller closes it,
        off the event loop: it may outlive `close` and be the file's last descriptor, whose close
        frees the blocks), or None once the file was closed. On the event loop only (as `close`),
        so the descriptor cannot be closed, and its number reused, in between: the open itself
        touches no disk (Linux: through /proc/self/fd, which reopens an unlinked file; ~6 µs)."""
        if self._closed:
            return None
        try:
            return open(f"/proc/self/fd/{self._descriptor}", "rb")  # noqa: SIM115 - the caller closes it
        except OSError:
            return None

    async def put(self, chunk: bytes) -> None:
        taken = self._budget.try_take(len(chunk))
        if taken is None:
            # Out of room: what is gathered goes to the file first, for the store to read and
            # give room back (else fetches waiting with unwritten bytes could wait on each other).
            await self._flush()
            taken = await self._budget.take(len(chunk), self._abandoned)
        self._held += taken
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= FLUSH_BYTES:
            await self._flush()

    async def finish(self) -> None:
        await self._flush()
        self._ended = True
        self._grown.set()

    def abandon(self, error: BaseException) -> None:
        if not self._abandoned.done():
            self._abandoned.set_exception(error)
            self._abandoned.exception()  # retrieved: nobody may be waiting

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._read < self._written:
                count = min(READ_BYTES, self._written - self._read)
                data = await asyncio.to_thread(os.pread, self._descriptor, count, self._read)
                if len(data) != count:
                    raise OSError(f"the fetch spool file gave {len(data)} of {count} bytes")
                self._read += count
                yield data
                # The store took it (it asks for more only then): its room goes back.
                freed = min(count, self._held)
                self._held -= freed
                self._budget.give_back(freed)
                continue
            if self._ended:
                return
            self._grown.clear()
            await self._grown.wait()

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_bytes = [], 0
        try:
            written = await asyncio.to_thread(_hash_and_write, self._hasher, self._reserve, self._descriptor, data,
                                              self._written)
        except BackendFull as error:
            raise storage_full(str(error)) from None
        except OSError as error:
            if error.errno not in DISK_FULL_ERRNOS:
                raise
            raise _spool_full(error) from None
        self._written += written
        self._grown.set()

    def close(self) -> None:
        """Frees the budget still held and this handle on the file (readers' own handles keep
        it until they close them). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._budget.give_back(self._held)
        self._held = 0
        # Closing the last descriptor of an unlinked file frees its blocks: not on the event loop.
        asyncio.get_running_loop().run_in_executor(None, _close_quietly, self._descriptor)


def _close_quietly(descriptor: int) -> None:
    with contextlib.suppress(OSError):
        os.close(descriptor)


def _spool_full(error: OSError) -> RegistryError:
    return storage_full(f"the fetch spool's disk is full: {error.strerror}")


def _hash_and_write(hasher: Any, reserve: FreeSpaceReserve | None, descriptor: int, data: bytes,
                    offset: int) -> int:
    if reserve is not None:
        reserve.claim_blocking(len(data))  # before a byte is written
    hasher.update(data)
    view = memoryview(data)
    while view:
        count = os.pwrite(descriptor, view, offset)
        offset += count
        view = view[count:]
    return len(data)
