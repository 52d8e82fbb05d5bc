"""How the filesystem backend makes names and bytes durable (surviving a power cut), in blocking
calls for its thread pool: fsync of a folder, `mkdir -p` whose new folders are made durable, and
early writeback of a file's dirty pages (`sync_file_range`, which Python's os module lacks).

The rule every writer keeps: a file's bytes are fsynced before it is renamed or linked into place,
and the folder that gained (or lost) the name is fsynced after; a folder made for it is made
durable too (an fsync of the folder it was created in), else a synced file could vanish with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from services.blob.backends.base import BackendFull
from services.common.private_files import DISK_FULL_ERRNOS, fsync_folder

P = ParamSpec("P")
T = TypeVar("T")

# Blobs may be private layers and the upload state names repositories: owner only (the process's
# umask can only take bits away; the planes set it to 077, services/common/private_files.py).
FILE_MODE = 0o600
FOLDER_MODE = 0o700
# Attempts at an operation that a concurrent `delete` can undo midway (it prunes empty folders).
CREATE_ATTEMPTS = 5

_NOT_FOUND_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def not_found(error: OSError) -> bool:
    """True for the errors that mean "there is no such file" (including a file where a folder
    was expected, and the reverse)."""
    return error.errno in _NOT_FOUND_ERRNOS


def full_disk_is_backend_full(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`method` (a writing call of the filesystem backend or its writer) raising BackendFull where
    the disk refused the write for lack of space; every other OSError goes up unchanged."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OSError as error:
            if error.errno not in DISK_FULL_ERRNOS:
                raise
            raise BackendFull(f"the blob storage's disk is full: {error.strerror}") from error

    return call


def delete_and_prune(path: Path, root: Path) -> None:
    """Removes the file at `path` (gone already is fine) and then the folders it leaves empty, up
    to `root` (never `root` itself)."""
    try:
        os.unlink(path)
    except OSError as error:
        if not not_found(error):
            raise
        return
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (or already gone): stop pruning
        folder = folder.parent


def fsync_name_folder(folder: Path) -> None:
    """fsync of the folder of a name just put (or found) in it, to make that name durable. The
    folder gone means a concurrent `delete` removed the name and pruned the folder (it removes
    only folders it emptied): nothing is left to make durable, as if the delete had come just
    after. (The garbage collector's DeleteBlob racing a commit of the same blob: a FileNotFoundError
    here was an internal error for the client instead of the collector's "upload it again".)"""
    try:
        fsync_folder(folder)
    except FileNotFoundError:
        return


def make_folder(folder: Path, *, durable: bool = False) -> None:
    """`mkdir -p` (mode 0700) that tolerates a concurrent `delete` pruning the folders it makes.
    Each folder found missing is made durable once it exists (an fsync of the folder it is in),
    whoever created it, so a file synced into it later cannot vanish with it; all but `folder`
    itself without `durable` (a session's folder, made durable by its first append: see
    file_writer.py). Folders above `folder` (`uploads/`, the root) are made once in a store's
    life, so this costs nothing later."""
    for attempt in range(CREATE_ATTEMPTS):
        missing = []
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        try:
            for path in reversed(missing):
                with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent call
                    os.mkdir(path, FOLDER_MODE)
            for path in reversed(missing if durable else missing[1:]):
                fsync_folder(path.parent)
        except FileNotFoundError:
            # A parent made a moment ago was pruned before its child's mkdir, or before its
            # fsync. Walk down again.
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            continue
        return


def new_file_folders(path: Path, root: Path) -> tuple[Path, ...]:
    """The folders to fsync so that a new file at `path` keeps its name after a power cut: its
    own, and the one above it unless its own is `root` (whose name is made durable when it is
    created, like every folder `make_folder` creates but the deepest)."""
    folder = path.parent
    return (folder,) if folder == root else (folder, folder.parent)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's `sync_file_range` (Linux), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, count: int) -> None:
    """Starts writing `count` bytes at `offset` back to the disk without waiting for it: the
    fsync that ends an append then waits for the last write only, not for the whole chunk
    (measured: ~4 ms instead of ~65 ms of fsync per 128 MiB). Best effort; ctypes calls
    release the GIL."""
    if _SYNC_FILE_RANGE is not None and count > 0:
        _SYNC_FILE_RANGE(fd, offset, count, _SYNC_FILE_RANGE_WRITE)
