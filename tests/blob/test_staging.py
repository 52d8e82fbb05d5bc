"""In-place staging (services.blob.backends.staging) on the filesystem backend, and upload
sessions that use it: one staged file per upload, locked while written, renamed at commit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import keys
from services.blob.backends.base import InvalidKey, ObjectNotFound
from services.blob.backends.filesystem import WRITE_BATCH_BYTES, FilesystemBackend
from services.blob.backends.staging import (
    BatchesBookkeeping,
    CreatesUnsynced,
    ObjectExists,
    PutsIfAbsent,
    StagesInPlace,
    StagingBusy,
)
from services.blob.core import BlobStore
from services.blob.uploads import SessionState, UploadSessions
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from tests.contracts.blob_backend_suite import chunks_of, keys_of, pattern, read

REPO = "library/alpine"
KEY = "uploads/x/data"
OWNER = "owners/a/"


@pytest.fixture
async def backend(tmp_path) -> AsyncIterator[FilesystemBackend]:
    made = FilesystemBackend(tmp_path / "root", io_threads=4)
    yield made
    await made.close()


@pytest.fixture
async def store(backend: FilesystemBackend) -> BlobStore:
    return BlobStore(backend, upload_expiry_seconds=3600, sessions=UploadSessions(backend))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def state_of(store: BlobStore, upload_id: str) -> SessionState:
    return SessionState.from_json(await read(store.backend, keys.upload_state_key(upload_id)))


async def failing_after(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise ConnectionResetError("client went away")


# -- the backend capability ---------------------------------------------------------------------


def test_the_filesystem_backend_has_the_capabilities(backend: FilesystemBackend) -> None:
    assert isinstance(backend, StagesInPlace)
    assert isinstance(backend, CreatesUnsynced)
    assert isinstance(backend, BatchesBookkeeping)
    assert isinstance(backend, PutsIfAbsent)


async def test_staging_grows_in_place_and_drops_what_a_failed_write_left(backend: FilesystemBackend) -> None:
    with pytest.raises(ObjectNotFound):
        await backend.open_staging(KEY, create=False)
    staged = await backend.open_staging(KEY, create=True)
    seen: list[bytes] = []
    try:
        assert staged.size == 0
        assert await staged.write_at(0, chunks_of(b"hello ", b"", b"world"), seen.append) == 11
        assert b"".join(seen) == b"hello world"
        big = pattern(WRITE_BATCH_BYTES + 10)
        with pytest.raises(ConnectionResetError):
            await staged.write_at(11, failing_after(big, big, b"never"))
        assert os.stat(backend.root / KEY).st_size > 11  # the bytes of the failed write are there...
        assert await staged.write_at(11, chunks_of(b"!")) == 1
    finally:
        await staged.close()
    assert await read(backend, KEY) == b"hello world!"  # ...until the next write drops them
    await backend.delete(KEY)


async def test_a_staging_object_has_one_writer_at_a_time(backend: FilesystemBackend) -> None:
    first = await backend.open_staging(KEY, create=True)
    try:
        with pytest.raises(StagingBusy):
            await backend.open_staging(KEY, create=True)
        with pytest.raises(StagingBusy):
            await backend.open_staging(KEY, create=False)
    finally:
        await first.close()
    second = await backend.open_staging(KEY, create=False)
    await second.close()
    await second.close()  # idempotent
    await backend.delete(KEY)


async def test_move_cuts_and_renames_the_staged_file_into_place(backend: FilesystemBackend) -> None:
    staged = await backend.open_staging(KEY, create=True)
    await staged.write_at(0, chunks_of(b"keep this, not that"))
    inode = os.stat(backend.root / KEY).st_ino
    await staged.move_to("blobs/dest", 9)
    await staged.close()  # a no-op after the move
    assert await read(backend, "blobs/dest") == b"keep this"
    assert os.stat(backend.root / "blobs/dest").st_ino == inode  # renamed, not copied
    with pytest.raises(ObjectNotFound):
        await backend.open_staging(KEY, create=False)
    assert await keys_of(backend) == ["blobs/dest"]
    await backend.delete("blobs/dest")


async def test_a_writer_that_lost_a_race_with_a_rename_does_not_write(
    backend: FilesystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that opened the staged file just before a commit renamed it (and got the lock only
    after) must not write into what is now a blob: once it holds the lock it finds the name gone,
    or leading to another file."""
    from services.blob.backends import filesystem

    staged = await backend.open_staging(KEY, create=True)
    await staged.write_at(0, chunks_of(b"blob bytes"))
    await staged.close()
    real_flock = filesystem.fcntl.flock
    path = backend.root / KEY

    def commit_meanwhile(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        os.makedirs(backend.root / "blobs", exist_ok=True)
        os.replace(path, backend.root / "blobs/dest")  # what a commit does under the lock

    monkeypatch.setattr(filesystem.fcntl, "flock", commit_meanwhile)
    with pytest.raises(ObjectNotFound):
        await backend.open_staging(KEY, create=False)

    def recreate_meanwhile(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        fresh = path.with_name("fresh")  # a new session file under the same name: another inode
        fresh.write_bytes(b"another file")
        os.replace(fresh, path)

    path.write_bytes(b"x")
    monkeypatch.setattr(filesystem.fcntl, "flock", recreate_meanwhile)
    with pytest.raises(StagingBusy):
        await backend.open_staging(KEY, create=False)
    monkeypatch.undo()
    assert path.read_bytes() == b"another file"
    for key in await keys_of(backend):
        await backend.delete(key)


async def test_create_unsynced_creates_once(backend: FilesystemBackend) -> None:
    await backend.create_unsynced("owners/a/b", b"")
    await backend.create_unsynced("uploads/x/state.json", b"{}")
    with pytest.raises(ObjectExists):
        await backend.create_unsynced("owners/a/b", b"again")
    assert await read(backend, "uploads/x/state.json") == b"{}"
    assert [info.key for info in [await backend.stat("owners/a/b")]] == ["owners/a/b"]
    assert not [name for _, _, files in os.walk(backend.root) for name in files if name.startswith(".")]
    await backend.delete("owners/a/b")
    await backend.delete("uploads/x/state.json")


def temporary_files(backend: FilesystemBackend) -> list[str]:
    return [name for _, _, files in os.walk(backend.root) for name in files if name.startswith(".")]


async def test_create_unsynced_bounded_counts_then_creates_unless_full(backend: FilesystemBackend) -> None:
    first = [("uploads/x/state.json", b"{}"), ("owners/a/1", b"")]
    assert await backend.create_unsynced_bounded(first, count_prefix="owners/a/", limit=2) == 0
    assert await backend.create_unsynced_bounded([("owners/a/2", b"")], count_prefix=OWNER, limit=2) == 1
    # Full: nothing is created. Keys elsewhere, or only sharing the name's start, do not count.
    await backend.create_unsynced("owners/ab/1", b"")
    assert await backend.create_unsynced_bounded([("owners/a/3", b"")], count_prefix=OWNER, limit=2) == 2
    assert await keys_of(backend, "owners/a/") == ["owners/a/1", "owners/a/2"]
    # A partial last segment counts the keys below every folder it starts.
    assert await backend.create_unsynced_bounded([], count_prefix="owners/a") == 3
    # No prefix: nothing counted, no limit.
    assert await backend.create_unsynced_bounded([("owners/a/3", b"x")]) == 0
    assert await read(backend, "owners/a/3") == b"x"
    with pytest.raises(ObjectExists):
        await backend.create_unsynced_bounded([("owners/a/3", b"again")], count_prefix="owners/a/", limit=9)
    assert await read(backend, "owners/a/3") == b"x"
    assert temporary_files(backend) == []
    await backend.delete_all(["uploads/", "owners/"])
    assert await keys_of(backend) == []


async def test_replace_durably_replaces_atomically(backend: FilesystemBackend) -> None:
    await backend.create_unsynced("uploads/x/state.json", b"zero")
    await backend.replace_durably("uploads/x/state.json", b"one")
    reader = await backend.get("uploads/x/state.json")
    await backend.replace_durably("uploads/x/state.json", b"two")
    # A reader opened before the replacement keeps the old object whole.
    assert b"".join([chunk async for chunk in reader]) == b"one"
    assert await read(backend, "uploads/x/state.json") == b"two"
    assert temporary_files(backend) == []
    await backend.delete("uploads/x/state.json")


async def test_replace_durably_never_makes_a_removed_folder_again(backend: FilesystemBackend) -> None:
    # A session removed (cancel, purge) while an append was on its way stays removed.
    with pytest.raises(ObjectNotFound):
        await backend.replace_durably("uploads/gone/state.json", b"late")
    assert not (backend.root / "uploads" / "gone").exists()


async def test_delete_all_takes_keys_and_prefixes_keeping_emptied_folders(backend: FilesystemBackend) -> None:
    session = ("uploads/x/state.json", "uploads/x/data", "uploads/x/parts/1")
    for key in (*session, "uploads/y/state.json", "owners/a/x"):
        await backend.put(key, chunks_of(b"bytes"))
    (backend.root / "uploads" / "x" / ".tmp-left").write_bytes(b"")
    doomed = ["uploads/x/state.json", "uploads/x/", "owners/a/x", "owners/a/absent", "uploads/z/"]
    await backend.delete_all(doomed)
    assert await keys_of(backend) == ["uploads/y/state.json"]
    assert not (backend.root / "uploads" / "x").exists()
    assert (backend.root / "owners" / "a").is_dir()  # kept for the owner's next session
    with pytest.raises(InvalidKey):
        await backend.delete_all(["../"])
    await backend.delete_all(["uploads/y/state.json"])
    assert await keys_of(backend) == []


async def test_prune_empty_folders_removes_only_idle_empty_ones(backend: FilesystemBackend) -> None:
    await backend.create_unsynced("owners/busy/1", b"")
    await backend.create_unsynced("owners/idle/1", b"")
    await backend.create_unsynced("owners/fresh/1", b"")
    await backend.delete_all(["owners/idle/1", "owners/fresh/1"])
    past = time.time() - 3600
    for name in ("busy", "idle"):
        os.utime(backend.root / "owners" / name, (past, past))
    assert await backend.prune_empty_folders("owners/", time.time() - 60) == 1
    assert sorted(os.listdir(backend.root / "owners")) == ["busy", "fresh"]
    assert await backend.prune_empty_folders("probes/", time.time()) == 0  # absent: nothing to do
    await backend.delete("owners/busy/1")


async def test_put_if_absent_writes_once(backend: FilesystemBackend) -> None:
    assert await backend.put_if_absent("blobs/sha256/ab/abc", b"first")
    assert not await backend.put_if_absent("blobs/sha256/ab/abc", b"second")
    assert await read(backend, "blobs/sha256/ab/abc") == b"first"
    assert temporary_files(backend) == []
    await backend.delete("blobs/sha256/ab/abc")


async def test_put_if_absent_then_deletes_what_it_is_told_in_the_same_call(backend: FilesystemBackend) -> None:
    session = ["uploads/s1/state.json", "uploads/s1/", "owners/o/s1"]
    for key in ("uploads/s1/state.json", "uploads/s1/data", "owners/o/s1"):
        await backend.create_unsynced(key, b"x")
    assert await backend.put_if_absent("blobs/sha256/cd/cde", b"blob", then_delete=session)
    assert await read(backend, "blobs/sha256/cd/cde") == b"blob"
    assert [info.key async for info in backend.list("uploads/")] == []
    assert [info.key async for info in backend.list("owners/")] == []
    # The blob was there already: the session goes all the same.
    await backend.create_unsynced("uploads/s2/state.json", b"x")
    assert not await backend.put_if_absent("blobs/sha256/cd/cde", b"blob", then_delete=["uploads/s2/"])
    assert [info.key async for info in backend.list("uploads/")] == []
    with pytest.raises(InvalidKey):  # checked before anything is written
        await backend.put_if_absent("blobs/sha256/ef/efg", b"blob", then_delete=["../escape"])
    assert [info.key async for info in backend.list("blobs/sha256/ef/")] == []
    await backend.delete("blobs/sha256/cd/cde")


# -- upload sessions over it --------------------------------------------------------------------


async def test_a_chunked_upload_stages_one_file_and_commit_renames_it(store: BlobStore) -> None:
    data = pattern(300_000, seed=1)
    upload = await store.start_upload(REPO)
    upload_id = upload.upload_id
    offset = 0
    for size in (100_000, 1, 99_999, 100_000):
        status = await store.append_upload(upload_id, REPO, expected_offset=offset,
                                           chunks=chunks_of(data[offset:offset + size]))
        offset = status.offset
    state = await state_of(store, upload_id)
    assert [(p.key, p.start, p.size) for p in state.parts] == [(keys.upload_data_key(upload_id), 0, len(data))]
    assert await keys_of(store.backend, keys.upload_prefix(upload_id)) == [
        keys.upload_data_key(upload_id), keys.upload_state_key(upload_id)]
    root = store.backend.root  # type: ignore[attr-defined]
    inode = os.stat(root / keys.upload_data_key(upload_id)).st_ino
    committed = await store.commit_upload(upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert os.stat(root / keys.blob_key(committed.digest)).st_ino == inode  # no copy at commit
    assert await keys_of(store.backend) == [keys.blob_key(committed.digest)]
    stream = await store.read_blob(sha256(data))
    assert b"".join([chunk async for chunk in stream]) == data


async def test_an_append_while_another_writes_is_out_of_order(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(b"first"))
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"-second"
        started.set()
        await release.wait()

    writer = asyncio.create_task(
        store.append_upload(upload.upload_id, REPO, expected_offset=5, chunks=slow()))
    await started.wait()
    with pytest.raises(RegistryError) as caught:
        await store.append_upload(upload.upload_id, REPO, expected_offset=5, chunks=chunks_of(b"-other"))
    assert caught.value.kind is ErrorKind.RANGE_INVALID and caught.value.detail == {"offset": 5}
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"first"), expected_size=5)
    assert caught.value.kind is ErrorKind.RANGE_INVALID
    release.set()
    assert (await writer).offset == 12
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"first-second"), expected_size=12)
    stream = await store.read_blob(sha256(b"first-second"))
    assert b"".join([chunk async for chunk in stream]) == b"first-second"


