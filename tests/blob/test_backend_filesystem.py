"""The filesystem backend passes the backend contract, and keeps its folder tidy."""

import os

import pytest

from services.blob.backends.filesystem import FilesystemBackend
from tests.contracts.blob_backend_suite import BlobBackendContract, chunks_of


class TestFilesystemBackend(BlobBackendContract):
    @pytest.fixture
    def make_backend(self, tmp_path):
        return lambda: FilesystemBackend(tmp_path / "root", io_threads=4)


def _files_and_folders(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


async def test_delete_prunes_empty_folders_and_failed_puts_leave_no_temp_files(tmp_path) -> None:
    backend = FilesystemBackend(tmp_path, io_threads=2)
    try:
        await backend.put("x/y/z", chunks_of(b"1"))
        await backend.put("x/other", chunks_of(b"2"))

        async def failing():
            yield b"partial"
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await backend.put("x/y/never", failing())
        assert _files_and_folders(tmp_path) == ["x", "x/other", "x/y", "x/y/z"]
        await backend.delete("x/y/z")
        assert _files_and_folders(tmp_path) == ["x", "x/other"]
        await backend.delete("x/other")
        assert _files_and_folders(tmp_path) == []
    finally:
        await backend.close()


async def test_keys_cannot_escape_the_root(tmp_path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "secret"
    outside.write_bytes(b"do not read")
    backend = FilesystemBackend(root, io_threads=1)
    try:
        listed = [info.key async for info in backend.list("")]
        assert listed == []
        for key in ("../secret", "root/../secret", "/etc/passwd"):
            with pytest.raises(Exception) as caught:
                await backend.get(key)
            assert type(caught.value).__name__ == "InvalidKey"
    finally:
        await backend.close()


async def test_removing_an_emptied_session_folder_does_not_list_it(tmp_path, monkeypatch) -> None:
    """A session ends with `delete_all([state, folder/])`; with its state gone the folder is mostly
    empty (a blob sent whole with its commit stages nothing), and one rmdir removes it. A folder
    that still holds staged bytes is listed and emptied as before."""
    from services.blob.backends import filesystem

    listed: list[str] = []
    real = filesystem._folder_entries

    def counting(folder):
        listed.append(os.path.basename(folder))
        return real(folder)

    monkeypatch.setattr(filesystem, "_folder_entries", counting)
    backend = FilesystemBackend(tmp_path, io_threads=2)
    try:
        await backend.create_unsynced([("uploads/a/state.json", b"{}")])
        await backend.delete_all(["uploads/a/state.json", "uploads/a/"])
        assert listed == []
        await backend.create_unsynced([("uploads/b/state.json", b"{}"), ("uploads/b/data", b"staged")])
        await backend.delete_all(["uploads/b/state.json", "uploads/b/"])
        assert listed == ["b"]
        assert _files_and_folders(tmp_path) == ["uploads"]
    finally:
        await backend.close()
