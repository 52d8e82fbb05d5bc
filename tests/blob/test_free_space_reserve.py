"""The filesystem backend's free-space reserve (blob.filesystem.min_free_bytes): below it, new
blob bytes (a session's start, appends, a whole blob sent with its commit, a pull-through fetch's
fed append) answer STORAGE_FULL naming the reserve and keep nothing of themselves, while reads,
deletes and cancels go on; a blob plane with the reserve lowered then completes the same upload.

No disk is filled: the reserve is set above the free space the real disk reports, which is what
a disk below its reserve looks like to the backend (no mount, no root). Only the check in the
middle of a long write needs a disk whose free space nothing else changes: a small tmpfs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.blob.backends import keys
from services.blob.backends.base import BackendFull
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.core import BlobStore
from services.common.errors import ErrorKind, RegistryError
from services.common.thread_chunks import ThreadChunks
from tests.blob.test_uploads import REPO, append, read_all, sha256
from tests.contracts.blob_backend_suite import chunks_of, keys_of, pattern
from tests.support.full_disk import small_disk

OWNER = "10.0.0.7"
MiB = 1024 * 1024


def beyond_the_disk(path: Path) -> int:
    """A reserve larger than the disk under `path` holds: every new byte is below it."""
    info = os.statvfs(path)
    return 2 * info.f_blocks * info.f_frsize + 1


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "blobs"
    made.mkdir()
    return made


@pytest.fixture
async def roomy(root: Path) -> AsyncIterator[BlobStore]:
    """A blob plane over `root` without a reserve."""
    backend = FilesystemBackend(root, io_threads=2, min_free_bytes=0)
    yield BlobStore(backend, upload_expiry_seconds=3600)
    await backend.close()


@pytest.fixture
async def reserved(root: Path) -> AsyncIterator[BlobStore]:
    """A blob plane over the same `root` whose reserve the disk is below."""
    backend = FilesystemBackend(root, io_threads=2, min_free_bytes=beyond_the_disk(root))
    yield BlobStore(backend, upload_expiry_seconds=3600)
    await backend.close()


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def temporary_files(root: Path) -> list[Path]:
    """The backend's temporary files under `root` (never keys, so never listed)."""
    return list(root.glob("**/.tmp-*"))


def refused_by_the_reserve(caught: pytest.ExceptionInfo[RegistryError]) -> bool:
    message = caught.value.message
    return (
        caught.value.kind is ErrorKind.STORAGE_FULL
        and "free-space reserve is reached" in message
        and "MiB free" in message
        and "lower blob.filesystem.min_free_bytes" in message
        and "lading gc" in message
    )


async def test_a_session_is_refused_at_its_start_and_leaves_nothing(reserved: BlobStore, roomy: BlobStore) -> None:
    with pytest.raises(RegistryError) as caught:
        await reserved.start_upload(REPO, OWNER)
    assert refused_by_the_reserve(caught)
    assert await keys_of(reserved.backend, "") == []  # no state, no owner marker

    started = await roomy.start_upload(REPO, OWNER)
    assert (await roomy.upload_status(started.upload_id, REPO)).offset == 0


