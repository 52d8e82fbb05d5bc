"""Building and running Lading's container image on a machine that reaches Debian's and PyPI's
package registries but no container registry (as CI's does).

- `start_debian_rootfs`: mmdebstrap makes a Debian bookworm root filesystem with python3 from
  Debian's packages; `Podman.import_rootfs` turns it into the base image.
- the runtime dependencies as wheels for the image's Python, fetched by the host's pip once per
  session (tests/support/wheelhouse.py); `serve_folder` hands them to the image build over
  loopback HTTP, so the build reaches no registry (`make image PIP_OPTIONS="--no-index --find-links <url>"`).
- `Podman`: podman with a storage of its own under the test's folder, never the machine's.
- `ImageRoot`: runs a command in the image's own root filesystem (`podman image mount`, then
  `unshare`) the way a container runtime would: the image's entrypoint, environment, user and
  working directory. Only the data volume (a tmpfs owned by the image's user) and /dev/shm are
  writable; the rest, /tmp included, is read-only. For machines where `podman run` cannot start
  containers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.clients import missing_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# Bookworm's python3 and C library: the wheels fetched for the image must fit them.
SUITE_PYTHON = (3, 11)
SUITE_GLIBC_MINOR = 36
# What the base image needs for Lading: Python with venv (the build stage makes the environment
# with it), CA certificates (S3, webhooks, OTLP over TLS) and the C++ runtime that the manylinux
# wheels of grpcio and others link against (python:*-slim images have all of these).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libstdc++6")
# Bookworm's essential set pulls in usrmerge, and with it perl (~55 MB); a registry needs neither.
UNNEEDED_PACKAGES = (
    "usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl",
    "perl", "perl-modules-5.36", "libperl5.36",
)
STORAGE_DRIVER = "overlay"
TOOLS = {
    "mmdebstrap": "apt-get install mmdebstrap",
    "podman": "apt-get install podman buildah",
    "skopeo": "apt-get install skopeo",
    "unshare": "apt-get install util-linux",
    "mount": "apt-get install mount",
    "tar": "apt-get install tar",
    "make": "apt-get install make",
}


def require_image_tools() -> dict[str, str]:
    """Paths of the tools the image tests need; skips (fails under LADING_TEST_REQUIRE_CLIENTS=1)
    when one is missing or the tests do not run as root (mmdebstrap, image mounts, chroot)."""
    missing = [f"{tool} ({hint})" for tool, hint in TOOLS.items() if shutil.which(tool) is None]
    reasons = []
    if missing:
        reasons.append("missing " + ", ".join(missing))
    if os.geteuid() != 0:
        reasons.append("needs root (mmdebstrap --mode=root, podman image mount, unshare --root)")
    if reasons:
        missing_tool("container image tests: " + "; ".join(reasons))
    return {tool: shutil.which(tool) or tool for tool in TOOLS}


def _checked(result: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise AssertionError(f"{what} failed with {result.returncode}:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


# --- the base image ------------------------------------------------------------------------------


def _debian_sources() -> list[str]:
    """The machine's own Debian sources when they are for SUITE (its mirror), else none:
    mmdebstrap then uses Debian's default mirror with the updates and security suites."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file() and SUITE in sources.read_text():
        return [str(sources)]
    return []


# mmdebstrap's own hooks that run dpkg under eatmydata (no fsync per unpacked file) while the root
# filesystem is made, then remove it again: the same root filesystem, without waiting on the disk
# for thousands of syncs that a throwaway folder does not need.
EATMYDATA_HOOKS = Path("/usr/share/mmdebstrap/hooks/eatmydata")


