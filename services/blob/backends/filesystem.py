"""A BlobBackend over a local (or shared, POSIX) directory.

Each key is a file under `root` (`a/b/c` -> `root/a/b/c`). Every blocking call runs in a bounded
thread pool owned by the backend (`io_threads`), never on the event loop.

- `put` writes a hidden temporary file (`.tmp-<random>`, never a valid key, so never listed) in
  the destination's folder, fsyncs it, `os.replace`s it over the key and fsyncs the folder:
  readers see the old file or the new one, and a crash leaves at worst a stray temporary file.
  Small incoming chunks are coalesced into ~1 MiB writes, and the next chunk is received while
  the previous one is being written.
- `get` reads with `pread` from a descriptor opened up front, one chunk ahead of the consumer, so
  a replace during a read does not disturb it (the old inode stays readable).
- `compose` of one source hard-links it (no copy; safe because a `put` always replaces the inode
  rather than rewriting it); of several sources it copies them kernel-side (`copy_file_range`)
  into a temporary file that is then renamed into place like `put`.
- `delete` removes the file and prunes folders left empty, up to `root`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import stat as stat_module
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.blob.backends.base import (
    READ_CHUNK_BYTES,
    ObjectInfo,
    ObjectNotFound,
    check_compose_args,
    check_range,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")

# Incoming chunks smaller than this are gathered before a write: one thread hop per MiB, not per
# gRPC message.
WRITE_BATCH_BYTES = 1024 * 1024
_TEMP_PREFIX = ".tmp-"
# Attempts at creating a temporary file when a concurrent `delete` prunes its folder meanwhile.
_CREATE_ATTEMPTS = 5
_COPY_BYTES = 64 * 1024 * 1024

_NOT_FOUND_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


class FilesystemBackend:
    """BlobBackend storing each object as a file under `root`."""

    min_part_size = 0

    def __init__(self, root: Path | str, *, io_threads: int = 16) -> None:
        if io_threads < 1:
            raise ValueError("io_threads must be at least 1")
        self.root = Path(root).absolute()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="blob-fs")
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._pool.submit(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _path(self, key: str) -> Path:
        # Validated keys have no empty, `.` or `..` segment, so the path stays under root.
        return self.root / validate_key(key)

    # -- writes -------------------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        fd, temp = await self._run(_create_temp, path.parent)
        open_fd: int | None = fd
        pending: concurrent.futures.Future[None] | None = None
        try:
            size = 0
            batch = bytearray()
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if not batch and len(chunk) >= WRITE_BATCH_BYTES:
                    data: bytes | bytearray = chunk
                else:
                    batch += chunk
                    if len(batch) < WRITE_BATCH_BYTES:
                        continue
                    data, batch = batch, bytearray()
                if pending is not None:
                    await asyncio.wrap_future(pending)
                pending = self._submit(_write_all, fd, data)
            if batch:
                if pending is not None:
                    await asyncio.wrap_future(pending)
                pending = self._submit(_write_all, fd, batch)
            if pending is not None:
                await asyncio.wrap_future(pending)
            pending = None
            # `_commit_temp` closes the descriptor whatever happens; never close it twice (the
            # number may already belong to another file).
            open_fd: int | None = None
            await self._run(_commit_temp, fd, temp, path)
            return size
        except BaseException:
            # The write in flight (if any) finishes before the descriptor is closed and the
            # temporary file removed, so a reused descriptor number is never written to.
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(self._submit(_discard_temp, open_fd, temp, pending)))
            raise

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        keys = check_compose_args(dest, sources)
        return await self._run(_compose, self._path(dest), [(key, self._path(key)) for key in keys])

    async def delete(self, key: str) -> None:
        await self._run(_delete, self._path(key), self.root)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        fd, size = await self._run(_open_for_read, key, path)
        try:
            count = check_range(key, offset, length, size)
        except BaseException:
            os.close(fd)
            raise
        return _FileReader(self._pool, fd, offset, count)

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

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let calls in flight finish without blocking the event loop.
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._pool.shutdown(wait=True))


class _FileReader:
    """Streams `count` bytes from `fd` at `offset`, reading one chunk ahead in the pool.

    The descriptor is closed at the end, on `aclose()`, or when the reader is garbage collected
    (also when it was never iterated), always after the read in flight has finished.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, fd: int, offset: int, count: int) -> None:
        self._pool = pool
        self._fd: int | None = fd
        self._next_offset = offset
        self._remaining = count
        self._ahead: concurrent.futures.Future[bytes] | None = None

    def __aiter__(self) -> _FileReader:
        return self

    def _read_ahead(self) -> None:
        assert self._fd is not None
        amount = min(READ_CHUNK_BYTES, self._remaining)
        self._ahead = self._pool.submit(_pread_exact, self._fd, amount, self._next_offset)
        self._next_offset += amount
        self._remaining -= amount

    async def __anext__(self) -> bytes:
        if self._ahead is None:
            if self._remaining <= 0 or self._fd is None:
                self._close()
                raise StopAsyncIteration
            self._read_ahead()
        assert self._ahead is not None
        try:
            data = await asyncio.wrap_future(self._ahead)
        except BaseException:
            self._close()
            raise
        self._ahead = None
        if self._remaining > 0:
            self._read_ahead()
        return data

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.done():
            os.close(fd)
            return
        try:
            self._pool.submit(_close_after, fd, ahead)
        except RuntimeError:  # pool shut down: the read in flight is ours to wait for
            _close_after(fd, ahead)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


