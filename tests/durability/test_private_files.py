"""What Lading stores is readable by its owner only, whatever the umask (issue 11 item 12):
folders 0700, files 0600, on the embedded default (SQLite + filesystem under the data folder)
and on the filesystem blob backend alone."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.blob.backends.filesystem import FilesystemBackend
from services.blob.uploads import UploadSessions
from services.common.private_files import write_private_file
from services.common.settings import MetadataSettings
from services.metadata.store.engine import open_database
from tests.support import oci
from tests.support.full_disk import fill, small_disk
from tests.support.stack import Stack


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process (and what it starts meanwhile) creates files under `mask`."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def wider_than_private(root: Path) -> list[str]:
    """Every path under `root` (and `root`) that is not exactly 0700 (folder) / 0600 (file), or
    (sockets) grants anything to group or others."""
    found = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            ok = mode == 0o700
        elif stat.S_ISREG(info.st_mode):
            ok = mode == 0o600
        else:
            ok = mode & 0o077 == 0
        if not ok:
            found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("mask", [0o000, 0o022])
async def test_filesystem_backend_keeps_its_files_private(tmp_path: Path, mask: int) -> None:
    root = tmp_path / "blobs"
    with umask(mask):
        backend = FilesystemBackend(root)
        try:
            sessions = UploadSessions(backend)
            await backend.put("blobs/sha256/ab/whole", _chunks(b"x" * 10))
            # A chunked upload: state, owner marker, staged file, committed by rename; another left open.
            started = await sessions.start("repo", owner="someone")
            await sessions.append(started.upload_id, "repo", expected_offset=0, chunks=_chunks(b"abc"))
            await sessions.commit(started.upload_id, "repo", digest=oci.sha256(b"abc"))
            left = await sessions.start("repo", owner="someone")
            await sessions.append(left.upload_id, "repo", expected_offset=0, chunks=_chunks(b"de"))
        finally:
            await backend.close()
    assert (root / "uploads").is_dir() and (root / "owners").is_dir()
    assert wider_than_private(root) == []


@pytest.mark.parametrize("mask", [0o000, 0o022])
async def test_sqlite_database_files_are_private(tmp_path: Path, mask: int) -> None:
    folder = tmp_path / "new" / "db"
    with umask(mask):
        database = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{folder}/registry.db"))
        try:
            await database.writer.run(lambda conn: conn.execute(text("CREATE TABLE t (x INTEGER)")))
            async with database.engine.connect() as conn:
                await conn.execute(text("SELECT count(*) FROM t"))
            assert {path.name for path in folder.iterdir()} >= {"registry.db", "registry.db-wal", "registry.db-shm"}
            assert wider_than_private(tmp_path / "new") == []
        finally:
            await database.dispose()


def test_sqlite_files_of_an_older_version_are_tightened(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    database.write_bytes(b"")
    os.chmod(database, 0o644)
    open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{database}"))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


@pytest.mark.parametrize("mask", [0o000])
def test_lading_serve_data_folder_is_private(tmp_path: Path, mask: int) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # as an older version (or a umask of 022) left it
    with umask(mask):
        stack = Stack(data).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            image = oci.image(layers=2)
            oci.push(client, "private/image", image, "v1")
            # An upload left open: its state, staged file and owner marker stay on the disk.
            started = client.post("/v2/private/image/blobs/uploads/")
            location = oci.absolute(client, started.headers["Location"])
            patched = client.patch(location, content=b"half", headers={
                "Content-Type": "application/octet-stream", "Content-Range": "0-3"})
            assert patched.status_code == 202, patched.text
        written = {path.name for path in data.rglob("*")}
        assert {"registry.db", "registry.db-wal", "state.json", "data", "metadata.sock"} <= written, written
        assert wider_than_private(data) == []
    finally:
        stack.stop()


def test_a_private_file_that_finds_no_room_leaves_no_staging_file(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size="1m") as disk:
        fill(disk)
        with pytest.raises(OSError) as caught:
            write_private_file(disk / "serve.json", b"{}" * 4096, replace=True)
        assert caught.value.errno == errno.ENOSPC
        assert sorted(path.name for path in disk.iterdir()) == ["filler"]
