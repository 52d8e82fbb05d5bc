"""The filesystem backend on a full disk: every write that finds no room fails as STORAGE_FULL
(HTTP 507, "free space"), keeps nothing of itself (no session without an id its client knows,
no half blob, an upload stays at its acknowledged offset), and the same store succeeds again
once space is freed.

The disk is a small tmpfs (tests/support/full_disk.py: skipped where it cannot be mounted)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.blob.backends import keys
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.core import BlobStore
from services.common.errors import ErrorKind, RegistryError
from tests.blob.test_uploads import REPO, append, read_all, sha256
from tests.contracts.blob_backend_suite import keys_of, pattern
from tests.support.full_disk import fill, small_disk

OWNER = "10.0.0.7"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
async def store(disk: Path) -> AsyncIterator[BlobStore]:
    backend = FilesystemBackend(disk / "blobs", io_threads=2)
    yield BlobStore(backend, upload_expiry_seconds=3600)
    await backend.close()


def temporary_files(disk: Path) -> list[Path]:
    """The filesystem backend's temporary files left on `disk` (never keys, so never listed)."""
    return list(disk.glob("blobs/**/.tmp-*"))


def staged_bytes(disk: Path, upload_id: str) -> int:
    return (disk / "blobs" / keys.upload_data_key(upload_id)).stat().st_size


def full(caught: pytest.ExceptionInfo[RegistryError]) -> bool:
    return caught.value.kind is ErrorKind.STORAGE_FULL and "free or add space" in caught.value.message


async def test_a_session_that_finds_no_room_is_not_left_behind(store: BlobStore, disk: Path) -> None:
    filler = fill(disk)
    with pytest.raises(RegistryError) as caught:
        await store.start_upload(REPO, OWNER)
    assert full(caught)
    assert await keys_of(store.backend, "") == []  # no empty state, no owner marker

    filler.unlink()
    started = await store.start_upload(REPO, OWNER)
    assert (await store.upload_status(started.upload_id, REPO)).offset == 0


async def test_an_upload_keeps_its_offset_and_completes_once_space_is_freed(store: BlobStore, disk: Path) -> None:
    data = pattern(3 * 1024 * 1024, seed=7)
    started = await store.start_upload(REPO)
    acknowledged = await append(store, started.upload_id, 0, data[:100_000])
    small = pattern(200_000, seed=8)
    other = await store.start_upload(REPO)
    filler = fill(disk)

    with pytest.raises(RegistryError) as caught:
        await append(store, started.upload_id, acknowledged, data[acknowledged:])
    assert full(caught)
    assert (await store.upload_status(started.upload_id, REPO)).offset == acknowledged
    # The unacknowledged bytes are given back at once: the room other writes wait for.
    assert staged_bytes(disk, started.upload_id) == acknowledged
    # A small blob sent whole with its commit finds no room either, and leaves no half blob.
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(other.upload_id, REPO, digest=sha256(small), expected_size=None,
                                  final_data=small)
    assert full(caught)
    assert not [key for key in await keys_of(store.backend, "") if key.startswith(keys.BLOBS_PREFIX)]
    assert not temporary_files(disk)

    filler.unlink()
    offset = await append(store, started.upload_id, acknowledged, data[acknowledged:])
    assert offset == len(data)
    await store.commit_upload(started.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert await read_all(store, sha256(data)) == data
    await store.commit_upload(other.upload_id, REPO, digest=sha256(small), expected_size=None,
                                  final_data=small)
    assert await read_all(store, sha256(small)) == small


async def test_a_full_store_passes_the_readiness_probe_and_serves_reads(store: BlobStore, disk: Path) -> None:
    """A blob plane started on a full disk serves pulls (its probe used to fail, and the plane to
    exit), and its pushes answer STORAGE_FULL."""
    data = pattern(50_000, seed=9)
    started = await store.start_upload(REPO)
    await store.commit_upload(started.upload_id, REPO, digest=sha256(data), expected_size=None, final_data=data)
    fill(disk)
    await store.check()
    assert await read_all(store, sha256(data)) == data
    assert not [key for key in await keys_of(store.backend, "") if key.startswith(keys.PROBES_PREFIX)]