def start_debian_rootfs(target: Path, log: Path) -> subprocess.Popen[bytes]:
    """Starts mmdebstrap making a SUITE root filesystem in `target` (a folder); about 30 s."""
    hooks = [f"--hook-dir={EATMYDATA_HOOKS}"] if (EATMYDATA_HOOKS / "extract.sh").is_file() else []
    argv = [
        "mmdebstrap", "--mode=root", "--variant=essential", *hooks, "--include=" + ",".join(BASE_PACKAGES),
        # Documentation and translations are of no use in an image (copyright files stay).
        *(f"--dpkgopt=path-exclude=/usr/share/{folder}/*" for folder in ("man", "locale", "doc")),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f'--customize-hook=chroot "$1" dpkg --purge --force-depends {" ".join(UNNEEDED_PACKAGES)}',
        SUITE, str(target), *_debian_sources(),
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def rootfs_python(rootfs: Path) -> tuple[int, int]:
    """The major and minor version of the root filesystem's python3."""
    result = _checked(subprocess.run(
        ["unshare", f"--root={rootfs}", "/usr/bin/python3", "-c",
         "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True, timeout=60, check=False), "python3 in the root filesystem")
    major, minor = result.stdout.split()
    return int(major), int(minor)


# --- wheels for the build (tests/support/wheelhouse.py fetches them) -------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serves `folder` over HTTP on 127.0.0.1 (a free port) while the block runs; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wheelhouse",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- podman with its own storage -----------------------------------------------------------------


class Podman:
    """podman (and skopeo's `containers-storage:`) on a storage under `home`, removed by `close()`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.storage = home / "storage"
        self.runroot = home / "run"
        # Image copies go through TMPDIR (default /var/tmp): keep them here too.
        self.tmp = home / "tmp"
        for folder in (self.storage, self.runroot, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.storage), "--runroot", str(self.runroot),
                "--storage-driver", STORAGE_DRIVER, *args]

    @property
    def engine(self) -> str:
        """The command line `make image ENGINE=...` takes."""
        return shlex.join(self.argv())

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmp)}

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                                env=self.env, stdin=subprocess.DEVNULL, check=False)
        return _checked(result, f"podman {' '.join(args)}") if check else result

    def reference(self, image: str) -> str:
        """`image` in this storage, as skopeo names it."""
        return f"containers-storage:[{STORAGE_DRIVER}@{self.storage}+{self.runroot}]{image}"

    def import_rootfs(self, rootfs: Path, name: str) -> None:
        """`podman import` of a root filesystem folder (streamed as a tar)."""
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            result = subprocess.run(self.argv("import", "-", name), stdin=tar.stdout, capture_output=True,
                                    text=True, timeout=600, env=self.env, check=False)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=600)
        _checked(result, f"podman import {name}")

    def config(self, image: str) -> dict[str, Any]:
        """The image's `podman image inspect` record (Id, Size, Config, Labels, ...)."""
        (record,) = json.loads(self("image", "inspect", image).stdout)
        return record

    @contextlib.contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """The image's root filesystem, mounted (read-only) while the block runs."""
        path = Path(self("image", "mount", image).stdout.strip())
        try:
            yield path
        finally:
            self("image", "unmount", image, check=False)

    def close(self) -> None:
        """Unmounts every image of this storage, then removes the storage."""
        if self.storage.exists():
            self("image", "unmount", "--all", check=False)
        home = str(self.home)
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((p for p in points if p.startswith(home + "/")), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


# --- make image ----------------------------------------------------------------------------------


def make_image(podman: Podman, *, base: str, image: str, pip_options: str, log: Path) -> None:
    """`make image` with this storage and base image. Chroot isolation: the RUN steps need no OCI
    runtime (which may not be able to start containers here); the image is the same either way."""
    env = {k: v for k, v in podman.env.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    argv = ["make", "--no-print-directory", "-C", str(REPO_ROOT), "image", f"ENGINE={podman.engine}",
            f"BASE_IMAGE={base}", f"IMAGE={image}", "IMAGE_BUILD_FLAGS=--isolation chroot",
            f"PIP_OPTIONS={pip_options}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env,
                            stdin=subprocess.DEVNULL, check=False)
    log.write_text(result.stdout + result.stderr)
    _checked(result, "make image")


# --- running the image from its own root filesystem ----------------------------------------------

# $1: an empty folder for the new root; $2: the image's mounted root filesystem; $3 uid, $4 gid,
# $5 working directory; the rest is the command. Runs in a private mount namespace (unshare
# --mount), so every mount goes away with the last process.
_RUN_SCRIPT = r"""
set -eu
root=$1 image=$2 uid=$3 gid=$4 workdir=$5
shift 5
mount --bind "$image" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o "uid=$uid,gid=$gid,mode=0700,nosuid,nodev" tmpfs "$root/data"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom; do
  : > "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
exec unshare --root="$root" --wd="$workdir" --setuid="$uid" --setgid="$gid" "$@"
"""


@dataclass(frozen=True)
class ImageRoot:
    """Runs commands as the image would run them, from its mounted root filesystem (see module)."""

    mounted: Path
    config: dict[str, Any]  # the image's Config: Entrypoint, Cmd, Env, User, WorkingDir
    scratch: Path

    @property
    def user(self) -> tuple[int, int]:
        uid, _, gid = str(self.config.get("User") or "0").partition(":")
        assert uid.isdigit() and (not gid or gid.isdigit()), f"the image's user is not numeric: {uid}:{gid}"
        return int(uid), int(gid or uid)

    @property
    def env(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.config.get("Env") or [])

    def entrypoint(self, args: Sequence[str] | None = None) -> list[str]:
        """The image's entrypoint with `args` (default: the image's Cmd), as `podman run` would."""
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [] if args is None else args)]

    def argv(self, command: Sequence[str]) -> list[str]:
        """The host command that runs `command` in the image (see the module docstring)."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        root = self.scratch / f"root-{len(list(self.scratch.iterdir()))}"
        root.mkdir()
        uid, gid = self.user
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _RUN_SCRIPT, "run-image",
                str(root), str(self.mounted), str(uid), str(gid), self.config.get("WorkingDir") or "/", *command]

    def run(self, command: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs `command` in the image to completion, with the image's environment only."""
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout,
                              env=self.env, stdin=subprocess.DEVNULL, check=False)
