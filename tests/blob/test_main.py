"""The composition root: backend selection and the background purge."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.core import BlobStore
from services.blob.main import UnknownBackend, build_backend, purge_periodically, wait_for_backend
from services.blob.uploads import UploadSessions
from services.common.settings import BlobSettings


async def test_build_backend_by_name(tmp_path) -> None:
    settings = BlobSettings(backend="filesystem", io_threads=2)
    settings.filesystem.root = tmp_path / "root"
    backend = build_backend(settings)
    assert isinstance(backend, FilesystemBackend) and backend.root == tmp_path / "root"
    await backend.close()
    assert isinstance(build_backend(BlobSettings(backend="memory")), MemoryBackend)


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(UnknownBackend, match="'tape'.*filesystem, memory"):
        build_backend(BlobSettings.model_construct(backend="tape"))


async def test_background_purge_removes_expired_sessions() -> None:
    clock = [time.time()]
    backend = MemoryBackend()
    store = BlobStore(backend, upload_expiry_seconds=60, sessions=UploadSessions(backend, clock=lambda: clock[0]))
    upload = await store.start_upload("r")
    clock[0] += 120
    task = asyncio.create_task(purge_periodically(store, 0.01))
    try:
        for _ in range(500):
            if not backend.objects:
                break
            await asyncio.sleep(0.01)
        assert backend.objects == {}, f"upload {upload.upload_id} was not purged"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wait_for_backend_gives_up_on_a_broken_backend(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    backend = FilesystemBackend(blocker, io_threads=1)  # its root is a file: every write fails
    try:
        with pytest.raises(OSError):
            await wait_for_backend(BlobStore(backend, upload_expiry_seconds=60), attempts=2, first_delay=0.01)
    finally:
        await backend.close()
