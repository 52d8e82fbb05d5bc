"""Power cuts for tests: a folder on the power-cut file system (powercut_fs.py) that can lose,
on command, everything that was never fsynced, and come back with what was.

    disk = PowerCutDisk(tmp_path / "disk")
    disk.mount()            # disk.path is now a mount point
    ...                     # run things that write under disk.path; stop them all
    disk.cut()              # drop what was not durable, then mount what was
    ...
    disk.unmount()

`cut()` refuses to run while a process still has a file open under the mount point (it could
not be unmounted): kill every writer first, as a power cut would have. Needs /dev/fuse, the
fuse3 package (fusermount3, libfuse3) and the `mfusepy` package: `require_fuse()` skips a test
without them, or fails it when LADING_TEST_REQUIRE_CLIENTS=1 (CI).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.clients import missing_tool
from tests.support.stack import REPO_ROOT, child_env

MOUNT_TIMEOUT_SECONDS = 15.0
UNMOUNT_TIMEOUT_SECONDS = 15.0


def require_fuse() -> None:
    """Skips (fails in CI) unless a FUSE file system can be mounted here."""
    problems = []
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        problems.append("/dev/fuse is not accessible (run as root, on a machine with FUSE)")
    if shutil.which("fusermount3") is None or ctypes.util.find_library("fuse3") is None:
        problems.append("fuse3 is not installed (apt-get install -y fuse3)")
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        problems.append(f"mfusepy cannot be loaded ({error}; pip install -e '.[test]')")
    if not problems:
        return
    missing_tool("power-cut tests need FUSE: " + "; ".join(problems))


class PowerCutDisk:
    """One power-cut file system mounted at `path` (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / "mnt"
        self._control = workdir / "control.sock"
        self._state = workdir / "durable.pickle"
        self._log = workdir / "powercut-fs.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def mount(self) -> PowerCutDisk:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(exist_ok=True)
        self._control.unlink(missing_ok=True)
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.powercut_fs", str(self.path), str(self._control),
                 str(self._state)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                # libfuse 3 even where libfuse 2 is installed too (mfusepy would take that first).
                env=child_env({"FUSE_LIBRARY_PATH": ctypes.util.find_library("fuse3") or "libfuse3.so.3"}),
                start_new_session=True,
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT_SECONDS
        while not (self._mounted() and self._command("ping", quiet=True) == "ping"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the power-cut file system did not mount at {self.path}:\n{self.log()}")
            time.sleep(0.02)
        return self

    def cut(self) -> None:
        """Drops everything not yet durable and mounts what was (the process restarts)."""
        assert self._process is not None, "not mounted"
        answer = self._command("cut")
        if answer != "ok":
            raise RuntimeError(f"the power-cut file system did not cut: {answer!r}\n{self.log()}")
        self._unmount()
        self.cuts += 1
        self.mount()

    def stats(self) -> dict[str, int]:
        return json.loads(self._command("stats"))

    def unmount(self) -> None:
        if self._process is None:
            return
        self._unmount()

    def log(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def _unmount(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + UNMOUNT_TIMEOUT_SECONDS
        while self._mounted():
            done = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True, text=True)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                # Still busy: detach it anyway so the test can end, and say why.
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
                self._process.kill()
                self._process.wait()
                self._process = None
                raise RuntimeError(f"{self.path} stayed busy (a process still uses it): {done.stderr}")
            time.sleep(0.05)
        try:
            self._process.wait(timeout=UNMOUNT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _mounted(self) -> bool:
        """Whether a file system is mounted at `path` (from the mount table: after a cut the
        mount answers EIO, which `os.path.ismount` takes for "not mounted")."""
        target = str(self.path.resolve())
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == target for line in mounts)

    def _command(self, command: str, *, quiet: bool = False) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10.0)
                client.connect(str(self._control))
                client.sendall(command.encode())
                client.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := client.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks).decode()
        except OSError:
            if quiet:
                return ""
            raise

    def __enter__(self) -> PowerCutDisk:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()
