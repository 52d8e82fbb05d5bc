"""The filesystem backend's BlobWriter: an upload's bytes grow in ONE file, written with `pwrite`
under an exclusive `flock`, and a commit renames that file into place.

Nothing is copied at commit and no staged bytes are freed: on a filesystem without reflinks
(ext4), composing parts would cost a chunked 256 MiB push a second 256 MiB write and fsync, and
deleting the parts afterwards frees as much (a TRIM per extent with the `discard` mount option).
CNCF Distribution stores its uploads the same way.

The file's parts are always `((key, 0, size),)`: the first `size` bytes of the file. Bytes past
that size are what a failed (or unsaved) append left; the next append truncates them first.

Locking: `flock`, which Linux's NFS client maps to whole-file POSIX locks, so replicas sharing a
directory exclude each other too. The lock is held from `open_writer` (when the file exists) or
from the first append (which creates it) until `close`, `commit` or `cancel`. Readers take no
lock: they only read below a size saved after a completed append. After taking the lock a writer
checks that the name still leads to the inode it locked: a commit renames the file away (and a
cancel unlinks it) while holding the lock, and a writer must never write into what is a blob now.

Chunks read in a worker thread of their source (services/common/thread_chunks.py: the pull-through
cache's upstream bodies) are taken in that thread (`_append_fed`): hashed there while the pool
writes them, without a pass through the event loop per chunk.

Durability: every append ends with an fsync (earlier writes only start writeback, see
durable_files.start_writeback). The first append of a new file also fsyncs its folder and the one
above: a session's folder is created unsynced with its first state (keys.py). A commit cuts the
file to its parts' size, renames it over the destination and fsyncs both folders.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.blob.backends.base import (
    BackendFull,
    ObjectNotFound,
    Observer,
    Part,
    SaveParts,
    WriterBusy,
    staged_size,
    validate_key,
)
from services.blob.backends.durable_files import (
    CREATE_ATTEMPTS,
    FILE_MODE,
    delete_and_prune,
    fsync_folder,
    fsync_name_folder,
    full_disk_is_backend_full,
    make_folder,
    new_file_folders,
    not_found,
    start_writeback,
)
from services.blob.backends.free_space import FreeSpaceReserve
from services.common.private_files import DISK_FULL_ERRNOS
from services.common.thread_chunks import ThreadChunks

T = TypeVar("T")

# Incoming chunks smaller than this are gathered before a write: one thread hop per MiB, not per
# gRPC message.
WRITE_BATCH_BYTES = 1024 * 1024
# Batches at least this big are hashed in parallel with their write (see `_write_and_observe`).
PARALLEL_OBSERVE_BYTES = 256 * 1024


class FileWriter:
    """BlobWriter over one file of the filesystem backend (see the module docstring).

    One operation at a time; the descriptor (and with it the lock) is closed by `close`, `cancel`
    or at the end of `commit`, after any write in flight has finished.
    """

    def __init__(
        self,
        pool: concurrent.futures.Executor,
        root: Path,
        key: str,
        fd: int | None,
        size: int,
        reserve: FreeSpaceReserve | None = None,
    ) -> None:
        self._pool = pool
        # Claims the room of each write batch before it is written (free_space.py).
        self._reserve = reserve
        self._root = root
        self.key = key
        self._path = root / key
        # None until the file exists and is locked by this writer (see `open_file_writer`).
        self._fd = fd
        # Bytes in the file: possibly more than the caller's parts, after a failed append.
        self._size = size
        # The file's name is not durable yet, nor perhaps its folder's: the first append (or a
        # commit) fsyncs them.
        self._new_name = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def _checked_size(self, parts: Sequence[Part]) -> int:
        """The size `parts` give the file; ObjectNotFound when they name anything else, or more
        bytes than the file holds (lost: taken by a commit, or cut short)."""
        size = staged_size(parts)
        if parts and tuple(parts) != (Part(self.key, 0, size),):
            raise ObjectNotFound(parts[0].key)
        if size > (self._size if self._fd is not None else 0):
            raise ObjectNotFound(self.key)
        return size

    async def _lock_new_file(self) -> int:
        fd = await self._run(_create_locked, self.key, self._path)
        self._fd = fd
        self._size = 0
        self._new_name = True
        return fd

    @full_disk_is_backend_full
    async def append(
        self,
        parts: Sequence[Part],
        chunks: AsyncIterable[bytes],
        *,
        observe: Observer | None = None,
        save: SaveParts | None = None,
    ) -> tuple[Part, ...]:
        if isinstance(chunks, ThreadChunks):
            return await self._append_fed(parts, chunks, observe, save)
        batches = write_batches(chunks)
        data = await anext(batches, None)
        if data is None:
            return tuple(parts)
        start = self._checked_size(parts)
        if self._reserve is not None:
            # Before the file is created: a refused first append leaves nothing behind.
            await self._reserve.claim(self._pool, len(data))
        fd = self._fd if self._fd is not None else await self._lock_new_file()
        position = start
        in_flight: list[concurrent.futures.Future[None]] = []
        try:
            # The first write drops what a failed append left past `start`; the last one fsyncs.
            truncate = self._size > start
            async for following in batches:
                # The next batch is received while this one is written and hashed.
                await _all_of(in_flight)
                if self._reserve is not None:
                    await self._reserve.claim(self._pool, len(following))
                in_flight = self._write_and_observe(fd, data, position, observe, truncate, None)
                truncate = False
                position += len(data)
                data = following
            await _all_of(in_flight)
            # The file's name (and its folder's) must be durable once its first bytes are
            # acknowledged: when this writer created it, and also when it exists but nothing was
            # saved in it yet (a first append that failed created it, and synced nothing).
            folders = new_file_folders(self._path, self._root) if self._new_name or not parts else ()
            in_flight = self._write_and_observe(fd, data, position, observe, truncate, (self.key, folders))
            await _all_of(in_flight)
            position += len(data)
        except BaseException as error:
            # Never leave a write in flight behind: the descriptor may be closed next.
            for future in in_flight:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(asyncio.wrap_future(future))
            # What a failed append left is dropped by the next one (an overestimate only makes
            # it truncate when there is nothing to drop); on a full disk at once, as those bytes
            # are the room every other write (the metadata database's too) is waiting for.
            self._size = max(self._size, position + len(data))
            if isinstance(error, BackendFull) or (isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS):
                with contextlib.suppress(OSError):
                    await asyncio.shield(self._run(os.ftruncate, fd, start))
                    self._size = start
            raise
        self._new_name = False
        self._size = position
        appended = (Part(self.key, 0, position),)
        if save is not None:
            await save(appended)  # a failure leaves bytes past `start` for the next append to drop
        return appended

    async def _append_fed(
        self, parts: Sequence[Part], chunks: ThreadChunks, observe: Observer | None, save: SaveParts | None
    ) -> tuple[Part, ...]:
        """`append` of chunks read in a worker thread of their source: fed there (see
        `_FedAppend`), so that no chunk passes through the event loop."""
        start = self._checked_size(parts)
        fed = _FedAppend(self, start, self._fd is not None and self._size > start, observe)
        try:
            await chunks.feed(fed.sink)
            if fed.pending is None:
                return tuple(parts)  # no bytes: nothing changes
            await asyncio.wrap_future(fed.pending)
            # Durable names as in `append`: the file's (and its folder's) once its first bytes are.
            folders = new_file_folders(self._path, self._root) if self._new_name or not parts else ()
            await self._run(_make_durable, self._fd, self.key, folders)
        except BaseException:
            # No write may follow, nor be left in flight: the descriptor may be closed next. The
            # reading thread goes on until its read returns (the source closes its connection).
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._run(fed.stop))
            self._size = max(self._size, fed.position)
            raise
        self._new_name = False
        self._size = fed.position
        appended = (Part(self.key, 0, fed.position),)
        if save is not None:
            await save(appended)
        return appended

    def _write_and_observe(
        self,
        fd: int,
        data: bytes | bytearray,
        position: int,
        observe: Observer | None,
        truncate: bool,
        durable: tuple[str, tuple[Path, ...]] | None,
    ) -> list[concurrent.futures.Future[None]]:
        """Starts writing `data` at `position` and showing it to `observe`. A large batch is
        hashed in a thread of its own, at the same time as it is written: both release the GIL
        (libcrypto through ctypes, pwrite), so on two cores the append costs the longer of the
        two instead of their sum. A small one is observed in the writing thread (one hop)."""
        if observe is None or len(data) < PARALLEL_OBSERVE_BYTES:
            return [self._pool.submit(_write_at, fd, data, position, observe, truncate, durable)]
        return [
            self._pool.submit(observe, data),  # type: ignore[arg-type]
            self._pool.submit(_write_at, fd, data, position, None, truncate, durable),
        ]

    @full_disk_is_backend_full
    async def commit(self, parts: Sequence[Part], dest: str) -> None:
        size = self._checked_size(parts)
        dest_path = self._root / validate_key(dest)
        fd = self._fd if self._fd is not None else await self._lock_new_file()  # an empty blob
        self._fd = None
        sync = self._new_name
        await asyncio.shield(self._run(_move, fd, self.key, self._path, dest_path, size, sync))

    async def cancel(self) -> None:
        fd, self._fd = self._fd, None
        await asyncio.shield(self._run(_unlink_and_close, self._path, self._root, fd))

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            await asyncio.shield(self._run(os.close, fd))

    def __del__(self) -> None:
        # A caller that forgot `close` still releases the lock (closing the descriptor does).
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Abandoned(Exception):
    """The append a fed chunk was meant for has ended (failed or cancelled)."""


class _FedAppend:
    """An append whose chunks arrive in a worker thread of their source (`ThreadChunks.feed`):
    `sink` hashes each chunk (`observe`) in that thread while the pool writes it, and waits for
    the previous write before starting the next, so one write at a time is in flight, as in
    `append`. The file is created (and locked) with the first chunk, as there."""

    def __init__(self, writer: FileWriter, position: int, truncate: bool, observe: Observer | None) -> None:
        self._writer = writer
        self.position = position
        self._truncate = truncate
        self._observe = observe
        self.pending: concurrent.futures.Future[None] | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def sink(self, chunk: bytes) -> None:  # in the source's worker thread
        writer = self._writer
        with self._lock:
            if self._stopped:
                raise _Abandoned()
            if writer._reserve is not None:
                writer._reserve.claim_blocking(len(chunk))
            if writer._fd is None:
                writer._fd = _create_locked(writer.key, writer._path)
                writer._size = 0
                writer._new_name = True
            if self.pending is not None:
                self.pending.result()  # raises the previous write's error
            self.pending = writer._pool.submit(_write_at, writer._fd, chunk, self.position, None, self._truncate, None)
            self._truncate = False
            self.position += len(chunk)
        if self._observe is not None:
            self._observe(chunk)  # while the pool writes it; the GIL is released in both

    def stop(self) -> None:
        """No chunk is written from now on; returns once the last write started has ended."""
        with self._lock:
            self._stopped = True
            pending = self.pending
        if pending is not None:
            with contextlib.suppress(BaseException):
                pending.result()


async def _all_of(futures: list[concurrent.futures.Future[None]]) -> None:
    """Waits for every future; raises the first failure once all are done (none is left running)."""
    for future in futures:
        try:
            await asyncio.wrap_future(future)
        except BaseException:
            for other in futures:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(asyncio.wrap_future(other))
            raise


async def open_file_writer(
    pool: concurrent.futures.Executor, root: Path, key: str, reserve: FreeSpaceReserve | None = None
) -> FileWriter:
    """`open_writer` of the filesystem backend: locks the file when it exists (WriterBusy while
    another writer holds it); otherwise the writer's first append creates and locks it. Each write
    batch claims its room from `reserve` first."""
    path = root / validate_key(key)
    fd, size = await asyncio.wrap_future(pool.submit(_open_locked, key, path))
    return FileWriter(pool, root, key, fd, size, reserve)


async def write_batches(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes | bytearray]:
    """The non-empty bytes of `chunks` as writes of at least WRITE_BATCH_BYTES (but the last):
    a chunk that big on its own passes through uncopied, smaller ones are gathered."""
    batch = bytearray()
    async for chunk in chunks:
        if not chunk:
            continue
        if not batch and len(chunk) >= WRITE_BATCH_BYTES:
            yield chunk
            continue
        batch += chunk
        if len(batch) >= WRITE_BATCH_BYTES:
            yield batch
            batch = bytearray()
    if batch:
        yield batch


# -- blocking helpers (run in the pool) -------------------------------------------------------


def _lock_and_check(fd: int, key: str, path: Path) -> bool:
    """Takes the lock of `fd` (WriterBusy when another writer has it); True when `path` still
    names the locked inode, False when it was renamed away or replaced meanwhile."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WriterBusy(key) from None
    try:
        named = os.stat(path)
    except OSError as error:
        if not_found(error):
            return False
        raise
    info = os.fstat(fd)
    return (named.st_ino, named.st_dev) == (info.st_ino, info.st_dev)


