"""The filesystem backend's writer (services/blob/backends/file_writer.py) and what only the
filesystem does beyond the shared contract: one staged file per upload, locked while written,
renamed at commit; small-object calls without temporary files; folders kept for reuse until
`clean_up` finds them idle. And upload sessions over it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from services.blob.backends import keys
from services.blob.backends.base import BlobBackend, ObjectNotFound, Part, WriterBusy
from services.blob.backends.file_writer import WRITE_BATCH_BYTES
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.core import BlobStore
from services.blob.uploads import SessionState, UploadSessions
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.thread_chunks import ThreadChunks
from tests.contracts.blob_backend_suite import chunks_of, failing_after, keys_of, pattern, read

REPO = "library/alpine"
KEY = "uploads/x/data"


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


# -- the writer ---------------------------------------------------------------------------------


def temporary_files(backend: FilesystemBackend) -> list[str]:
    return [name for _, _, files in os.walk(backend.root) for name in files if name.startswith(".")]


async def test_the_filesystem_backend_passes_for_a_blob_backend(backend: FilesystemBackend) -> None:
    assert isinstance(backend, BlobBackend)


async def test_bytes_grow_in_one_file_and_what_a_failed_append_left_is_dropped(backend: FilesystemBackend) -> None:
    writer = await backend.open_writer(KEY)
    seen: list[bytes] = []
    try:
        parts = await writer.append((), chunks_of(b"hello ", b"", b"world"), observe=seen.append)
        assert parts == (Part(KEY, 0, 11),) and b"".join(seen) == b"hello world"
        big = pattern(WRITE_BATCH_BYTES + 10)
        with pytest.raises(ConnectionResetError):
            await writer.append(parts, failing_after(big, big, b"never"))
        assert os.stat(backend.root / KEY).st_size > 11  # the bytes of the failed append are there...
        parts = await writer.append(parts, chunks_of(b"!"))
    finally:
        await writer.close()
    assert await read(backend, KEY) == b"hello world!"  # ...until the next append drops them
    assert await keys_of(backend) == [KEY]
    await backend.delete(KEY)


async def test_a_staged_file_has_one_writer_at_a_time(backend: FilesystemBackend) -> None:
    first = await backend.open_writer(KEY)
    parts = await first.append((), chunks_of(b"staged"))  # creates the file and takes its lock
    with pytest.raises(WriterBusy):
        await backend.open_writer(KEY)
    await first.close()
    second = await backend.open_writer(KEY)  # the file exists: the lock is taken at open
    third = await backend.open_writer("uploads/x/other")
    try:
        with pytest.raises(WriterBusy):
            await backend.open_writer(KEY)
        assert await second.append(parts, chunks_of(b"+")) == (Part(KEY, 0, 7),)
    finally:
        await second.close()
        await second.close()  # idempotent
        await third.close()
    await backend.delete(KEY)


async def test_a_writer_opened_before_anything_was_staged_locks_at_its_first_append(
    backend: FilesystemBackend,
) -> None:
    """Two writers opened while nothing is staged: the first append creates and locks the file;
    the other's first append finds it taken (its view, "nothing staged", is stale)."""
    early, late = await backend.open_writer(KEY), await backend.open_writer(KEY)
    try:
        assert not (backend.root / KEY).exists()  # opening creates nothing
        await early.append((), chunks_of(b"first"))
        with pytest.raises(WriterBusy):
            await late.append((), chunks_of(b"second"))
    finally:
        await early.close()
        await late.close()
    assert await read(backend, KEY) == b"first"
    await backend.delete(KEY)


async def test_commit_cuts_and_renames_the_staged_file_into_place(backend: FilesystemBackend) -> None:
    writer = await backend.open_writer(KEY)
    await writer.append((), chunks_of(b"keep this, not that"))
    inode = os.stat(backend.root / KEY).st_ino
    await writer.commit((Part(KEY, 0, 9),), "blobs/dest")
    await writer.close()  # a no-op after the commit
    assert await read(backend, "blobs/dest") == b"keep this"
    assert os.stat(backend.root / "blobs/dest").st_ino == inode  # renamed, not copied
    assert await keys_of(backend) == ["blobs/dest"]
    await backend.delete("blobs/dest")