async def test_bytes_of_a_failed_append_never_reach_the_blob(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(b"head:"))
    with pytest.raises(ConnectionResetError):
        # More than one write batch reaches the file before the stream fails.
        big = pattern(WRITE_BATCH_BYTES, seed=2)
        await store.append_upload(upload.upload_id, REPO, expected_offset=5, chunks=failing_after(big, big, big))
    root = store.backend.root  # type: ignore[attr-defined]
    assert os.stat(root / keys.upload_data_key(upload.upload_id)).st_size > 5
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 5
    await store.append_upload(upload.upload_id, REPO, expected_offset=5, chunks=chunks_of(b"tail"))
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"head:tail"), expected_size=9)
    assert (await store.stat_blob(str(committed.digest))).size == 9
    stream = await store.read_blob(sha256(b"head:tail"))
    assert b"".join([chunk async for chunk in stream]) == b"head:tail"


async def test_after_a_commit_that_died_past_its_rename_the_blob_is_untouched(store: BlobStore) -> None:
    """A commit renamed the staged file to the blob and the process died before removing the
    session: a late append must not grow the blob, and the retried commit succeeds."""
    data = b"committed bytes"
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
    blob = keys.blob_key(Digest.parse(sha256(data)))
    staged = await store.backend.open_staging(keys.upload_data_key(upload.upload_id), create=False)  # type: ignore[attr-defined]
    await staged.move_to(blob, len(data))  # ...and the process dies here
    status = await store.append_upload(upload.upload_id, REPO, expected_offset=len(data), chunks=chunks_of(b"late"))
    assert status.offset == len(data) + 4
    stream = await store.read_blob(sha256(data))
    assert b"".join([chunk async for chunk in stream]) == data
    with pytest.raises(RegistryError) as caught:
        # The session lost its staged bytes: it cannot complete (the blob is still there).
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(data + b"late"), expected_size=None)
    assert caught.value.kind is ErrorKind.BLOB_UPLOAD_UNKNOWN
    assert await keys_of(store.backend) == [blob]


