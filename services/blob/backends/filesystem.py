"""A BlobBackend over a local (or shared, POSIX) directory.

Each key is a file under `root` (`a/b/c` -> `root/a/b/c`). Every blocking call runs in a bounded
thread pool owned by the backend (`io_threads`), never on the event loop, and each call of the
contract is one trip to it. The one exception never blocks: a read of bytes that are all in the
page cache (file_reader.py).

- Durable means on the disk, surviving a power cut, before the call returns. Every path that
  renames or links a file into place makes its bytes durable first (fsync of the file) and the
  new name durable after (fsync of the folder); a folder it had to create is made durable too
  (durable_files.py).
- `put` writes a hidden temporary file (`.tmp-<random>`, never a valid key, so never listed) in
  the destination's folder, fsyncs it, `os.replace`s it over the key and fsyncs the folder:
  readers see the old file or the new one, and a crash leaves at worst a stray temporary file.
  Small incoming chunks are coalesced into ~1 MiB writes, and the next chunk is received while
  the previous one is being written; an object that fits in one write takes one pool trip.
  `put_if_absent` and `replace` are the same in one trip with their check.
- `create_unsynced` writes small keys in place, without the temporary file, rename and fsyncs
  (each costs a journal commit or an inode allocation): for upload bookkeeping a crash may lose
  (keys.py). `delete_all` is not synced either, and leaves the folders its keys empty in place for
  the next object (an mkdir and an rmdir per session are journal work too): `clean_up` takes
  them away once idle. A prefix's folder goes with it.
- Files are created 0600 and folders 0700.
- With `min_free_bytes`, new bytes (`put`, `put_if_absent`, `create_unsynced`, a writer's
  appends) are refused with BackendFull, before they are written, while they would leave less
  than that free on the disk (free_space.py); `replace` (a session's state after its append),
  commits, reads and deletes never are.
- A write the disk has no room for (ENOSPC, EDQUOT) raises BackendFull and keeps nothing of
  itself: temporary files are removed, `create_unsynced` removes what it created, a writer's
  saved parts stay as they were.
- `get` reads from a descriptor opened up front, so a replace during a read does not disturb it
  (the old inode stays readable); see file_reader.py.
- `delete` removes the file and prunes folders left empty, up to `root`. A write or commit of the
  same key that it overtakes between the name's creation (or discovery) and the fsync of its
  folder does not fail on the pruned folder: the delete simply came after it (the garbage
  collector deleting a blob that a client pushes again; the metadata plane then answers
  BLOB_UNKNOWN, upload it again).
- `open_writer`: an upload's bytes grow in one locked file renamed into place at commit
  (file_writer.py).
- `list_blobs` walks `blobs/` from `start_after` (earlier folders are skipped unread) and reports
  the later of a file's mtime and ctime: a commit renames a file that may have been written long
  before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import stat as stat_module
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.blob.backends.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    check_range,
    validate_key,
    validate_prefix,
)
from services.blob.backends.durable_files import (
    CREATE_ATTEMPTS,
    FILE_MODE,
    delete_and_prune,
    fsync_name_folder,
    full_disk_is_backend_full,
    make_folder,
    not_found,
)
from services.blob.backends.file_reader import RWF_NOWAIT, CachedReads, FileReader, close_in_pool
from services.blob.backends.file_writer import FileWriter, open_file_writer, write_batches
from services.blob.backends.free_space import FreeSpaceReserve
from services.blob.backends.keys import BLOBS_PREFIX

T = TypeVar("T")

_TEMP_PREFIX = ".tmp-"


class FilesystemBackend:
    """BlobBackend storing each object as a file under `root`."""

    min_part_size = 0

    def __init__(self, root: Path | str, *, io_threads: int = 16, min_free_bytes: int = 0) -> None:
        if io_threads < 1:
            raise ValueError("io_threads must be at least 1")
        self.root = Path(root).absolute()
        # New bytes are refused while they would leave less than this free (free_space.py).
        self._reserve = FreeSpaceReserve(self.root, min_free_bytes)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="blob-fs")
        self._closed = False
        # Cleared when the filesystem refuses RWF_NOWAIT reads (EOPNOTSUPP): every read then
        # goes through the pool.
        self._cached_reads = CachedReads(RWF_NOWAIT is not None)

    # -- plumbing ---------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._pool.submit(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _path(self, key: str) -> Path:
        # The wrapper (instrumented.py) checks keys already; checked again here because a path
        # must never leave the root, even when the backend is used bare. Valid keys have no
        # empty, `.` or `..` segment.
        return self.root / validate_key(key)

    def local_path(self, key: str) -> Path:
        """Where `key` is stored (for direct reads, services/blob/direct_reads.py). Raises
        InvalidKey for an invalid key."""
        return self._path(key)

    # -- writes -------------------------------------------------------------------------------

    @full_disk_is_backend_full
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        batches = write_batches(chunks)
        data = await anext(batches, b"")
        following = await anext(batches, None) if data else None
        # Room is claimed one batch ahead of its write (free_space.py).
        await self._reserve.claim(self._pool, len(data) + len(following or b""))
        if following is None:
            # Everything fits in one write (session states, markers, small blobs): create, write,
            # fsync and rename in ONE trip to the pool instead of three.
            return await self._run(_put_whole, path, data)
        fd, temp = await self._run(_create_temp_and_write, path.parent, data)
        open_fd: int | None = fd
        pending: concurrent.futures.Future[None] | None = None
        try:
            size = len(data)
            data = following
            # The next batch is received while the previous one is being written.
            async for batch in batches:
                if pending is not None:
                    await asyncio.wrap_future(pending)
                await self._reserve.claim(self._pool, len(batch))
                pending = self._submit(_write_all, fd, data)
                size += len(data)
                data = batch
            if pending is not None:
                await asyncio.wrap_future(pending)
            pending = None
            # `_commit_temp` closes the descriptor whatever happens; never close it twice (the
            # number may already belong to another file).
            open_fd = None
            await self._run(_commit_temp, fd, temp, path, data)
            return size + len(data)
        except BaseException:
            # The write in flight (if any) finishes before the descriptor is closed and the
            # temporary file removed, so a reused descriptor number is never written to.
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(self._submit(_discard_temp, open_fd, temp, pending)))
            raise

    @full_disk_is_backend_full
    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """See BlobBackend.put_if_absent: the check (an fsync of what is there) or the write, in
        one pool trip."""
        await self._reserve.claim(self._pool, len(data))
        return await self._run(_put_whole_if_absent, key, self._path(key), data)

    @full_disk_is_backend_full
    async def replace(self, key: str, data: bytes) -> None:
        """See BlobBackend.replace: check, temporary file, fsync, rename, fsync of the folder, in
        one pool trip."""
        await self._run(_replace_existing, key, self._path(key), data)

    @full_disk_is_backend_full
    async def create_unsynced(
        self, objects: Sequence[tuple[str, bytes]], *, count_prefix: str = "", limit: int = 0
    ) -> int:
        """See BlobBackend.create_unsynced: the count and the creations in one pool trip."""
        counted = self._prefix_scan(count_prefix) if count_prefix else None
        planned = [(self._path(key), data) for key, data in objects]
        # A session about to receive bytes is refused at its start (its small files need no
        # reserve of their own: `len` only makes them count).
        await self._reserve.claim(self._pool, sum(len(data) for _, data in planned))
        return await self._run(_create_unsynced_bounded, counted, limit, planned)

    async def delete(self, key: str) -> None:
        await self._run(delete_and_prune, self._path(key), self.root)

    async def delete_all(self, targets: Sequence[str]) -> None:
        """See BlobBackend.delete_all: one pool trip; folders emptied by a key's removal stay."""
        planned = [
            (self._folder_of(target), True) if target.endswith("/") else (self._path(target), False)
            for target in targets
        ]
        await self._run(_delete_targets, planned)

    def _folder_of(self, prefix: str) -> Path:
        """The folder of a non-empty prefix ending in `/`."""
        if not prefix.endswith("/"):
            raise InvalidKey(prefix, "not a folder prefix (ending in /)")
        return self.root / validate_prefix(prefix).rstrip("/")

    def _prefix_scan(self, prefix: str) -> tuple[Path, str]:
        """The folder to scan for `prefix`, and the start of the names that match in it."""
        folder, _, name_start = validate_prefix(prefix).rpartition("/")
        return (self.root / folder if folder else self.root), name_start

    async def open_writer(self, key: str) -> FileWriter:
        """See BlobBackend.open_writer and file_writer.py."""
        return await open_file_writer(self._pool, self.root, key, self._reserve)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        fd, size = await self._run(_open_for_read, key, path)
        try:
            count = check_range(key, offset, length, size)
        except BaseException:
            close_in_pool(self._pool, fd)
            raise
        return FileReader(self._pool, fd, offset, count, self._cached_reads)

    async def read_whole(self, key: str) -> bytes:
        return await self._run(_read_whole, key, self._path(key))

    async def stat(self, key: str) -> ObjectInfo:
        return await self._run(_stat, key, self._path(key))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        folder, _, name_start = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        async for info in self._walk(base, f"{folder}/" if folder else "", name_start):
            yield info

    async def _walk(self, folder: Path, key_prefix: str, name_start: str) -> AsyncIterator[ObjectInfo]:
        for name, is_dir, size, modified in await self._run(_scan, folder, name_start):
            if is_dir:
                async for info in self._walk(folder / name, f"{key_prefix}{name}/", ""):
                    yield info
            else:
                yield ObjectInfo(f"{key_prefix}{name}", size, modified)

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        if start_after:
            validate_key(start_after)
        async for info in self._walk_after(self.root / BLOBS_PREFIX.rstrip("/"), BLOBS_PREFIX, start_after):
            yield info

    async def _walk_after(self, folder: Path, key_prefix: str, start_after: str) -> AsyncIterator[ObjectInfo]:
        """`_walk` for `list_blobs`: skips (without a stat) what sorts at or before `start_after`."""
        for name, is_dir, size, modified in await self._run(_scan_after, folder, key_prefix, start_after):
            if is_dir:
                async for info in self._walk_after(folder / name, f"{key_prefix}{name}/", start_after):
                    yield info
            else:
                yield ObjectInfo(f"{key_prefix}{name}", size, modified)

    # -- lifecycle ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        return None

    async def clean_up(self, older_than: float) -> int:
        """See BlobBackend.clean_up: empty folders `delete_all` kept, idle for `older_than` s."""
        return await self._run(_prune_empty_folders, self.root, time.time() - older_than)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let calls in flight finish without blocking the event loop.
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._pool.shutdown(wait=True))