def _open_locked(key: str, path: Path) -> tuple[int | None, int]:
    """(descriptor, size) of the existing file, locked; (None, 0) when there is none."""
    for _ in range(CREATE_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as error:
            if not_found(error):
                return None, 0
            raise
        try:
            if _lock_and_check(fd, key, path):
                return fd, os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # renamed away (a commit) or replaced: look again
    raise WriterBusy(key)


def _create_locked(key: str, path: Path) -> int:
    """Creates the file (and its folder, unsynced: the first append's fsyncs cover it) and locks
    it. WriterBusy when another writer created it since this one was opened."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for attempt in range(CREATE_ATTEMPTS + 1):
        try:
            fd = os.open(path, flags, FILE_MODE)
            break
        except FileExistsError:
            raise WriterBusy(key) from None
        except FileNotFoundError:
            # The folder is missing (tried first: an existing folder then costs no mkdir), or a
            # concurrent delete pruned it between mkdir and open; make it (again).
            if attempt == CREATE_ATTEMPTS:
                raise
            make_folder(path.parent)
    try:
        if not _lock_and_check(fd, key, path):
            raise WriterBusy(key)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_at(
    fd: int,
    data: bytes | bytearray,
    position: int,
    observe: Observer | None,
    truncate: bool,
    durable: tuple[str, tuple[Path, ...]] | None,
) -> None:
    """One write at `position` (the file truncated there first with `truncate`); with `durable`
    (the writer's key and folders), then fsync, and fsync the folders it names (for a file
    created just before): see `_make_durable`."""
    if truncate:
        os.ftruncate(fd, position)
    start = position
    if data:
        if observe is not None:
            observe(data)  # type: ignore[arg-type]
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            position += written
            view = view[written:]
    if durable is None:
        start_writeback(fd, start, position - start)
    else:
        _make_durable(fd, *durable)


def _make_durable(fd: int, key: str, folders: tuple[Path, ...]) -> None:
    """fsync of the file, then of `folders` (the file's own and the one above, when its name is
    new). ObjectNotFound(key) when a folder is gone: the session was cancelled meanwhile (its
    client's DELETE removes the session's folder, file and all, without the writer's lock), so
    the bytes just written went with it; the caller finds the session gone
    (BLOB_UPLOAD_UNKNOWN), where a FileNotFoundError was an internal error. Unlike a commit's
    folders (durable_files.fsync_name_folder), nothing here may pass as if done."""
    os.fsync(fd)
    for folder in folders:
        try:
            fsync_folder(folder)
        except OSError as error:
            if not_found(error):
                raise ObjectNotFound(key) from None
            raise


def _move(fd: int, key: str, source: Path, dest: Path, size: int, sync: bool) -> None:
    """Cuts the file to `size`, renames it over `dest`, fsyncs both folders; closes `fd` (the
    lock). Its bytes are durable already (the last append synced them) unless `sync` (a file
    this writer created without appending: fsynced here). ObjectNotFound when it holds fewer
    than `size` bytes."""
    try:
        actual = os.fstat(fd).st_size
        if actual < size:
            raise ObjectNotFound(key)
        if actual > size:
            os.ftruncate(fd, size)
            sync = True
        if sync:
            os.fsync(fd)
        for attempt in range(CREATE_ATTEMPTS):
            make_folder(dest.parent, durable=True)
            try:
                os.replace(source, dest)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the destination's folder; make it again (a missing
                # source raises again below and propagates).
                if attempt == CREATE_ATTEMPTS - 1 or not source.exists():
                    raise
        # The staged name's removal first: a crash between the two fsyncs can then lose this
        # (unanswered) commit, but never leave the blob's inode also named as the staged file,
        # where a resumed append would write into the blob.
        fsync_name_folder(source.parent)
        fsync_name_folder(dest.parent)
    finally:
        os.close(fd)


def _unlink_and_close(path: Path, root: Path, fd: int | None) -> None:
    """Removes the staged file (whoever holds it) and prunes the folders it leaves empty, up to
    `root`; then closes `fd`."""
    try:
        delete_and_prune(path, root)
    finally:
        if fd is not None:
            os.close(fd)
