"""podman and buildah (containers/image) the way platform teams use them against Lading.

Images are built with buildah from `FROM scratch` and fresh random files (no RUN, so nothing is
started), pushed with podman in the formats and compressions it offers, and pulled back into
the same storage after the local copies are removed: podman checks every digest on the way, and
the files are compared byte for byte through `podman image mount`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, get_manifest, sha256
from tests.support.podman import Engine, fresh_files
from tests.support.stack import Stack

pytestmark = pytest.mark.clients


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(tmp_path / "engine") as containers:
        yield containers


def assert_files(engine: Engine, image: str, files: dict[str, bytes]) -> None:
    with engine.mounted(image) as root:
        for name, data in files.items():
            assert (root / "data" / name).read_bytes() == data, f"{name} differs after the round trip"


def served_manifest(client: httpx.Client, repo: str, reference: str) -> tuple[httpx.Response, dict]:
    response = get_manifest(client, repo, reference)
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(response.content)
    return response, json.loads(response.content)


@pytest.mark.parametrize(("push_format", "compression", "manifest_type", "layer_type"), [
    ("oci", "gzip", OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("v2s2", "gzip", DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ("oci", "zstd", OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd"),
], ids=["oci-gzip", "docker-v2s2", "oci-zstd"])
def test_built_image_round_trips_in_each_format(
        engine: Engine, registry: Stack, client: httpx.Client,
        push_format: str, compression: str, manifest_type: str, layer_type: str) -> None:
    files = fresh_files()
    image_id = engine.build_scratch_image("localhost/lading-test/app:built", files)
    repo = unique_repo("podman")
    target = f"{registry.hostport}/{repo}:v1"
    engine.podman("push", "--tls-verify=false", "--format", push_format, "--compression-format", compression,
                  "localhost/lading-test/app:built", target)

    response, manifest = served_manifest(client, repo, "v1")
    assert response.headers["Content-Type"] == manifest_type
    assert manifest["mediaType"] == manifest_type
    assert [layer["mediaType"] for layer in manifest["layers"]] == [layer_type]
    assert manifest["config"]["digest"] == f"sha256:{image_id}"
    head = get_manifest(client, repo, "v1", method="HEAD")
    assert head.headers["Docker-Content-Digest"] == response.headers["Docker-Content-Digest"]
    assert int(head.headers["Content-Length"]) == len(response.content)

    engine.podman("rmi", "localhost/lading-test/app:built")
    engine.podman("pull", "--tls-verify=false", target)
    pulled = engine.inspect(target)
    assert pulled["Id"] == image_id
    assert pulled["Digest"] == response.headers["Docker-Content-Digest"]
    assert_files(engine, target, files)


@pytest.mark.parametrize(("push_format", "index_type", "child_type"), [
    ("oci", OCI_INDEX, OCI_MANIFEST), ("v2s2", DOCKER_LIST, DOCKER_MANIFEST)], ids=["oci", "docker-v2s2"])
def test_manifest_push_all_serves_a_multi_arch_index_and_each_platform_pulls(
        engine: Engine, registry: Stack, client: httpx.Client,
        push_format: str, index_type: str, child_type: str) -> None:
    platforms = {"amd64": fresh_files(1), "arm64": fresh_files(1)}
    engine.podman("manifest", "create", "localhost/lading-test/multi:1")
    for architecture, files in platforms.items():
        name = f"localhost/lading-test/multi-{architecture}:1"
        engine.build_scratch_image(name, files, platform=f"linux/{architecture}")
        engine.podman("manifest", "add", "localhost/lading-test/multi:1", f"containers-storage:{name}")
    repo = unique_repo("podman")
    target = f"{registry.hostport}/{repo}:multi"
    engine.podman("manifest", "push", "--all", "--tls-verify=false", "--format", push_format,
                  "localhost/lading-test/multi:1", f"docker://{target}")

    response, index = served_manifest(client, repo, "multi")
    assert response.headers["Content-Type"] == index_type
    assert sorted(d["platform"]["architecture"] for d in index["manifests"]) == sorted(platforms)
    for descriptor in index["manifests"]:
        assert descriptor["mediaType"] == child_type
        child, _ = served_manifest(client, repo, descriptor["digest"])
        assert child.headers["Content-Type"] == child_type
        assert len(child.content) == descriptor["size"]

    engine.podman("rmi", "--all", "--force")
    for architecture, files in platforms.items():
        engine.podman("pull", "--tls-verify=false", "--arch", architecture, target)
        pulled = engine.inspect(target)
        assert pulled["Architecture"] == architecture
        assert_files(engine, target, files)
        engine.podman("rmi", target)


def test_a_big_layer_streams_in_and_pulls_back_byte_identical(
        engine: Engine, registry: Stack, client: httpx.Client) -> None:
    """containers/image sends a layer as one streamed PATCH of unknown length (chunked transfer
    encoding); 24 MiB spans many gRPC messages and, on S3, several parts."""
    files = {"big.bin": os.urandom(24 * 1024 * 1024)}
    engine.build_scratch_image("localhost/lading-test/big:1", files)
    repo = unique_repo("podman")
    target = f"{registry.hostport}/{repo}:big"
    engine.podman("push", "--tls-verify=false", "localhost/lading-test/big:1", target)
    _, manifest = served_manifest(client, repo, "big")
    layer = manifest["layers"][0]
    head = client.head(f"/v2/{repo}/blobs/{layer['digest']}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"]

    engine.podman("rmi", "localhost/lading-test/big:1")
    engine.podman("pull", "--tls-verify=false", target)
    assert_files(engine, target, files)


@pytest.fixture
def overlay_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on overlay storage with partial pulls on (zstd:chunked needs both)."""
    root = tmp_path / "overlay"
    root.mkdir()
    conf = tmp_path / "storage.conf"
    containers = Engine(tmp_path / "engine", storage_conf=conf)
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}"\nrunroot = "{containers.runroot}"\n'
                    '[storage.options]\npull_options = {enable_partial_images = "true", '
                    'use_hard_links = "false", ostree_repos = ""}\n')
    try:
        yield containers
    finally:
        containers.close()