async def test_a_retried_commit_after_the_rename_succeeds(store: BlobStore) -> None:
    data = b"retry me"
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
    blob = keys.blob_key(Digest.parse(sha256(data)))
    staged = await store.backend.open_staging(keys.upload_data_key(upload.upload_id), create=False)  # type: ignore[attr-defined]
    await staged.move_to(blob, len(data))  # the first commit died here
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert committed.size == len(data)
    assert await keys_of(store.backend) == [blob]


async def test_start_writes_no_temporary_files(store: BlobStore, backend: FilesystemBackend) -> None:
    store.sessions.max_sessions_per_owner = 5
    upload = await store.start_upload(REPO, owner="ip:10.0.0.1")
    assert await store.sessions.open_sessions("ip:10.0.0.1") == 1
    state = await state_of(store, upload.upload_id)
    assert (state.offset, state.parts, state.owner) == (0, (), "ip:10.0.0.1")
    assert not [name for _, _, files in os.walk(backend.root) for name in files if name.startswith(".")]
    await store.cancel_upload(upload.upload_id, REPO)
    assert await keys_of(backend) == []


async def test_sessions_started_and_ended_at_once_never_trip_over_pruned_folders(tmp_path) -> None:
    """A purge prunes idle empty owner folders while other sessions are being created in them,
    and a plain `delete` prunes every folder it empties (`uploads/` too): creation must make
    the folders again, not fail."""
    backend = FilesystemBackend(tmp_path / "root", io_threads=16)
    store = BlobStore(backend, upload_expiry_seconds=3600, sessions=UploadSessions(backend, max_sessions_per_owner=100))
    try:
        async def churn(worker: int) -> None:
            for round_no in range(300):
                upload = await store.start_upload(REPO, owner=f"ip:10.0.0.{worker % 3}")
                if round_no % 2:
                    await store.cancel_upload(upload.upload_id, REPO)
                else:
                    data = f"{worker}-{round_no}".encode()
                    await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data),
                                              final_data=data)

        async def prune() -> None:
            for _ in range(300):
                await backend.prune_empty_folders("owners/", time.time() + 60)
                # A probe written and deleted the plain way prunes the folders it empties.
                await backend.put("uploads/probe", chunks_of(b""))
                await backend.delete("uploads/probe")
                await asyncio.sleep(0)

        # Few workers: folders empty (and are pruned) often while another session starts.
        await asyncio.gather(*(churn(worker) for worker in range(3)), prune())
        assert await keys_of(backend, "uploads/") == []
        assert await keys_of(backend, "owners/") == []
        for key in await keys_of(backend):
            await backend.delete(key)
    finally:
        await backend.close()


