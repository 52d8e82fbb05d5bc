"""Any replica can continue any upload (DESIGN invariant 2), with the planes as separate processes.

One metadata process, two blob processes sharing one blob root, two gateways (gateway 1 talks to
blob 1, gateway 2 to blob 2, both to the one metadata process), all started with
`lading metadata|blob|gateway` and LADING_* variables, the way production runs them. An upload
started and partly written through gateway 1 is finished through gateway 2, and the blob is
pulled back byte-identical from both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import Profile, unique_repo
from tests.support.oci import image, push, random_bytes, sha256, with_digest
from tests.support.stack import (
    LadingProcess,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)


@dataclass
class Replicas:
    gateway_urls: tuple[str, str]


@pytest.fixture(scope="module")
def replicas(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp(f"replicas-{profile.name}")
    # Unix socket paths are limited to ~107 bytes; keep them short and absolute.
    run = Path(root) / "run"
    run.mkdir()
    blob_root = root / "blobs"
    metadata_socket, blob_sockets = run / "m.sock", (run / "b1.sock", run / "b2.sock")
    ports = (free_port(), free_port())
    logs = root / "logs"
    with profile.environment() as profile_env:
        database = profile_env.get("LADING_METADATA__DATABASE_URL", f"sqlite+aiosqlite:///{root}/registry.db")
        metadata = LadingProcess("metadata", lading_command("metadata"), log_dir=logs, cwd=root, env={
            **profile_env,
            "LADING_METADATA__LISTEN": f"unix://{metadata_socket}",
            "LADING_METADATA__DATABASE_URL": database,
        })
        blobs = [
            LadingProcess(f"blob{i + 1}", lading_command("blob"), log_dir=logs, cwd=root, env={
                **profile_env,
                "LADING_BLOB__LISTEN": f"unix://{socket}",
                "LADING_BLOB__FILESYSTEM__ROOT": str(blob_root),
            })
            for i, socket in enumerate(blob_sockets)
        ]
        gateways = [
            LadingProcess(f"gateway{i + 1}", lading_command("gateway"), log_dir=logs, cwd=root, env={
                **profile_env,
                "LADING_GATEWAY__HOST": "127.0.0.1",
                "LADING_GATEWAY__PORT": str(port),
                "LADING_GATEWAY__METADATA_TARGET": f"unix://{metadata_socket}",
                "LADING_GATEWAY__BLOB_TARGET": f"unix://{socket}",
            })
            for i, (port, socket) in enumerate(zip(ports, blob_sockets, strict=True))
        ]
        with running(metadata, *blobs, *gateways):
            wait_until_path_exists(metadata_socket, metadata)
            for process, socket in zip(blobs, blob_sockets, strict=True):
                wait_until_path_exists(socket, process)
            urls = tuple(f"http://127.0.0.1:{port}" for port in ports)
            for process, url in zip(gateways, urls, strict=True):
                wait_until_http_ok(f"{url}/v2/", process)
            yield Replicas(gateway_urls=urls)  # type: ignore[arg-type]


@pytest.fixture
def gateways(replicas: Replicas) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    # Blob GETs may answer 307 to the storage (S3 profile): follow, as registry clients do.
    one, two = (httpx.Client(base_url=url, timeout=60.0, follow_redirects=True) for url in replicas.gateway_urls)
    with one, two:
        yield one, two


def path_of(location: str) -> str:
    """The path and query of an upload Location, so the next request can go to any gateway (as
    behind a load balancer) whether the gateway answered with an absolute or a relative URL."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


OCTET = {"Content-Type": "application/octet-stream"}


def test_upload_started_on_one_replica_finishes_on_another(gateways: tuple[httpx.Client, httpx.Client]) -> None:
    one, two = gateways
    repo = unique_repo("replicas")
    data = random_bytes(3 * 1024 * 1024 + 101)
    cut1, cut2 = 1024 * 1024 + 5, 2 * 1024 * 1024 + 9

    started = one.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    first = one.patch(path_of(started.headers["Location"]), content=data[:cut1],
                      headers={**OCTET, "Content-Range": f"0-{cut1 - 1}"})
    assert first.status_code == 202, first.text

    location = path_of(first.headers["Location"])
    status = two.get(location)
    assert status.status_code == 204, status.text
    assert status.headers["Range"] == f"0-{cut1 - 1}"
    second = two.patch(location, content=data[cut1:cut2], headers={**OCTET, "Content-Range": f"{cut1}-{cut2 - 1}"})
    assert second.status_code == 202, second.text
    assert second.headers["Range"] == f"0-{cut2 - 1}"
    done = two.put(with_digest(path_of(second.headers["Location"]), sha256(data)), content=data[cut2:],
                   headers=OCTET)
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == sha256(data)

    for gateway in (one, two):
        pulled = gateway.get(f"/v2/{repo}/blobs/{sha256(data)}")
        assert pulled.status_code == 200
        assert sha256(pulled.content) == sha256(data)


def test_upload_alternating_between_replicas(gateways: tuple[httpx.Client, httpx.Client]) -> None:
    one, two = gateways
    repo = unique_repo("replicas")
    parts = [random_bytes(n) for n in (1000, 2000, 3000, 4000, 5)]
    data = b"".join(parts)
    location = path_of(one.post(f"/v2/{repo}/blobs/uploads/").headers["Location"])
    offset = 0
    for i, part in enumerate(parts):
        gateway = (one, two)[i % 2]
        response = gateway.patch(location, content=part,
                                 headers={**OCTET, "Content-Range": f"{offset}-{offset + len(part) - 1}"})
        assert response.status_code == 202, f"chunk {i} via gateway {i % 2 + 1}: {response.text}"
        offset += len(part)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = path_of(response.headers["Location"])
    assert two.put(with_digest(location, sha256(data))).status_code == 201
    for gateway in (one, two):
        assert gateway.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_image_pushed_through_one_replica_pulls_from_the_other(gateways: tuple[httpx.Client, httpx.Client]) -> None:
    one, two = gateways
    repo = unique_repo("replicas")
    manifest = image(2)
    push(one, repo, manifest, tag="v1")
    pulled = two.get(f"/v2/{repo}/manifests/v1", headers={"Accept": manifest.media_type})
    assert pulled.status_code == 200
    assert pulled.content == manifest.payload
    for blob in manifest.blobs:
        assert two.get(f"/v2/{repo}/blobs/{blob.digest}").content == blob.data
    assert two.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
