"""The filesystem blob backend after a power cut (issue 18 item 2): whatever a call acknowledged
is on the disk, because every file renamed or linked into place was fsynced first and its
folder (and any folder made for it) after.

Each test works on the power-cut file system (tests/support/powercut_fs.py), acknowledges some
writes, closes the backend (a power cut needs no process to die first: nothing runs after the
acknowledgement) and cuts: what was not durable is gone. Then it looks at what came back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.blob.backends import keys
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.uploads import UploadSessions
from services.common.digests import Digest
from tests.support import oci
from tests.support.powercut import PowerCutDisk, require_fuse


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    require_fuse()
    with PowerCutDisk(tmp_path / "disk") as mounted:
        yield mounted


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(backend: FilesystemBackend, key: str) -> bytes:
    return b"".join([chunk async for chunk in await backend.get(key)])


class Backend:
    """A backend on the disk, rebuilt after each cut."""

    def __init__(self, disk: PowerCutDisk) -> None:
        self.disk = disk
        self.backend = FilesystemBackend(disk.path / "blobs")
        self.sessions = UploadSessions(self.backend)

    async def cut(self) -> None:
        await self.backend.close()
        self.disk.cut()
        self.backend = FilesystemBackend(self.disk.path / "blobs")
        self.sessions = UploadSessions(self.backend)

    async def close(self) -> None:
        await self.backend.close()


@pytest.fixture
async def store(disk: PowerCutDisk) -> AsyncIterator[Backend]:
    opened = Backend(disk)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_put_into_new_folders_survives(store: Backend) -> None:
    await store.backend.put("blobs/sha256/ab/one", _chunks(b"one"))
    await store.backend.put("blobs/sha256/cd/two", _chunks(b"t", b"w" * (2 << 20), b"o"))
    await store.cut()
    assert await _read(store.backend, "blobs/sha256/ab/one") == b"one"
    assert await _read(store.backend, "blobs/sha256/cd/two") == b"t" + b"w" * (2 << 20) + b"o"


async def test_a_small_blob_committed_whole_survives(store: Backend) -> None:
    data = b"monolithic"
    started = await store.sessions.start("repo", owner="someone")
    committed = await store.sessions.commit(started.upload_id, "repo", digest=oci.sha256(data), final_data=data)
    await store.cut()
    assert await _read(store.backend, keys.blob_key(committed.digest)) == data


async def test_acknowledged_chunks_survive_and_the_upload_resumes(store: Backend) -> None:
    first, second, third = b"a" * 5000, b"b" * 7000, b"c" * 3000
    started = await store.sessions.start("repo", owner="someone")
    acknowledged = await store.sessions.append(started.upload_id, "repo", expected_offset=0, chunks=_chunks(first))
    await store.cut()
    # The session comes back where its client was told it is (its first state was written
    # unsynced: the first chunk's durable state must bring the session's folder along).
    status = await store.sessions.status(started.upload_id, "repo")
    assert status.offset == acknowledged.offset == len(first)
    # A later chunk: its state rewrite (a rename over the previous state) is durable too.
    acknowledged = await store.sessions.append(started.upload_id, "repo", expected_offset=status.offset,
                                               chunks=_chunks(second))
    await store.cut()
    status = await store.sessions.status(started.upload_id, "repo")
    assert status.offset == acknowledged.offset == len(first + second)
    await store.sessions.append(started.upload_id, "repo", expected_offset=status.offset, chunks=_chunks(third))
    committed = await store.sessions.commit(started.upload_id, "repo", digest=oci.sha256(first + second + third))
    assert await _read(store.backend, keys.blob_key(committed.digest)) == first + second + third


async def test_a_chunked_commit_survives_whole_and_leaves_no_staged_copy(store: Backend) -> None:
    data = b"c" * 9000
    started = await store.sessions.start("repo")
    await store.sessions.append(started.upload_id, "repo", expected_offset=0, chunks=_chunks(data[:4000]))
    await store.sessions.append(started.upload_id, "repo", expected_offset=4000, chunks=_chunks(data[4000:]))
    committed = await store.sessions.commit(started.upload_id, "repo", digest=oci.sha256(data))
    await store.cut()
    blob = keys.blob_key(Digest.parse(oci.sha256(data)))
    assert await _read(store.backend, blob) == data
    assert committed.size == len(data)
    # The staged file was renamed to the blob: its old name must not survive as a second link
    # to the blob's bytes (an append to a resumed session would write into the blob).
    staged = store.disk.path / "blobs" / keys.upload_data_key(started.upload_id)
    assert not staged.exists()


async def test_a_chunk_acknowledged_after_a_failed_first_attempt_survives(store: Backend) -> None:
    """The first PATCH of a session broke midway (its staged file was created, nothing synced),
    the retry was acknowledged: the session must come back where its client was told it is,
    although the retry found the staged file already there."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (2 << 20)  # more than one write reaches the file
        yield b"y" * (2 << 20)
        raise ConnectionResetError("client went away")

    started = await store.sessions.start("repo", owner="someone")
    with pytest.raises(ConnectionResetError):
        await store.sessions.append(started.upload_id, "repo", expected_offset=0, chunks=broken())
    acknowledged = await store.sessions.append(started.upload_id, "repo", expected_offset=0, chunks=_chunks(b"ok"))
    await store.cut()
    status = await store.sessions.status(started.upload_id, "repo")
    assert status.offset == acknowledged.offset == 2
    committed = await store.sessions.commit(started.upload_id, "repo", digest=oci.sha256(b"ok"))
    assert await _read(store.backend, keys.blob_key(committed.digest)) == b"ok"