async def test_an_ended_session_leaves_its_owner_folder_until_a_purge_finds_it_idle(
    store: BlobStore, backend: FilesystemBackend
) -> None:
    store.sessions.max_sessions_per_owner = 1
    data = b"small blob"
    upload = await store.start_upload(REPO, owner="ip:10.0.0.2")
    with pytest.raises(RegistryError) as refused:
        await store.start_upload(REPO, owner="ip:10.0.0.2")
    assert refused.value.kind is ErrorKind.TOOMANYREQUESTS
    await store.commit_upload(
        upload.upload_id, REPO, digest=sha256(data), expected_size=None, final_data=data
    )
    owner_folder = backend.root / keys.owner_prefix("ip:10.0.0.2").rstrip("/")
    assert owner_folder.is_dir() and not os.listdir(owner_folder)
    assert not (backend.root / keys.upload_prefix(upload.upload_id)).exists()
    # The kept folder takes the next session, and counts it.
    again = await store.start_upload(REPO, owner="ip:10.0.0.2")
    await store.cancel_upload(again.upload_id, REPO)
    later = UploadSessions(backend, clock=lambda: time.time() + 7200)
    assert await later.purge(3600) == 0
    assert not owner_folder.exists()
    assert await keys_of(backend) == [keys.blob_key(Digest.parse(sha256(data)))]
