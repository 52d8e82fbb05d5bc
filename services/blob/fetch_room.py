"""Room for the pull-through cache's cold fetches under the free-space reserve
(`blob.filesystem.min_free_bytes`, backends/free_space.py).

A cold fetch writes its blob twice over at most: to storage (an upload session; on the filesystem
backend its writes claim room from the reserve as a push's do) and, when it spools
(fetch_spool.py), to a spool file that holds the whole blob until the fetch ends (the spool's
writes claim room as an upload's do, on the disk of the spool folder). `lading serve` puts the
blobs, the spool folder and the SQLite database under one data folder, so both land on the disk
whose last room the reserve keeps for the database.

Per-write claims alone would refuse a fetch midway, after its answer started (a `307` to the
direct-read server, or a `200` streaming): the client would see a body cut short. So a fetch whose
source names its size is checked whole before its first byte, and refused with the reserve's
clear STORAGE_FULL (`507`) while its bytes would leave less than the reserve free on any disk they
land on, counted once per copy (twice on a disk that holds both the store and the spool). Nothing
is written before the check. Blobs already stored are served without one: warm pulls never need
room.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from services.blob.backends.base import BackendFull
from services.blob.backends.free_space import FreeSpaceReserve, existing_folder
from services.common.errors import storage_full


class FetchRoom:
    """The reserve check of a cold fetch (see the module docstring). `store_root`: the filesystem
    backend's root (None on backends without a reserve of their own: S3, memory);
    `spool_folder`: the fetch spool's folder (None without a spool)."""

    def __init__(self, min_free_bytes: int, *, store_root: Path | None, spool_folder: Path | None) -> None:
        self.min_free_bytes = min_free_bytes
        self._store_root = store_root
        self._spool_folder = spool_folder

    async def check(self, size: int, *, spooled: bool) -> None:
        """Raises STORAGE_FULL (naming the reserve, the disk and the setting) when writing `size`
        bytes to the store, and to the spool with `spooled`, would leave less than the reserve
        free on a disk they land on."""
        if self.min_free_bytes <= 0 or size <= 0:
            return
        try:
            await asyncio.to_thread(self._check_blocking, size, spooled)
        except BackendFull as error:
            raise storage_full(str(error)) from None

    def _check_blocking(self, size: int, spooled: bool) -> None:
        # Bytes per disk (st_dev), and a folder on it to name.
        needs: dict[int, tuple[Path, int]] = {}
        for folder in (self._store_root, self._spool_folder if spooled else None):
            if folder is None:
                continue
            device = os.stat(existing_folder(folder)).st_dev
            named, count = needs.get(device, (folder, 0))
            needs[device] = (named, count + size)
        for folder, count in needs.values():
            # A reserve of its own, without a budget: every check asks the disk.
            FreeSpaceReserve(folder, self.min_free_bytes).claim_blocking(count)