def test_zstd_chunked_image_is_pulled_partially_with_ranged_gets(
        overlay_engine: Engine, registry: Stack, client: httpx.Client) -> None:
    """A zstd:chunked layer is fetched by ranges: first its table of contents (one range), then
    the files' chunks (several ranges in one GET, which Lading answers 206 multipart/byteranges).
    The files must come out whole."""
    engine = overlay_engine
    files = {**fresh_files(3, 100_000), "text.txt": "".join(f"{n}\n" for n in range(50_000)).encode()}
    engine.build_scratch_image("localhost/lading-test/chunked:1", files)
    repo = unique_repo("podman")
    target = f"{registry.hostport}/{repo}:chunked"
    engine.podman("push", "--tls-verify=false", "--compression-format", "zstd:chunked",
                  "localhost/lading-test/chunked:1", target)
    _, manifest = served_manifest(client, repo, "chunked")
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert "io.containers.zstd-chunked.manifest-position" in layer["annotations"]

    engine.podman("rmi", "localhost/lading-test/chunked:1")
    pulled = engine.podman("--log-level", "debug", "pull", "--tls-verify=false", target)
    assert f"Retrieved partial blob {layer['digest']}" in pulled.stderr
    assert_files(engine, target, files)


def _blob_bytes_sent(client: httpx.Client) -> float:
    """Body bytes the gateway has sent for blob GETs (its /metrics)."""
    metrics = client.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.text.splitlines()
               if line.startswith("lading_http_response_bytes_total{")
               and 'route="/v2/{name:path}/blobs/{digest}"' in line and 'method="GET"' in line)


