"""Wheels of Lading's runtime dependencies (and of its build backend), fetched once per test session.

Both the container image test (tests/image: the image build installs from them, offline) and the
packaging tests (tests/packaging: the wheel is built and `pip install`ed into a fresh virtual
environment from them) need the same wheels; fetching them is the slow part of each (pip resolves
every dependency against the package index and downloads it). `Wheelhouses` keeps one folder per
content key of what decides its content: the target Python and C library, the machine, and the
requirements read from pyproject.toml. So in one session the wheels are fetched once when the image
targets the host's Python (as in CI), and twice otherwise; a changed pyproject.toml is a new key.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[str]:
    return list(_pyproject()["project"]["dependencies"])


def build_requirements() -> list[str]:
    return list(_pyproject()["build-system"]["requires"])


def host_target() -> tuple[tuple[int, int], int] | None:
    """(Python major and minor, glibc minor) of this interpreter; None off glibc 2.x."""
    libc, version = platform.libc_ver()
    major, _, minor = version.partition(".")
    if libc != "glibc" or major != "2" or not minor.isdigit():
        return None
    return (sys.version_info[0], sys.version_info[1]), int(minor)


def _manylinux_platforms(glibc_minor: int, machine: str) -> list[str]:
    """Every manylinux tag a C library 2.<glibc_minor> runs (pip does not expand one given tag)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{machine}" for minor, name in legacy.items() if minor <= glibc_minor]


def _download_argv(dest: Path, python: tuple[int, int], glibc_minor: int) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--dest", str(dest), "--python-version", f"{python[0]}.{python[1]}",
        "--implementation", "cp", "--abi", f"cp{python[0]}{python[1]}",
        *(f"--platform={tag}" for tag in _manylinux_platforms(glibc_minor, platform.machine())),
        *runtime_requirements(), *build_requirements(),
    ]


def download_wheelhouse(dest: Path, *, python: tuple[int, int], glibc_minor: int) -> list[Path]:
    """Wheels of Lading's runtime dependencies (and of its build backend) for CPython `python` on
    a C library 2.<glibc_minor>, fetched with the host's pip; returns them."""
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(_download_argv(dest, python, glibc_minor), capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(f"pip download failed with {result.returncode}:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return sorted(dest.glob("*.whl"))


class Wheelhouses:
    """Wheelhouse folders under `root`, one per content key, each fetched on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._fetched: dict[str, list[Path]] = {}

    @staticmethod
    def key(python: tuple[int, int], glibc_minor: int) -> str:
        inputs = {"python": python, "glibc_minor": glibc_minor, "machine": platform.machine(),
                  "runtime": runtime_requirements(), "build": build_requirements()}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

    def get(self, *, python: tuple[int, int], glibc_minor: int) -> tuple[Path, list[Path]]:
        """(the folder, its wheels) for CPython `python` on glibc 2.<glibc_minor>."""
        key = self.key(python, glibc_minor)
        folder = self.root / key
        with self._lock:
            if key not in self._fetched:
                self._fetched[key] = download_wheelhouse(folder, python=python, glibc_minor=glibc_minor)
            return folder, list(self._fetched[key])