# -- blocking helpers (run in the pool) -------------------------------------------------------


def _create_temp(folder: Path) -> tuple[int, Path]:
    """A new temporary file in `folder`, for an object that will be renamed into place durably:
    a folder made for it is made durable too."""
    for attempt in range(CREATE_ATTEMPTS + 1):
        temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE), temp
        except FileNotFoundError:
            # The folder is missing (tried first: an existing folder then costs no mkdir), or a
            # concurrent delete pruned it between mkdir and open; make it (again).
            if attempt == CREATE_ATTEMPTS:
                raise
            make_folder(folder, durable=True)
    raise AssertionError("unreachable")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _create_temp_and_write(folder: Path, data: bytes | bytearray) -> tuple[int, Path]:
    fd, temp = _create_temp(folder)
    try:
        _write_all(fd, data)
    except BaseException:
        _discard_temp(fd, temp, None)
        raise
    return fd, temp


def _put_whole(path: Path, data: bytes | bytearray) -> int:
    """`put` of an object whose bytes are all in hand: temp file, write, fsync, rename, fsync."""
    fd, temp = _create_temp_and_write(path.parent, data)
    _commit_temp(fd, temp, path)
    return len(data)


def _put_whole_if_absent(key: str, path: Path, data: bytes) -> bool:
    try:
        # Another commit may have renamed it into place a moment ago and still be on its way
        # to its fsyncs: this commit's answer must not come before they are done.
        _sync_existing(key, path)
        return False
    except ObjectNotFound:
        _put_whole(path, data)
        return True