async def test_appends_and_whole_blobs_are_refused_while_reads_deletes_and_cancels_go_on(
    reserved: BlobStore, roomy: BlobStore, root: Path
) -> None:
    kept = pattern(70_000, seed=1)
    first = await roomy.start_upload(REPO)
    await roomy.commit_upload(first.upload_id, REPO, digest=sha256(kept), expected_size=None, final_data=kept)
    doomed = pattern(30_000, seed=2)
    second = await roomy.start_upload(REPO)
    await roomy.commit_upload(second.upload_id, REPO, digest=sha256(doomed), expected_size=None, final_data=doomed)
    data = pattern(3 * 1024 * 1024, seed=3)
    started = await roomy.start_upload(REPO)
    acknowledged = await append(roomy, started.upload_id, 0, data[:100_000])
    small = pattern(20_000, seed=4)
    other = await roomy.start_upload(REPO)
    cancelled = await roomy.start_upload(REPO)

    with pytest.raises(RegistryError) as caught:
        await append(reserved, started.upload_id, acknowledged, data[acknowledged:])
    assert refused_by_the_reserve(caught)
    assert (await reserved.upload_status(started.upload_id, REPO)).offset == acknowledged
    # Refused before a byte was written: the staged file holds what was acknowledged, no more.
    assert (root / keys.upload_data_key(started.upload_id)).stat().st_size == acknowledged
    with pytest.raises(RegistryError) as caught:
        await reserved.commit_upload(other.upload_id, REPO, digest=sha256(small), expected_size=None,
                                     final_data=small)
    assert refused_by_the_reserve(caught)
    assert sha256(small).removeprefix("sha256:") not in "".join(await keys_of(reserved.backend, keys.BLOBS_PREFIX))
    assert not temporary_files(root)

    # What needs no new bytes is never refused.
    assert await read_all(reserved, sha256(kept)) == kept
    assert (await reserved.delete_blob(sha256(doomed))).deleted
    await reserved.cancel_upload(cancelled.upload_id, REPO)
    assert cancelled.upload_id not in "".join(await keys_of(reserved.backend, "uploads/"))
    await reserved.check()  # the readiness probe: a plane below its reserve still serves pulls

    # A blob plane with the reserve lowered completes the upload where it stopped.
    assert await append(roomy, started.upload_id, acknowledged, data[acknowledged:]) == len(data)
    await roomy.commit_upload(started.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert await read_all(roomy, sha256(data)) == data


async def test_a_fetch_fed_from_a_worker_thread_is_refused_before_its_first_byte(root: Path) -> None:
    """The pull-through cache's upstream bodies reach the writer in a worker thread (`feed`)."""
    backend = FilesystemBackend(root, io_threads=2, min_free_bytes=beyond_the_disk(root))
    source = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="source")
    chunks = [pattern(100_000, seed=5), pattern(100_000, seed=6)]

    def read() -> bytes:
        return chunks.pop(0) if chunks else b""

    async def run(fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.wrap_future(source.submit(fn, *args))

    key = "uploads/fetch/data"
    try:
        writer = await backend.open_writer(key)
        with pytest.raises(BackendFull, match="free-space reserve is reached"):
            await writer.append((), ThreadChunks(read, run))
        await writer.close()
        assert not (root / key).exists()
    finally:
        source.shutdown(wait=True)
        await backend.close()


async def test_a_long_append_stops_before_the_reserve_not_after_it(tmp_path: Path) -> None:
    """Room is claimed batch by batch while an append streams: one that would cross the reserve
    midway is refused there, gives its unacknowledged bytes back, and leaves the reserve free.
    Here the disk is a small tmpfs that nothing else writes to (skipped where it cannot be
    mounted)."""
    with small_disk(tmp_path / "disk", size="16m") as disk:
        reserve = 8 * MiB
        backend = FilesystemBackend(disk / "blobs", io_threads=2, min_free_bytes=reserve)
        store = BlobStore(backend, upload_expiry_seconds=3600)
        try:
            started = await store.start_upload(REPO)
            data = pattern(12 * MiB, seed=7)
            pieces = [data[at:at + 64 * 1024] for at in range(0, len(data), 64 * 1024)]
            with pytest.raises(RegistryError) as caught:
                await append(store, started.upload_id, 0, *pieces)
            assert refused_by_the_reserve(caught)
            assert (await store.upload_status(started.upload_id, REPO)).offset == 0
            assert (disk / "blobs" / keys.upload_data_key(started.upload_id)).stat().st_size == 0
            assert free_bytes(disk) >= reserve

            with pytest.raises(BackendFull, match="free-space reserve is reached"):
                await backend.put("probes/whole", chunks_of(*pieces))
            assert not temporary_files(disk / "blobs")
            assert free_bytes(disk) >= reserve
        finally:
            await backend.close()


async def test_a_cold_fetch_is_checked_whole_on_each_disk_it_writes_to(tmp_path: Path) -> None:
    """fetch_room.py: a fetch's bytes count once per copy on each disk (store and spool), so a
    blob that fits the store's disk once but not twice is refused when its spool is there too,
    and passes when the spool is on another disk. Needs a disk nothing else writes to."""
    from services.blob.fetch_room import FetchRoom

    with small_disk(tmp_path / "disk", size="16m") as disk:
        reserve = 4 * MiB
        size = 7 * MiB  # about 12 MiB above the reserve: once fits, twice does not
        elsewhere = tmp_path / "spool"  # the real disk, with room to spare
        shared = FetchRoom(reserve, store_root=disk / "blobs", spool_folder=disk / "spool")
        await shared.check(size, spooled=False)
        with pytest.raises(RegistryError) as caught:
            await shared.check(size, spooled=True)
        assert refused_by_the_reserve(caught)
        assert str(disk) in caught.value.message
        await FetchRoom(reserve, store_root=disk / "blobs", spool_folder=elsewhere).check(size, spooled=True)
        # S3: only the spool writes here.
        spool_only = FetchRoom(reserve, store_root=None, spool_folder=disk / "spool")
        await spool_only.check(size, spooled=True)
        await spool_only.check(100 * MiB, spooled=False)  # nothing local to write
        with pytest.raises(RegistryError) as caught:
            await spool_only.check(13 * MiB, spooled=True)
        assert refused_by_the_reserve(caught)
        assert not list(disk.iterdir())  # a check writes nothing


async def test_the_fetch_spool_claims_its_writes_from_the_reserve(tmp_path: Path) -> None:
    """A spool file's batches claim room before they are written, as an upload's do: below the
    reserve a fetch's spool fails with STORAGE_FULL and holds no byte."""
    import hashlib

    from services.blob.fetch_spool import FLUSH_BYTES, FetchSpool

    spool = FetchSpool(tmp_path / "spool", 64 * MiB, min_free_bytes=beyond_the_disk(tmp_path))
    spooled = await spool.open(hashlib.sha256())
    try:
        with pytest.raises(RegistryError) as caught:
            await spooled.put(b"x" * FLUSH_BYTES)
        assert refused_by_the_reserve(caught)
        assert spooled.written == 0
    finally:
        spooled.close()
    roomy = FetchSpool(tmp_path / "spool", 64 * MiB)
    spooled = await roomy.open(hashlib.sha256())
    try:
        await spooled.put(b"x" * FLUSH_BYTES)
        assert spooled.written == FLUSH_BYTES
    finally:
        spooled.close()
