"""The `oras` Python library (oras-py) pushing and pulling artifacts.

oras-py's `push` builds the manifest itself (empty config, one layer per file) and can attach a
`subject`; the referrers API is not in oras-py 0.2, so it is read over HTTP.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import oras.oci
import oras.provider
import pytest

from tests.integration.conftest import unique_repo
from tests.support.oci import OCI_INDEX, get_manifest, image, push
from tests.support.stack import Stack

pytestmark = pytest.mark.clients


@pytest.fixture
def oras_client(registry: Stack) -> oras.provider.Registry:
    return oras.provider.Registry(hostname=registry.hostport, insecure=True)


@pytest.fixture
def workdir(tmp_path: Path):
    """oras-py only pushes files under the working directory (path validation), so chdir there."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def make_files(root: Path) -> dict[str, bytes]:
    files = {"readme.txt": b"hello from lading tests\n", "data.bin": os.urandom(200_000),
             "empty.txt": b""}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def test_push_and_pull_artifact_byte_identical(
    oras_client: oras.provider.Registry, registry: Stack, client: httpx.Client, workdir: Path
) -> None:
    files = make_files(workdir)
    repo = unique_repo("oras")
    target = f"{registry.hostport}/{repo}:v1"
    response = oras_client.push(target=target, files=list(files), manifest_annotations={"org.example.k": "v"},
                                quiet=True)
    assert response.status_code == 201

    out = workdir / "out"
    pulled = oras_client.pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data

    manifest = oras_client.get_manifest(target)
    assert manifest["annotations"] == {"org.example.k": "v"}
    served = get_manifest(client, repo, "v1")
    assert served.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(served.content).hexdigest()
    assert oras_client.get_tags(f"{registry.hostport}/{repo}") == ["v1"]


def test_chunked_push(oras_client: oras.provider.Registry, registry: Stack, workdir: Path) -> None:
    data = os.urandom(300_000)
    (workdir / "big.bin").write_bytes(data)
    target = f"{registry.hostport}/{unique_repo('oras')}:chunked"
    response = oras_client.push(target=target, files=["big.bin"], do_chunked=True, chunk_size=64 * 1024, quiet=True)
    assert response.status_code == 201
    pulled = oras_client.pull(target=target, outdir=str(workdir / "out"))
    assert Path(pulled[0]).read_bytes() == data


def test_push_referrer_and_find_it(
    oras_client: oras.provider.Registry, registry: Stack, client: httpx.Client, workdir: Path
) -> None:
    repo = unique_repo("oras")
    subject_manifest = image(1)
    push(client, repo, subject_manifest, tag="app")
    (workdir / "sbom.json").write_text('{"packages": []}')
    subject = oras.oci.Subject(mediaType=subject_manifest.media_type, digest=subject_manifest.digest,
                               size=subject_manifest.size)
    target = f"{registry.hostport}/{repo}:sbom"
    response = oras_client.push(target=target, files=["sbom.json:application/vnd.example.sbom+json"],
                                subject=subject, manifest_annotations={"org.example.kind": "sbom"}, quiet=True)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == subject_manifest.digest

    pushed = get_manifest(client, repo, "sbom")
    listing = client.get(f"/v2/{repo}/referrers/{subject_manifest.digest}")
    assert listing.status_code == 200
    assert listing.headers["Content-Type"] == OCI_INDEX
    descriptors = listing.json()["manifests"]
    assert len(descriptors) == 1
    found = descriptors[0]
    assert found["digest"] == pushed.headers["Docker-Content-Digest"]
    assert found["size"] == len(pushed.content)
    # oras-py sets no artifactType, so the config's media type stands in.
    assert found["artifactType"] == pushed.json()["config"]["mediaType"]
    assert found["annotations"] == {"org.example.kind": "sbom"}
