"""Any replica can continue any upload (DESIGN invariant 2), with the planes as separate processes.

One metadata process, two blob processes sharing one blob root, two gateways (gateway 1 talks to
blob 1, gateway 2 to blob 2, both to the one metadata process), all started with
`lading metadata|blob|gateway` and LADING_* variables, the way production runs them (the
`replicas` fixture of conftest.py, shared with test_manifest_cache_replicas.py). An upload
started and partly written through gateway 1 is finished through gateway 2, and the blob is
pulled back byte-identical from both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.integration.conftest import unique_repo
from tests.support.oci import image, push, random_bytes, sha256, with_digest


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
