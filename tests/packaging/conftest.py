"""Lading as a Python package: one wheel, built once per session from the files the Containerfile
copies (pyproject.toml, README.md and the three source folders), as a user's `pip wheel` would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.wheelhouse import Wheelhouses, host_target

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "services", "gateway", "protos")


@dataclass(frozen=True)
class BuiltWheel:
    path: Path
    output: str  # what pip and the build backend printed
    # pip options that take the dependencies (and the build backend) from the session's wheelhouse
    # instead of the package index: the same wheels, resolved from the same requirements, fetched
    # once per session (tests/support/wheelhouse.py).
    pip_source: tuple[str, ...] = ()


def _pip_source(wheelhouses: Wheelhouses) -> tuple[str, ...]:
    target = host_target()
    if target is None:
        return ()
    python, glibc_minor = target
    folder, _ = wheelhouses.get(python=python, glibc_minor=glibc_minor)
    return ("--no-index", "--find-links", str(folder))


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory, wheelhouses: Wheelhouses) -> BuiltWheel:
    tree = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    pip_source = _pip_source(wheelhouses)
    # Build isolation as a user's `pip wheel` has it: the backend is installed into a throwaway
    # environment (from the wheelhouse's build requirements).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", *pip_source,
         "--wheel-dir", str(out), str(tree)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = out.glob("lading_registry-*.whl")
    return BuiltWheel(path=wheel, output=result.stdout + result.stderr, pip_source=pip_source)
