"""The wheel: metadata without deprecated forms, every module and data file Lading loads at run
time, and a fresh virtual environment where `pip install` of it gives a working `lading` with the
runtime dependencies only."""

from __future__ import annotations

import email.parser
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.packaging.conftest import REPO_ROOT, BuiltWheel
from tests.support.oci import assert_pulls_back, image, push
from tests.support.stack import LadingProcess, free_port, wait_until_http_ok

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
# Files below the packages that the wheel must carry: sources, generated gRPC code and stubs,
# the .proto files, Alembic's migrations and its script template.
PACKAGED_SUFFIXES = {".py", ".pyi", ".proto", ".mako"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.HeaderParser().parsestr(archive.read(name).decode())


def test_wheel_builds_without_deprecation_warnings_and_declares_an_spdx_license(built_wheel: BuiltWheel) -> None:
    assert "deprecat" not in built_wheel.output.lower(), built_wheel.output
    metadata = _metadata(built_wheel.path)
    assert metadata["License-Expression"] == PYPROJECT["project"]["license"] == "Apache-2.0"
    assert metadata["License"] is None, "the legacy License field is still written"


def test_wheel_carries_every_module_generated_code_and_migration(built_wheel: BuiltWheel) -> None:
    with zipfile.ZipFile(built_wheel.path) as archive:
        packaged = set(archive.namelist())
    expected = set()
    for top, strip in (("services", ""), ("gateway", ""), ("protos/lading", "protos/")):
        for path in (REPO_ROOT / top).rglob("*"):
            if path.suffix in PACKAGED_SUFFIXES and "__pycache__" not in path.parts:
                expected.add(path.relative_to(REPO_ROOT).as_posix().removeprefix(strip))
    assert expected - packaged == set()
    protos = [p for p in expected if p.endswith(".proto")]
    assert protos, "no .proto files found"
    for proto in protos:
        stem = proto.removesuffix(".proto")
        assert {f"{stem}_pb2.py", f"{stem}_pb2_grpc.py", f"{stem}_pb2.pyi"} <= packaged, proto
    assert any(re.fullmatch(r"services/metadata/migrations/versions/\d+_\w+\.py", p) for p in packaged)
    assert "services/metadata/migrations/script.py.mako" in packaged
    entry_points = next(n for n in packaged if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(built_wheel.path) as archive:
        assert "lading = services.cli:main" in archive.read(entry_points).decode()


# --- a fresh virtual environment ------------------------------------------------------------------

_LIST_DISTRIBUTIONS = """
import importlib.metadata as m, json
print(json.dumps({d.metadata["Name"]: d.requires or [] for d in m.distributions()}))
"""
_WHERE = """
import json, gateway, lading, services
print(json.dumps([m.__path__[0] for m in (gateway, lading, services)]))
"""


def _closure(requirements: list[str], installed: dict[str, list[str]]) -> set[str]:
    """Canonical names of the distributions `requirements` need on this platform, with extras."""
    by_name = {canonical(name): requires for name, requires in installed.items()}
    needed: dict[str, set[str]] = {}
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = canonical(requirement.name)
        extras = set(requirement.extras)
        if name in needed and extras <= needed[name]:
            continue
        needed.setdefault(name, set()).update(extras)
        for line in by_name.get(name, []):
            child = Requirement(line)
            if child.marker is None or any(
                child.marker.evaluate({**default_environment(), "extra": extra}) for extra in needed[name] | {""}
            ):
                pending.append(child)
    return set(needed)


def test_pip_install_of_the_wheel_gives_a_working_lading_with_runtime_dependencies_only(
    built_wheel: BuiltWheel, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The test's pip installs into the new environment, so pip itself stays out of it.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", "--disable-pip-version-check",
         *built_wheel.pip_source, str(built_wheel.path)], capture_output=True, text=True, timeout=900, check=False)
    assert install.returncode == 0, install.stderr[-4000:]

    # Outside the source tree, with nothing of it on the path: only what the wheel installed.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": ""}
    run = {"capture_output": True, "text": True, "timeout": 120, "cwd": tmp_path, "env": env, "check": False}
    installed = json.loads(subprocess.run([str(python), "-c", _LIST_DISTRIBUTIONS], **run).stdout)
    names = {canonical(name) for name in installed}
    assert names == _closure(["lading-registry"], installed), "the environment holds more than Lading needs"
    tests_only = {canonical(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    tests_only -= {canonical(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert not names & tests_only, f"test extras installed: {sorted(names & tests_only)}"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          **run).stdout.strip()
    where = json.loads(subprocess.run([str(python), "-c", _WHERE], **run).stdout)
    assert all(Path(p).is_relative_to(site) for p in where), where

    version = subprocess.run(["lading", "--version"], **run)
    assert version.stdout.strip() == f"lading {PYPROJECT['project']['version']}", version.stderr

    # The whole registry from the installed package: migrations, generated gRPC code, every plane.
    port = free_port()
    serve = LadingProcess("wheel-serve", [str(venv / "bin" / "lading"), "serve", "--data-dir", str(tmp_path / "data"),
                                          "--port", str(port)], log_dir=tmp_path, env=env, cwd=tmp_path,
                          exact_env=True)
    serve.start()
    try:
        wait_until_http_ok(f"http://127.0.0.1:{port}/v2/", serve, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            manifest = image(2)
            push(client, "wheel/check", manifest, tag="v1")
            assert_pulls_back(client, "wheel/check", "v1", manifest)
    finally:
        assert serve.stop() == 0, serve.log()
