"""A small real file system the tests can fill: a tmpfs mounted under the test's tmp_path.

What a full disk does to a call (a create that succeeds and a write that does not, a pwrite that
stops midway through a chunk) is the file system's own behaviour, which no fault injection above
the OS reproduces as faithfully. Mounting needs root (CI runs as root); elsewhere the tests that
use it skip, or fail with LADING_TEST_REQUIRE_CLIENTS=1 (CI), as the power-cut tests do."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.clients import missing_tool


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    """`folder` (created) with a tmpfs of `size` mounted on it, unmounted afterwards; skips the
    test when it cannot be mounted (fails it with LADING_TEST_REQUIRE_CLIENTS=1)."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing_tool("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        missing_tool(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """A file (not Lading's) that takes every free byte of `disk`; delete it to free them."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                if len(block) == 1:
                    return filler
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
