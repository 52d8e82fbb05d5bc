"""skopeo (containers/image) pushing OCI layouts to Lading and pulling them back.

Layouts are built in the test from random content; after a round trip the manifests must keep
their digests and every blob its bytes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.clients import require_binary
from tests.support.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Layout,
    Manifest,
    artifact,
    get_manifest,
    image,
    multi_arch_index,
    push,
    render,
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


def test_sync_mirrors_every_tag_of_a_repository(skopeo, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    """`skopeo sync --src docker --dest docker` of a whole repository (an image, an index and a
    Docker schema 2 image under their tags): every tag lands under the destination prefix with the
    same digest, and `inspect --config` reads the config back."""
    tagged = {"v1": image(1), "multi": multi_arch_index(layers=1), "docker": image(1, docker=True)}
    repo = unique_repo("skopeo")
    # (skopeo 1.9 reads only OCI media types from a layout's index.json: the Docker image goes over HTTP.)
    source = write_layout(tmp_path / "src", {"v1": tagged["v1"], "multi": tagged["multi"]})
    for tag in ("v1", "multi"):
        push_layout(skopeo, source, tag, f"docker://{registry.hostport}/{repo}:{tag}", "--all")
    push(client, repo, tagged["docker"], tag="docker")
    prefix = unique_repo("mirror")
    skopeo("sync", "--all", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
           "--dest-tls-verify=false", f"{registry.hostport}/{repo}", f"{registry.hostport}/{prefix}")

    mirrored = f"{prefix}/{repo.rsplit('/', 1)[1]}"
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.hostport}/{mirrored}"))
    assert sorted(tags["Tags"]) == sorted(tagged)
    for tag, manifest in tagged.items():
        served = get_manifest(client, mirrored, tag)
        assert served.headers["Docker-Content-Digest"] == manifest.digest
        assert served.headers["Content-Type"] == manifest.media_type
    config = skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                    f"docker://{registry.hostport}/{mirrored}:docker")
    assert config.encode() == tagged["docker"].blobs[0].data


def test_sigstore_attachment_travels_with_the_image(
        skopeo, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    """A cosign-style signature (an OCI manifest tagged `sha256-<digest>.sig`, as cosign and
    containers/image's `use-sigstore-attachments` store them) is found by skopeo next to the image
    and copied along with it; an unsigned image's missing tag answers 404 MANIFEST_UNKNOWN, which
    skopeo reads as "no signatures"."""
    signed = image(1)
    repo = unique_repo("skopeo")
    push(client, repo, signed, tag="v1")
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{registry.hostport}/{repo}"},
                                       "image": {"docker-manifest-digest": signed.digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    layer = Blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json")
    signature_annotation = {"dev.cosignproject.cosign/signature": base64.b64encode(os.urandom(64)).decode()}
    config = Blob(json.dumps({"architecture": "", "os": "", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}).encode(), OCI_CONFIG)
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [layer.descriptor(annotations=signature_annotation)]}
    signature_tag = signed.digest.replace(":", "-") + ".sig"
    push(client, repo, Manifest(render(document), OCI_MANIFEST, blobs=(config, layer)), tag=signature_tag)

    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "lading.yaml").write_text(
        f"docker:\n  {registry.hostport}:\n    use-sigstore-attachments: true\n")
    copy = unique_repo("skopeo")
    skopeo("--registries.d", str(registries_d), "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{registry.hostport}/{repo}:v1", f"docker://{registry.hostport}/{copy}:v1")

    assert get_manifest(client, copy, "v1").headers["Docker-Content-Digest"] == signed.digest
    copied = get_manifest(client, copy, signature_tag)
    assert copied.status_code == 200
    (copied_layer,) = copied.json()["layers"]
    assert copied_layer["digest"] == layer.digest
    assert copied_layer["annotations"] == signature_annotation
    blob = client.get(f"/v2/{copy}/blobs/{layer.digest}")
    assert blob.status_code == 200 and blob.content == payload