async def test_parts_the_file_cannot_hold_are_lost(backend: FilesystemBackend) -> None:
    writer = await backend.open_writer(KEY)
    try:
        parts = await writer.append((), chunks_of(b"12345"))
        with pytest.raises(ObjectNotFound):  # more than the file holds
            await writer.commit((Part(KEY, 0, 6),), "blobs/never")
    finally:
        await writer.close()
    writer = await backend.open_writer(KEY)
    try:
        with pytest.raises(ObjectNotFound):  # another key's parts (S3's layout, say)
            await writer.append((Part("uploads/x/data/0-1", 0, 5),), chunks_of(b"more"))
        assert await writer.append(parts, chunks_of(b"6")) == (Part(KEY, 0, 6),)
    finally:
        await writer.close()
    assert await keys_of(backend) == [KEY]
    await backend.delete(KEY)


async def test_a_writer_that_lost_a_race_with_a_rename_does_not_write(
    backend: FilesystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that opened the staged file just before a commit renamed it (and got the lock only
    after) must not write into what is now a blob: once it holds the lock it finds the name gone,
    or leading to another file, and looks again."""
    from services.blob.backends import file_writer

    writer = await backend.open_writer(KEY)
    parts = await writer.append((), chunks_of(b"blob bytes"))
    await writer.close()
    real_flock = file_writer.fcntl.flock
    path = backend.root / KEY

    def commit_meanwhile(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        if path.exists():
            os.makedirs(backend.root / "blobs", exist_ok=True)
            os.replace(path, backend.root / "blobs/dest")  # what a commit does under the lock

    monkeypatch.setattr(file_writer.fcntl, "flock", commit_meanwhile)
    late = await backend.open_writer(KEY)  # finds nothing staged any more
    with pytest.raises(ObjectNotFound):
        await late.append(parts, chunks_of(b" and more"))
    await late.close()
    assert (backend.root / "blobs/dest").read_bytes() == b"blob bytes"

    def recreate_meanwhile(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        fresh = path.with_name("fresh")  # a new session file under the same name: another inode
        fresh.write_bytes(b"another file")
        os.replace(fresh, path)

    path.write_bytes(b"x")
    monkeypatch.setattr(file_writer.fcntl, "flock", recreate_meanwhile)
    with pytest.raises(WriterBusy):
        await backend.open_writer(KEY)
    monkeypatch.undo()
    assert path.read_bytes() == b"another file"
    for key in await keys_of(backend):
        await backend.delete(key)


async def test_cancel_removes_the_staged_file_whoever_holds_it(backend: FilesystemBackend) -> None:
    bystander = await backend.open_writer(KEY)  # nothing staged yet: it holds no lock
    holder = await backend.open_writer(KEY)
    await holder.append((), chunks_of(b"doomed"))
    await bystander.cancel()
    assert not (backend.root / KEY).exists()
    assert not (backend.root / "uploads").exists()  # the folders it left empty went too
    await holder.close()


# -- small objects, folders ----------------------------------------------------------------------


async def test_small_object_calls_leave_no_temporary_files(backend: FilesystemBackend) -> None:
    await backend.create_unsynced([("owners/a/b", b""), ("uploads/x/state.json", b"{}")])
    await backend.replace("uploads/x/state.json", b"one")
    assert await backend.put_if_absent("blobs/sha256/ab/abc", b"blob")
    assert not await backend.put_if_absent("blobs/sha256/ab/abc", b"blob")
    assert temporary_files(backend) == []
    await backend.delete_all(["owners/", "uploads/", "blobs/sha256/ab/abc"])
    assert await keys_of(backend) == []


async def test_replace_is_atomic_for_readers(backend: FilesystemBackend) -> None:
    await backend.create_unsynced([("uploads/x/state.json", b"zero")])
    await backend.replace("uploads/x/state.json", b"one")
    reader = await backend.get("uploads/x/state.json")
    await backend.replace("uploads/x/state.json", b"two")
    # A reader opened before the replacement keeps the old object whole.
    assert b"".join([chunk async for chunk in reader]) == b"one"
    assert await read(backend, "uploads/x/state.json") == b"two"
    await backend.delete("uploads/x/state.json")


async def test_replace_never_makes_a_removed_folder_again(backend: FilesystemBackend) -> None:
    # A session removed (cancel, purge) while an append was on its way stays removed.
    with pytest.raises(ObjectNotFound):
        await backend.replace("uploads/gone/state.json", b"late")
    assert not (backend.root / "uploads" / "gone").exists()


async def test_delete_all_keeps_the_folders_keys_leave_empty(backend: FilesystemBackend) -> None:
    for key in ("uploads/x/state.json", "uploads/x/data", "owners/a/x"):
        await backend.put(key, chunks_of(b"bytes"))
    (backend.root / "uploads" / "x" / ".tmp-left").write_bytes(b"")
    await backend.delete_all(["uploads/x/state.json", "uploads/x/", "owners/a/x"])
    assert await keys_of(backend) == []
    assert not (backend.root / "uploads" / "x").exists()  # a prefix goes with its folder
    assert (backend.root / "owners" / "a").is_dir()  # kept for the owner's next session


async def test_clean_up_removes_only_idle_empty_folders(backend: FilesystemBackend) -> None:
    await backend.create_unsynced([("owners/busy/1", b""), ("owners/idle/1", b""), ("owners/fresh/1", b"")])
    await backend.delete_all(["owners/idle/1", "owners/fresh/1"])
    past = time.time() - 3600
    for name in ("busy", "idle"):
        os.utime(backend.root / "owners" / name, (past, past))
    assert await backend.clean_up(60) == 1
    assert sorted(os.listdir(backend.root / "owners")) == ["busy", "fresh"]
    await backend.delete("owners/busy/1")


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


async def _commit_dies_after_its_rename(store: BlobStore, upload_id: str, data: bytes) -> str:
    """What a commit does up to the rename, then the process dies (the session stays)."""
    blob = keys.blob_key(Digest.parse(sha256(data)))
    writer = await store.backend.open_writer(keys.upload_data_key(upload_id))
    await writer.commit((Part(keys.upload_data_key(upload_id), 0, len(data)),), blob)
    return blob


async def test_after_a_commit_that_died_past_its_rename_the_blob_is_untouched(store: BlobStore) -> None:
    """A commit renamed the staged file to the blob and the process died before removing the
    session: a late append must not grow the blob (it finds the session's bytes gone), and a
    commit claiming more bytes is refused."""
    data = b"committed bytes"
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
    blob = await _commit_dies_after_its_rename(store, upload.upload_id, data)
    with pytest.raises(RegistryError) as caught:
        await store.append_upload(upload.upload_id, REPO, expected_offset=len(data), chunks=chunks_of(b"late"))
    assert caught.value.kind is ErrorKind.BLOB_UPLOAD_INVALID
    assert (await store.upload_status(upload.upload_id, REPO)).offset == len(data)
    stream = await store.read_blob(sha256(data))
    assert b"".join([chunk async for chunk in stream]) == data
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(data + b"late"), expected_size=None)
    assert caught.value.kind is ErrorKind.DIGEST_INVALID
    assert await keys_of(store.backend) == [blob]


async def test_a_retried_commit_after_the_rename_succeeds(store: BlobStore) -> None:
    data = b"retry me"
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
    blob = await _commit_dies_after_its_rename(store, upload.upload_id, data)
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert committed.size == len(data)
    assert await keys_of(store.backend) == [blob]


# The garbage collector's DeleteBlob (`delete`: unlink, then prune the folders it emptied) may land
# while a commit of the same blob (a client pushing it again) is between putting or finding the
# blob's name and the fsync of its folder. Seen under load (tests/gc, test_gc_under_fire): the
# FileNotFoundError of the pruned folder reached the client as a 500 instead of the metadata
# plane's "upload it again" (LinkBlob finds the row `deleting` or gone). The commit succeeds, as
# if the delete had come just after it, and leaves nothing behind.


def _collected_after(real: Callable[..., object], blob_path: os.PathLike[str], root: os.PathLike[str],
                     path_of: Callable[[tuple[object, ...]], object]) -> Callable[..., object]:
    """`real`, followed (once, for the blob's own path) by the collector's delete of the blob."""
    from services.blob.backends.durable_files import delete_and_prune

    fired = threading.Event()

    def racing(*args: object) -> object:
        result = real(*args)
        if str(path_of(args)) == str(blob_path) and not fired.is_set():
            fired.set()
            delete_and_prune(blob_path, root)  # type: ignore[arg-type]
        return result

    racing.fired = fired  # type: ignore[attr-defined]
    return racing


@pytest.mark.parametrize("how", ["blob already stored", "small blob written", "staged file renamed"])
async def test_a_commit_the_collector_deletes_its_blob_under_still_succeeds(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from services.blob.backends import file_writer, filesystem

    data = f"pushed again while collected ({how})".encode()
    digest = sha256(data)
    root = store.backend.root  # type: ignore[attr-defined]
    blob_path = root / keys.blob_key(Digest.parse(digest))
    if how == "blob already stored":  # found by put_if_absent, deleted before its folder's fsync
        first = await store.start_upload(REPO)
        await store.commit_upload(first.upload_id, REPO, digest=digest, expected_size=len(data), final_data=data)
        race = _collected_after(filesystem._open_for_read, blob_path, root, lambda args: args[1])
        monkeypatch.setattr(filesystem, "_open_for_read", race)
    elif how == "small blob written":  # written by put_if_absent, deleted right after its rename
        race = _collected_after(filesystem._rename_or_discard, blob_path, root, lambda args: args[1])
        monkeypatch.setattr(filesystem, "_rename_or_discard", race)
    else:  # a chunked upload's staged file renamed to the blob, deleted right after
        race = _collected_after(os.replace, blob_path, root, lambda args: args[1])
        monkeypatch.setattr(file_writer.os, "replace", race)
    upload = await store.start_upload(REPO)
    if how == "staged file renamed":
        await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
        committed = await store.commit_upload(upload.upload_id, REPO, digest=digest, expected_size=len(data))
    else:
        committed = await store.commit_upload(upload.upload_id, REPO, digest=digest, expected_size=len(data),
                                              final_data=data)
    monkeypatch.undo()
    assert race.fired.is_set()  # type: ignore[attr-defined]
    assert (str(committed.digest), committed.size) == (digest, len(data))
    # The collector's delete came after: the blob is unknown (the metadata plane then answers
    # BLOB_UNKNOWN, upload it again), and the session went with its commit.
    with pytest.raises(RegistryError) as caught:
        await store.stat_blob(digest)
    assert caught.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await keys_of(store.backend) == []
    assert temporary_files(store.backend) == []  # type: ignore[arg-type]
    # Pushed again, it is stored.
    again = await store.start_upload(REPO)
    await store.commit_upload(again.upload_id, REPO, digest=digest, expected_size=len(data), final_data=data)
    assert (await store.stat_blob(digest)).size == len(data)


def test_a_folder_pruned_before_its_fsync_is_made_again(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make_folder` makes `a/b`, and a concurrent delete prunes both (emptied by a blob deleted
    in them) before the fsync of `a`: it walks down again instead of failing."""
    from services.blob.backends import durable_files

    real = durable_files.fsync_folder
    pruned = []

    def prune_first(folder: os.PathLike[str]) -> None:
        if str(folder) == str(tmp_path / "a") and not pruned:
            pruned.append(folder)
            os.rmdir(tmp_path / "a" / "b")
            os.rmdir(tmp_path / "a")
        real(folder)  # type: ignore[arg-type]

    monkeypatch.setattr(durable_files, "fsync_folder", prune_first)
    durable_files.make_folder(tmp_path / "a" / "b", durable=True)
    assert pruned and (tmp_path / "a" / "b").is_dir()


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
                await backend.clean_up(-60)  # every empty folder counts as idle
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
    assert owner_folder.is_dir()  # sessions come and go: the purge of sessions keeps it
    past = time.time() - 7200
    os.utime(owner_folder, (past, past))
    assert await store.purge_abandoned_writes() == 1  # BlobBackend.clean_up, after the expiry
    assert not owner_folder.exists()
    assert await keys_of(backend) == [keys.blob_key(Digest.parse(sha256(data)))]


# -- chunks fed in their source's reading thread (the pull-through cache's upstream bodies) --------


def thread_chunks(pool: concurrent.futures.ThreadPoolExecutor,
                  *items: bytes | BaseException | threading.Event | Callable[[], object]) -> ThreadChunks:
    """Chunks read in `pool`: each item is returned, raised (an exception), waited for (an
    event) or called (a function), the last two followed by the next item."""
    queue = list(items)

    def read() -> bytes:
        while queue:
            item = queue.pop(0)
            if isinstance(item, threading.Event):
                item.wait(10)
                continue
            if callable(item):
                item()
                continue
            if isinstance(item, BaseException):
                raise item
            return item
        return b""

    async def run(fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.wrap_future(pool.submit(fn, *args))

    return ThreadChunks(read, run)


@pytest.fixture
def source_pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="source")
    yield pool
    pool.shutdown(wait=True)


async def test_chunks_read_in_a_worker_thread_are_hashed_there_and_written(
    backend: FilesystemBackend, source_pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    big = pattern(WRITE_BATCH_BYTES + 10)
    hasher = hashlib.sha256()
    hashed_in: set[str] = set()

    def observe(chunk: bytes) -> None:
        hashed_in.add(threading.current_thread().name.split("_")[0])
        hasher.update(chunk)

    writer = await backend.open_writer(KEY)
    try:
        parts = await writer.append((), thread_chunks(source_pool, b"head:", big, b":tail"), observe=observe)
    finally:
        await writer.close()
    data = b"head:" + big + b":tail"
    assert parts == (Part(KEY, 0, len(data)),)
    assert await read(backend, KEY) == data and hasher.digest() == hashlib.sha256(data).digest()
    assert hashed_in == {"source"}  # no chunk went through the event loop to be hashed


async def test_a_fed_append_whose_source_breaks_off_keeps_nothing_of_it(
    store: BlobStore, source_pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    upload = await store.start_upload(REPO)
    await store.append_upload(upload.upload_id, REPO, expected_offset=0, chunks=chunks_of(b"head:"))
    big = pattern(WRITE_BATCH_BYTES, seed=3)
    with pytest.raises(ConnectionResetError):
        await store.append_upload(upload.upload_id, REPO, expected_offset=5,
                                  chunks=thread_chunks(source_pool, big, big, ConnectionResetError()))
    root = store.backend.root  # type: ignore[attr-defined]
    assert os.stat(root / keys.upload_data_key(upload.upload_id)).st_size > 5
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 5
    await store.append_upload(upload.upload_id, REPO, expected_offset=5, chunks=thread_chunks(source_pool, b"tail"))
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"head:tail"), expected_size=9)
    assert committed.size == 9


async def test_a_cancelled_fed_append_writes_nothing_once_it_returned(
    backend: FilesystemBackend, source_pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    reached, stalled, more = threading.Event(), threading.Event(), pattern(WRITE_BATCH_BYTES, seed=4)
    writer = await backend.open_writer(KEY)
    task = asyncio.create_task(writer.append((), thread_chunks(source_pool, b"first", reached.set, stalled, more)))
    assert await asyncio.to_thread(reached.wait, 10)  # "first" went to the writer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # returns while the source's read is still blocked
    await writer.close()
    stalled.set()  # the read returns: its chunk is not written
    await asyncio.wrap_future(source_pool.submit(lambda: None))
    assert os.stat(backend.root / KEY).st_size == 5


# -- a session cancelled while an append writes it --------------------------------------------------


@pytest.mark.parametrize("chunks", ["streamed", "fed"])
async def test_an_append_that_races_the_cancel_of_its_session_finds_it_unknown(
    store: BlobStore, source_pool: concurrent.futures.ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch,
    chunks: str,
) -> None:
    """The client's DELETE of its upload removes the session's folder without the writer's lock;
    the first append's fsync of that folder, just after, raised FileNotFoundError, which reached
    the client as 500 UNKNOWN. The session is gone: BLOB_UPLOAD_UNKNOWN, and it stays gone."""
    from services.blob.backends import file_writer

    upload = await store.start_upload(REPO)
    session_folder = store.backend.root / keys.upload_prefix(upload.upload_id).rstrip("/")  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    real = file_writer.fsync_folder
    cancelled = threading.Event()

    def cancel_first(folder: os.PathLike[str]) -> None:
        # In the pool, between the append's write and its folder's fsync: the real cancel, to its end.
        if str(folder) == str(session_folder) and not cancelled.is_set():
            cancelled.set()
            asyncio.run_coroutine_threadsafe(store.cancel_upload(upload.upload_id, REPO), loop).result(10)
        real(folder)  # type: ignore[arg-type]

    monkeypatch.setattr(file_writer, "fsync_folder", cancel_first)
    data = b"appended while cancelled"
    with pytest.raises(RegistryError) as caught:
        await store.append_upload(upload.upload_id, REPO, expected_offset=0,
                                  chunks=chunks_of(data) if chunks == "streamed" else thread_chunks(source_pool, data))
    monkeypatch.undo()
    assert cancelled.is_set()
    assert caught.value.kind is ErrorKind.BLOB_UPLOAD_UNKNOWN, caught.value
    assert await keys_of(store.backend) == []  # nothing of the session came back
    with pytest.raises(RegistryError) as caught:
        await store.upload_status(upload.upload_id, REPO)
    assert caught.value.kind is ErrorKind.BLOB_UPLOAD_UNKNOWN
