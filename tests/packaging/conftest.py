"""Lading as a Python package: one wheel, built once per session from the files the Containerfile
copies (pyproject.toml, README.md and the three source folders), as a user's `pip wheel` would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "services", "gateway", "protos")


@dataclass(frozen=True)
class BuiltWheel:
    path: Path
    output: str  # what pip and the build backend printed


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    tree = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--wheel-dir",
         str(out), str(tree)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = out.glob("lading_registry-*.whl")
    return BuiltWheel(path=wheel, output=result.stdout + result.stderr)
