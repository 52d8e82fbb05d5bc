"""skopeo (containers/image) pushing OCI layouts to Lading and pulling them back.

Layouts are built in the test from random content; after a round trip the manifests must keep
their digests and every blob its bytes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.clients import require_binary
from tests.support.oci import (
    OCI_INDEX,
    Layout,
    Manifest,
    artifact,
    get_manifest,
    image,
    multi_arch_index,
    write_layout,
)
from tests.support.stack import Stack

pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def skopeo_bin() -> str:
    return require_binary("skopeo", install_hint="apt-get install skopeo")


@pytest.fixture
def skopeo(skopeo_bin: str, tmp_path: Path):
    """Runs skopeo with no trust policy and no user configuration; fails with its output."""
    home = tmp_path / "home"
    home.mkdir()
    auth = tmp_path / "auth.json"
    auth.write_text("{}")

    def run(*args: str) -> str:
        command = [skopeo_bin, "--insecure-policy", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                                env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})
        assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"
        return result.stdout

    return run


def push_layout(skopeo, layout: Path, tag: str, target: str, *extra: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", "--preserve-digests", *extra, f"oci:{layout}:{tag}", target)


def pull_layout(skopeo, source: str, layout: Path, tag: str, *extra: str) -> Layout:
    skopeo("copy", "--src-tls-verify=false", "--preserve-digests", *extra, source, f"oci:{layout}:{tag}")
    return Layout(layout)


def assert_same_content(pulled: Layout, tag: str, manifest: Manifest) -> None:
    """The layout holds `manifest` under `tag` with the same digest, and every blob byte-identical."""
    descriptor = pulled.descriptor_for(tag)
    assert descriptor["digest"] == manifest.digest
    assert pulled.blob(manifest.digest) == manifest.payload
    for child in manifest.children:
        assert pulled.blob(child.digest) == child.payload
    for blob in manifest.all_blobs():
        assert pulled.blob(blob.digest) == blob.data, f"blob {blob.digest} differs after the round trip"


def test_image_with_three_layers_round_trips(skopeo, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    manifest = image(3, layer_size=64 * 1024)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    repo = unique_repo("skopeo")
    target = f"docker://{registry.hostport}/{repo}:v1"
    push_layout(skopeo, source, "v1", target)

    served = get_manifest(client, repo, "v1")
    assert served.status_code == 200
    assert served.headers["Docker-Content-Digest"] == manifest.digest
    assert served.content == manifest.payload

    pulled = pull_layout(skopeo, target, tmp_path / "dst", "v1")
    assert_same_content(pulled, "v1", manifest)


def test_multi_arch_index_round_trips_with_all(
    skopeo, registry: Stack, client: httpx.Client, tmp_path: Path
) -> None:
    top = multi_arch_index((("amd64", "linux"), ("arm64", "linux")), layers=2)
    source = write_layout(tmp_path / "src", {"multi": top})
    repo = unique_repo("skopeo")
    target = f"docker://{registry.hostport}/{repo}:multi"
    push_layout(skopeo, source, "multi", target, "--all")

    served = get_manifest(client, repo, "multi")
    assert served.headers["Content-Type"] == OCI_INDEX
    assert served.headers["Docker-Content-Digest"] == top.digest
    for child in top.children:
        assert get_manifest(client, repo, child.digest).content == child.payload

    pulled = pull_layout(skopeo, target, tmp_path / "dst", "multi", "--all")
    assert_same_content(pulled, "multi", top)


def test_artifact_with_subject_round_trips(skopeo, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    subject = image(1)
    signature = artifact(subject=subject, artifact_type="application/vnd.example.signature.v1",
                         annotations={"org.example.signed-by": "tests"})
    source = write_layout(tmp_path / "src", {"app": subject, "sig": signature})
    repo = unique_repo("skopeo")
    push_layout(skopeo, source, "app", f"docker://{registry.hostport}/{repo}:app")
    push_layout(skopeo, source, "sig", f"docker://{registry.hostport}/{repo}:sig")

    listed = client.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"]
    assert [(d["digest"], d.get("artifactType")) for d in listed] == [
        (signature.digest, "application/vnd.example.signature.v1")]

    pulled = pull_layout(skopeo, f"docker://{registry.hostport}/{repo}:sig", tmp_path / "dst", "sig")
    assert_same_content(pulled, "sig", signature)
    assert json.loads(pulled.blob(signature.digest))["subject"]["digest"] == subject.digest


def test_inspect_list_tags_and_delete(skopeo, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    manifest = image(1)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    repo = unique_repo("skopeo")
    for tag in ("v1", "v2", "latest"):
        push_layout(skopeo, source, "v1", f"docker://{registry.hostport}/{repo}:{tag}")

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.hostport}/{repo}:v2")
    assert raw.encode() == manifest.payload or raw.encode() == manifest.payload + b"\n"
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.hostport}/{repo}"))
    assert sorted(tags["Tags"]) == ["latest", "v1", "v2"]

    # skopeo deletes by digest: the manifest and every tag pointing at it go away.
    skopeo("delete", "--tls-verify=false", f"docker://{registry.hostport}/{repo}:v1")
    for reference in ("v1", "v2", "latest", manifest.digest):
        assert get_manifest(client, repo, reference).status_code == 404
