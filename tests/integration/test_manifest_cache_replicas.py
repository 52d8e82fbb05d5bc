"""The gateway's manifest cache across replicas (gateway.manifest_cache): two gateways, one
metadata plane (the `replicas` fixture of conftest.py).

- A write through a gateway is visible through that same gateway at once (its own entries for
  the repository are dropped).
- A delete through ANOTHER gateway is visible everywhere once the documented TTL has passed: the
  test waits exactly that bound (plus scheduling slack) and then requires 404, so it checks the
  documented staleness bound, not a speed.
"""

from __future__ import annotations

import time

import httpx

from gateway.manifest_cache import DEFAULT_TTL_SECONDS
from tests.integration.conftest import unique_repo
from tests.support.oci import get_manifest, image, push

SLACK_SECONDS = 0.5


def test_own_writes_are_seen_at_once(gateways: tuple[httpx.Client, httpx.Client]) -> None:
    one, _ = gateways
    repo = unique_repo("cache")
    first, second = image(layers=1), image(layers=1)
    push(one, repo, first, tag="moving")
    assert get_manifest(one, repo, "moving").headers["Docker-Content-Digest"] == first.digest  # now cached
    push(one, repo, second, tag="moving")
    assert get_manifest(one, repo, "moving").headers["Docker-Content-Digest"] == second.digest
    assert one.delete(f"/v2/{repo}/manifests/{second.digest}").status_code == 202
    assert get_manifest(one, repo, "moving").status_code == 404
    assert get_manifest(one, repo, second.digest, method="HEAD").status_code == 404


def test_delete_through_another_gateway_shows_within_the_ttl(
    gateways: tuple[httpx.Client, httpx.Client],
) -> None:
    one, two = gateways
    repo = unique_repo("cache")
    manifest = image(layers=1)
    push(one, repo, manifest, tag="v1")
    for reference in ("v1", manifest.digest):
        for method in ("GET", "HEAD"):
            assert get_manifest(one, repo, reference, method=method).status_code == 200  # cached in one
    assert two.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    assert get_manifest(two, repo, "v1").status_code == 404
    time.sleep(DEFAULT_TTL_SECONDS + SLACK_SECONDS)
    for reference in ("v1", manifest.digest):
        for method in ("GET", "HEAD"):
            assert get_manifest(one, repo, reference, method=method).status_code == 404, (reference, method)
