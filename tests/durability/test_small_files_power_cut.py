"""Lading's own small files survive a power cut whole (issue 18 item 2, "wherever else Lading
writes files"): the record `lading serve` leaves in the data folder (`run/serve.json`, which the
operator commands read to find the planes) and the signing key `lading auth keygen` writes.

Each is written on the power-cut file system (tests/support/powercut_fs.py), the power is cut
right after the call returned, and what came back must be the whole file, private (0600), with
no staging file left beside it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli_accounts import _keygen
from services.common.private_files import write_private_file
from services.common.serve_record import read_record, write_record
from tests.support.powercut import PowerCutDisk, require_fuse


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    require_fuse()
    with PowerCutDisk(tmp_path / "disk") as mounted:
        yield mounted


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_serve_record_survives_a_cut(disk: PowerCutDisk) -> None:
    data_dir = disk.path / "data"  # made by write_record, with its run/ folder
    path = write_record(data_dir, metadata_target="unix:/x/metadata.sock", blob_target="unix:/x/blob.sock",
                        url="http://127.0.0.1:5000")
    disk.cut()
    record = read_record(data_dir)
    assert record is not None, f"{path} did not survive the cut"
    assert record.pid == os.getpid() and record.url == "http://127.0.0.1:5000"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_new_signing_key_survives_a_cut_whole(disk: PowerCutDisk, capsys: pytest.CaptureFixture[str]) -> None:
    key = disk.path / "keys" / "signing.pem"
    assert _keygen(key) == 0
    written = key.read_bytes()
    disk.cut()
    assert key.read_bytes() == written and written.startswith(b"-----BEGIN")
    assert _mode(key) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == [key.name]
    assert _keygen(key) == 1, "keygen must refuse to overwrite a key"
    assert key.read_bytes() == written
    assert "refusing to overwrite" in capsys.readouterr().err


def test_a_replaced_file_is_the_old_or_the_new_never_half(disk: PowerCutDisk) -> None:
    path = disk.path / "file"
    write_private_file(path, b"old" * 1000, replace=True)
    write_private_file(path, b"new" * 5000, replace=True)
    disk.cut()
    assert path.read_bytes() == b"new" * 5000
    with pytest.raises(FileExistsError):
        write_private_file(path, b"other", replace=False)
    assert path.read_bytes() == b"new" * 5000
    assert json.dumps(sorted(p.name for p in disk.path.iterdir())) == '["file"]'