def test_zstd_chunked_pull_fetches_only_the_missing_files(overlay_engine: Engine, tmp_path: Path) -> None:
    """A zstd:chunked pull of a layer whose other files the storage already holds asks for the
    missing files' chunks only, as several ranges in one GET: Lading sends just those bytes
    (206 multipart/byteranges, RFC 9110 section 14.6), not the whole layer, and podman puts the
    files together from the parts and what it holds."""
    engine = overlay_engine
    with Stack(tmp_path / "data", env={"LADING_OBSERVABILITY__GATEWAY_METRICS": "true"}) as registry, \
            httpx.Client(base_url=registry.base_url, timeout=60.0) as client:
        held = fresh_files(2, 100_000)
        engine.build_scratch_image("localhost/lading-test/held:1", held)
        target = f"{registry.hostport}/{unique_repo('podman')}"
        engine.podman("push", "--tls-verify=false", "--compression-format", "zstd:chunked",
                      "localhost/lading-test/held:1", f"{target}:held")
        engine.podman("rmi", "localhost/lading-test/held:1")
        engine.podman("pull", "--tls-verify=false", f"{target}:held")
        # The held files between new ones (COPY copies them in name order): the missing chunks
        # are apart, so they are asked for as several ranges.
        new = list(fresh_files(3, 100_000).values())
        files = {"a.bin": new[0], "b.bin": held["file-0.bin"], "c.bin": new[1], "d.bin": held["file-1.bin"],
                 "e.bin": new[2]}
        engine.build_scratch_image("localhost/lading-test/mixed:1", files)
        engine.podman("push", "--tls-verify=false", "--compression-format", "zstd:chunked",
                      "localhost/lading-test/mixed:1", f"{target}:mixed")
        engine.podman("rmi", "localhost/lading-test/mixed:1")
        _, manifest = served_manifest(client, target.split("/", 1)[1], "mixed")
        (layer,) = manifest["layers"]

        before = _blob_bytes_sent(client)
        pulled = engine.podman("--log-level", "debug", "pull", "--tls-verify=false", f"{target}:mixed")
        sent = _blob_bytes_sent(client) - before
        assert f"Retrieved partial blob {layer['digest']}" in pulled.stderr
        assert_files(engine, f"{target}:mixed", files)
        # About the three new files (and the table of contents), well short of the layer's five.
        assert sent < 0.8 * layer["size"], (sent, layer["size"])


def test_buildah_layer_cache_in_the_registry_is_reused_by_a_fresh_build(
        engine: Engine, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    """CI builds share a layer cache through the registry (`buildah build --layers --cache-to
    --cache-from`): each step is pushed as an image tagged by its 64-hex cache key, and a build
    on an empty storage pulls those steps instead of building them again."""
    context = tmp_path / "context"
    context.mkdir()
    for name, data in fresh_files(2).items():
        (context / name).write_bytes(data)
    (context / "Containerfile").write_text("FROM scratch\nCOPY file-0.bin /a/\nCOPY file-1.bin /b/\n")
    cache = f"{registry.hostport}/{unique_repo('cache')}"
    build = ("build", "--layers", "--tls-verify=false", "-f", str(context / "Containerfile"))
    first = engine.buildah(*build, "--cache-to", cache, "-t", "localhost/lading-test/cached:1", str(context))
    first_id = first.stdout.strip().splitlines()[-1]
    cache_repo = cache.split("/", 1)[1]
    keys = client.get(f"/v2/{cache_repo}/tags/list").json()["tags"]
    assert len(keys) == 2 and all(len(key) == 64 for key in keys)

    engine.podman("rmi", "--all", "--force")
    second = engine.buildah(*build, "--cache-from", cache, "-t", "localhost/lading-test/cached:2", str(context))
    assert second.stdout.count("Cache pulled from remote") == 2, second.stdout
    assert second.stdout.strip().splitlines()[-1] == first_id
