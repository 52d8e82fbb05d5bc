"""The filesystem backend on a full disk: every write that finds no room fails as STORAGE_FULL
(HTTP 507, "free space"), keeps nothing of itself (no session without an id its client knows,
no half blob, an upload stays at its acknowledged offset), and the same store succeeds again
once space is freed.

The disk is a small tmpfs mounted for the test, because what matters is what each call does when
the file system itself says ENOSPC (a create that succeeds and a write that does not, a pwrite
midway through a chunk); mounting needs root (CI runs as root), elsewhere the test skips."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.blob.backends import keys
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.core import BlobStore
from services.common.errors import ErrorKind, RegistryError
from tests.blob.test_uploads import REPO, append, read_all, sha256
from tests.contracts.blob_backend_suite import keys_of, pattern

OWNER = "10.0.0.7"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
async def store(disk: Path) -> AsyncIterator[BlobStore]:
    backend = FilesystemBackend(disk / "blobs", io_threads=2)
    yield BlobStore(backend, upload_expiry_seconds=3600)
    await backend.close()


def fill(disk: Path) -> Path:
    """A file (not Lading's) that takes every free byte of `disk`."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                if len(block) == 1:
                    return filler
                block = block[: len(block) // 2]
    finally:
        os.close(fd)


def temporary_files(disk: Path) -> list[Path]:
    """The filesystem backend's temporary files left on `disk` (never keys, so never listed)."""
    return list(disk.glob("blobs/**/.tmp-*"))


def full(caught: pytest.ExceptionInfo[RegistryError]) -> bool:
    return caught.value.kind is ErrorKind.STORAGE_FULL and "lading gc" in caught.value.message


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
