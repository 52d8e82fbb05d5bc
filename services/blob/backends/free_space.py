"""The filesystem backend's free-space reserve (`blob.filesystem.min_free_bytes`).

New blob bytes are refused with BackendFull while writing them would leave less than the reserve
free on the disk of the backend's root: the room stays for what must still work when blobs have
filled the disk (the embedded SQLite database it often shares, deletes, `lading maintenance`, a
restart that creates SQLite's -wal and -shm files). Only writes of new bytes claim room (puts,
starting an upload session, appends, pull-through fetches through them); reads, deletes, GC,
cancels, commits (a rename) and the small rewrite of a session's state never do. The
pull-through cache's fetch spool keeps the same reserve on its folder's disk (fetch_spool.py,
fetch_room.py).

A claim is checked before its bytes are written. `os.statvfs` runs in a worker thread, and not
for every write batch: a check that finds room grants a budget (the room above the reserve, at
most `RECHECK_BYTES`) that later claims spend without a system call; the next check comes when it
runs out. Other writers on the disk (SQLite, other replicas on a shared folder) can therefore
take at most `RECHECK_BYTES` of the reserve per process before a check sees it. Below the reserve
there is no budget: every claim checks, so a push succeeds as soon as space is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from pathlib import Path

from services.blob.backends.base import BackendFull, MiB

# Bytes claimed between two statvfs calls at most (see the module docstring): small next to any
# sensible reserve, large enough that a push checks once per 16 write batches (~1 MiB each).
RECHECK_BYTES = 16 * MiB


def _size(count: int) -> str:
    return f"{count / MiB:.1f} MiB"


class FreeSpaceReserve:
    """Refuses claims of room that would leave less than `min_free_bytes` free under `root`
    (0: never). Thread-safe: claims come from the event loop (`claim`) and from worker threads
    (`claim_blocking`)."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        # Bytes that may still be claimed without a statvfs.
        self._budget = 0

    def _spend(self, size: int) -> bool:
        with self._lock:
            if self._budget > 0 and size <= self._budget:
                self._budget -= size
                return True
            return False

    def claim_blocking(self, size: int) -> None:
        """Claims `size` bytes about to be written, in a worker thread; BackendFull when they
        would reach into the reserve."""
        if self.min_free_bytes <= 0 or self._spend(size):
            return
        info = os.statvfs(existing_folder(self.root))
        free = info.f_bavail * info.f_frsize
        room = free - self.min_free_bytes - size
        with self._lock:
            self._budget = max(0, min(room, RECHECK_BYTES))
        if room < 0:
            raise BackendFull(
                f"the blob storage's free-space reserve is reached: {_size(free)} free on the disk of "
                f"{self.root}, blob.filesystem.min_free_bytes keeps {_size(self.min_free_bytes)} for the "
                "database, deletes and restarts; free space (move files off the disk, or lading gc "
                "once deleted images are past the review delay) or lower blob.filesystem.min_free_bytes"
            )

    async def claim(self, pool: concurrent.futures.Executor, size: int) -> None:
        """`claim_blocking` from the event loop: a trip to `pool` only when the budget is spent."""
        if self.min_free_bytes <= 0 or self._spend(size):
            return
        await asyncio.wrap_future(pool.submit(self.claim_blocking, size))


def existing_folder(path: Path) -> Path:
    """`path` when it exists, else the nearest folder above it that does (the root is made by
    its first write): the disk it will be on."""
    if path.exists():
        return path
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")