def _create_in_place(path: Path, data: bytes) -> None:
    for attempt in range(CREATE_ATTEMPTS + 1):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            break
        except FileNotFoundError:
            # The folder is missing (tried first: a kept folder then costs no mkdir), or a
            # concurrent delete pruned it between mkdir and open; make it (again).
            if attempt == CREATE_ATTEMPTS:
                raise
            make_folder(path.parent)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _create_unsynced_bounded(
    counted: tuple[Path, str] | None, limit: int, planned: list[tuple[Path, bytes]]
) -> int:
    held = 0 if counted is None else _count_files(*counted)
    if limit > 0 and held >= limit:
        return held
    created: list[Path] = []
    try:
        for path, data in planned:
            created.append(path)
            _create_in_place(path, data)
    except BaseException:
        # All or nothing: a full disk must not leave an empty state behind (a session whose
        # client never learnt its id), nor a marker counting against its owner.
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return held


def _count_files(folder: Path, name_start: str = "") -> int:
    """How many keys are under `folder` whose first segment starts with `name_start`: files
    only, temporary files skipped, nothing stat'ed."""
    count = 0
    entries = _folder_entries(folder)
    if entries is None:
        return 0
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.startswith(name_start):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                count += _count_files(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                count += 1
        except FileNotFoundError:
            continue
    return count


def _replace_existing(key: str, path: Path, data: bytes) -> None:
    """`put` of a small object over an existing one: ObjectNotFound when there is none (unlike
    `put`, which would make its folder again and bring back a removed session)."""
    _stat(key, path)
    temp = path.parent / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileNotFoundError:
        raise ObjectNotFound(key) from None  # its folder went meanwhile
    try:
        _write_all(fd, data)
    except BaseException:
        _discard_temp(fd, temp, None)
        raise
    _commit_temp(fd, temp, path)


def _rename_or_discard(temp: Path, path: Path) -> None:
    """Renames `temp` over `path`; on failure removes `temp` and raises."""
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _delete_targets(planned: list[tuple[Path, bool]]) -> None:
    for path, is_folder in planned:
        if is_folder:
            _remove_tree(path)
            continue
        try:
            os.unlink(path)
        except OSError as error:
            if not not_found(error):
                raise


def _remove_tree(folder: Path) -> None:
    """Removes `folder` and everything in it; what a concurrent writer adds meanwhile stays."""
    try:
        # Mostly empty by now (a session's state goes first, and a blob sent whole with its
        # commit stages nothing): one rmdir, without listing the folder.
        folder.rmdir()
        return
    except OSError as error:
        if not_found(error):
            return
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    entries = _folder_entries(folder)
    if entries is None:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(Path(entry.path))
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
    try:
        folder.rmdir()
    except OSError as error:
        if not (not_found(error) or error.errno in (errno.ENOTEMPTY, errno.EEXIST)):
            raise


def _prune_empty_folders(root: Path, older_than: float) -> int:
    """Removes the empty folders one level below each folder of `root` (`owners/<hash>/`, the
    ones `delete_all` keeps) that nothing was created in or deleted from since `older_than`
    (unix seconds); returns how many. A creation racing with the removal makes its folder again."""
    pruned = 0
    for top in _folder_entries(root) or []:
        if not top.is_dir(follow_symlinks=False):
            continue
        for entry in _folder_entries(Path(top.path)) or []:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
                os.rmdir(entry.path)
                pruned += 1
            except OSError as error:
                if not (not_found(error) or error.errno in (errno.ENOTEMPTY, errno.EEXIST)):
                    raise
    return pruned


def _sync_existing(key: str, path: Path) -> None:
    """Makes the object at `path` durable (its bytes and its name), as its writer does before it
    returns; on an object long on the disk both fsyncs find nothing to write. Raises
    ObjectNotFound when there is none."""
    fd, _ = _open_for_read(key, path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_name_folder(path.parent)


def _commit_temp(fd: int, temp: Path, path: Path, last: bytes | bytearray = b"") -> None:
    """Writes `last`, fsyncs and closes the temporary file (removed on failure), renames it over
    `path`, fsyncs the folder."""
    try:
        if last:
            _write_all(fd, last)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)
    _rename_or_discard(temp, path)
    fsync_name_folder(path.parent)


def _discard_temp(fd: int | None, temp: Path, pending: concurrent.futures.Future[None] | None) -> None:
    if pending is not None:
        with contextlib.suppress(BaseException):
            pending.result()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _open_for_read(key: str, path: Path) -> tuple[int, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        if not_found(error):
            raise ObjectNotFound(key) from None
        raise
    info = os.fstat(fd)
    if not stat_module.S_ISREG(info.st_mode):
        os.close(fd)
        raise ObjectNotFound(key)
    return fd, info.st_size


def _read_whole(key: str, path: Path) -> bytes:
    fd, _ = _open_for_read(key, path)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as file:
            return file.read()  # to the end, even if the file grew since the fstat
    finally:
        os.close(fd)


def _stat(key: str, path: Path) -> ObjectInfo:
    try:
        info = os.stat(path)
    except OSError as error:
        if not_found(error):
            raise ObjectNotFound(key) from None
        raise
    if not stat_module.S_ISREG(info.st_mode):
        raise ObjectNotFound(key)
    return ObjectInfo(key, info.st_size, info.st_mtime)


Entry = tuple[str, bool, int, float]  # name, is a folder, size, time (folders: 0, 0.0)


def _folder_entries(folder: Path) -> list[os.DirEntry[str]] | None:
    """The entries of `folder`, or None when it does not exist (a concurrent delete may prune it)."""
    try:
        return list(os.scandir(folder))
    except OSError as error:
        if not_found(error):
            return None
        raise


def _entries(folder: Path, keep: Callable[[str, bool], bool], file_time: Callable[[os.stat_result], float]
             ) -> list[Entry]:
    """The entries of `folder` that `keep(name, is_folder)` accepts, temporary files (".name")
    skipped, in the order their keys sort; a missing folder has none."""
    found: list[Entry] = []
    entries = _folder_entries(folder)
    if entries is None:
        return []
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue  # temporary files
        try:
            if entry.is_dir(follow_symlinks=False):
                if keep(name, True):
                    found.append((name, True, 0, 0.0))
            elif entry.is_file(follow_symlinks=False) and keep(name, False):
                info = entry.stat(follow_symlinks=False)
                found.append((name, False, info.st_size, file_time(info)))
        except FileNotFoundError:
            continue  # deleted while listing
    # A folder's keys continue with "/", so "a/x" sorts after "a-b" although "a" < "a-b".
    found.sort(key=lambda item: f"{item[0]}/" if item[1] else item[0])
    return found


def _scan(folder: Path, name_start: str) -> list[Entry]:
    """Entries of `folder` whose name starts with `name_start` (anything else is not a key)."""
    return _entries(folder, lambda name, _is_dir: name.startswith(name_start), lambda info: info.st_mtime)


def _scan_after(folder: Path, key_prefix: str, start_after: str) -> list[Entry]:
    """Like `_scan`, for the keys `key_prefix + name` that sort after `start_after` (folders that
    may hold such keys). A file's time is the later of mtime and ctime: a commit that renames a
    file last written long before changes its ctime, not its mtime (see BlobBackend.list_blobs)."""

    def keep(name: str, is_dir: bool) -> bool:
        key = f"{key_prefix}{name}"
        if not is_dir:
            return key > start_after
        below = f"{key}/"
        # Every key below sorts before `start_after` unless `start_after` is inside it.
        return not (below < start_after and not start_after.startswith(below))

    return _entries(folder, keep, lambda info: max(info.st_mtime, info.st_ctime))