# -- blocking helpers (run in the pool) -------------------------------------------------------


def _create_temp(folder: Path) -> tuple[int, Path]:
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            # mkdir saw EEXIST, then a concurrent prune removed the folder before its is_dir check.
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            continue
        temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), temp
        except FileNotFoundError:
            # A concurrent delete pruned the folder between mkdir and open; make it again.
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit_temp(fd: int, temp: Path, path: Path) -> None:
    """fsync + close the temporary file, rename it over `path`, fsync the folder."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def _discard_temp(fd: int | None, temp: Path, pending: concurrent.futures.Future[None] | None) -> None:
    if pending is not None:
        with contextlib.suppress(BaseException):
            pending.result()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _not_found(error: OSError) -> bool:
    return error.errno in _NOT_FOUND_ERRNOS


def _open_for_read(key: str, path: Path) -> tuple[int, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        if _not_found(error):
            raise ObjectNotFound(key) from None
        raise
    info = os.fstat(fd)
    if not stat_module.S_ISREG(info.st_mode):
        os.close(fd)
        raise ObjectNotFound(key)
    return fd, info.st_size


def _pread_exact(fd: int, amount: int, offset: int) -> bytes:
    data = os.pread(fd, amount, offset)
    if len(data) == amount:
        return data
    parts = [data]
    got = len(data)
    while got < amount:
        more = os.pread(fd, amount - got, offset + got)
        if not more:
            # Objects are immutable once written (put replaces the inode), so this is corruption.
            raise OSError(errno.EIO, f"object shrank while being read at offset {offset + got}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _close_after(fd: int, pending: concurrent.futures.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        pending.result()
    os.close(fd)


def _stat(key: str, path: Path) -> ObjectInfo:
    try:
        info = os.stat(path)
    except OSError as error:
        if _not_found(error):
            raise ObjectNotFound(key) from None
        raise
    if not stat_module.S_ISREG(info.st_mode):
        raise ObjectNotFound(key)
    return ObjectInfo(key, info.st_size, info.st_mtime)


def _delete(path: Path, root: Path) -> None:
    try:
        os.unlink(path)
    except OSError as error:
        if not _not_found(error):
            raise
        return
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (or already gone): stop pruning
        folder = folder.parent


def _scan(folder: Path, name_start: str) -> list[tuple[str, bool, int, float]]:
    """Entries of `folder` whose name starts with `name_start`, in the order their keys sort."""
    found: list[tuple[str, bool, int, float]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        if _not_found(error):
            return []
        raise
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.startswith(name_start):
            continue  # temporary files and anything that is not a key
        try:
            if entry.is_dir(follow_symlinks=False):
                found.append((name, True, 0, 0.0))
            elif entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                found.append((name, False, info.st_size, info.st_mtime))
        except FileNotFoundError:
            continue  # deleted while listing
    # A folder's keys continue with "/", so "a/x" sorts after "a-b" although "a" < "a-b".
    found.sort(key=lambda item: f"{item[0]}/" if item[1] else item[0])
    return found


def _compose(dest: Path, sources: list[tuple[str, Path]]) -> int:
    fds: list[int] = []
    try:
        for key, path in sources:
            fd, _ = _open_for_read(key, path)
            fds.append(fd)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if len(sources) == 1 and _link_into_place(sources[0][1], fds[0], dest):
            return os.fstat(fds[0]).st_size
        out, temp = _create_temp(dest.parent)
        try:
            total = 0
            for fd in fds:
                total += _copy_all(fd, out)
        except BaseException:
            _discard_temp(out, temp, None)
            raise
        _commit_temp(out, temp, dest)
        return total
    finally:
        for fd in fds:
            os.close(fd)


def _link_into_place(source: Path, source_fd: int, dest: Path) -> bool:
    """Hard-links `source` to `dest` (atomically replacing it). False when links are impossible."""
    temp = dest.parent / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        os.link(source, temp)
    except OSError as error:
        # ENOENT: the source was deleted after we opened it; copying from the descriptor works.
        if error.errno in (errno.ENOENT, errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    # The link must name the inode we opened (the source may have been replaced meanwhile).
    if os.stat(temp).st_ino != os.fstat(source_fd).st_ino:
        os.unlink(temp)
        return False
    try:
        os.replace(temp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(dest.parent)
    return True


def _copy_all(source_fd: int, out_fd: int) -> int:
    size = os.fstat(source_fd).st_size
    offset = 0
    while offset < size:
        try:
            copied = os.copy_file_range(source_fd, out_fd, min(_COPY_BYTES, size - offset), offset)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            copied = _copy_plain(source_fd, out_fd, offset, size)
        if copied == 0:
            raise OSError(errno.EIO, "source shrank while being composed")
        offset += copied
    return size


def _copy_plain(source_fd: int, out_fd: int, offset: int, size: int) -> int:
    copied = 0
    while offset + copied < size:
        data = os.pread(source_fd, min(READ_CHUNK_BYTES, size - offset - copied), offset + copied)
        if not data:
            break
        _write_all(out_fd, data)
        copied += len(data)
    return copied

