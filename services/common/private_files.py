"""What Lading stores on a local disk is readable by its owner only, and its folders survive a
power cut.

The SQLite database holds bcrypt hashes and every repository name; blobs may be private layers.
So folders are created 0700 and files 0600 whatever umask the process was started with: the
processes that write them (the metadata plane on SQLite, the blob plane on the filesystem, and
`lading serve`) call `restrict_new_files()` first, which sets the umask to 077, so even files
that other code creates (SQLite's -wal and -shm, unix sockets) get no group or other bits; the
code that creates files passes 0600/0700 explicitly too.

A folder created here is made durable (an fsync of the folder it was created in): a file synced
into it later must not vanish with its folder after a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

PRIVATE_UMASK = 0o077
FOLDER_MODE = 0o700
FILE_MODE = 0o600
# A write refused for lack of space: the disk is full (ENOSPC), or the user's disk quota (EDQUOT).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def restrict_new_files() -> None:
    """From now on this process (and its children) creates nothing group- or world-accessible."""
    os.umask(PRIVATE_UMASK)


def make_private_folder(folder: Path, *, tighten: bool) -> None:
    """Creates `folder` and any missing parent (0700 each, each made durable). With `tighten`,
    a `folder` that exists already is set to 0700 too: only for a folder that is Lading's own
    (the data folder, the blob root), never one it was merely pointed into."""
    missing = []
    probe = folder.absolute()
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, FOLDER_MODE)
        # The umask may have taken bits away, and mkdir may have found it made meanwhile.
        os.chmod(path, FOLDER_MODE)
        fsync_folder(path.parent)
    if tighten and not missing:
        os.chmod(folder, FOLDER_MODE)


def make_private_file(path: Path, *, companions: tuple[str, ...] = ()) -> None:
    """Creates `path` empty (0600) unless it exists, and sets it and its existing companions
    (`path` + suffix, e.g. SQLite's "-wal" and "-shm") to 0600: files an older version created
    with wider modes are tightened at the next start."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        fsync_folder(path.parent)
    except FileExistsError:
        pass
    for file in (path, *(path.with_name(path.name + suffix) for suffix in companions)):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, FILE_MODE)


def write_private_file(path: Path, data: bytes, *, replace: bool) -> None:
    """Writes `data` to `path` (0600) so that a reader never sees half of it and a power cut
    leaves either the old file or the whole new one: written to a staging file beside it, which
    is fsynced, then moved into place (renamed over an existing file with `replace`, else linked,
    which refuses an existing `path` with FileExistsError), and the folder fsynced after."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.staging")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        staging.unlink(missing_ok=True)  # a full disk must not keep half a staging file
        raise
    finally:
        os.close(fd)
    try:
        if replace:
            staging.replace(path)
        else:
            os.link(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Makes the entries of `folder` durable (names created, renamed or removed in it)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
