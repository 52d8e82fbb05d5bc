"""Coherent manifest caches inside a site (issue 15, item 5), with real processes on PostgreSQL:
two metadata replicas, two gateways, each gateway on its own replica (tests/regions/site.py).

- A tag moved through gateway 1 is served at its new digest by gateway 2, which had the old one
  cached: the gateways' fallback TTL is an hour and replica B polls the feed once a minute, so
  only PostgreSQL NOTIFY → B's change feed → gateway 2's cache feed can explain it. Checked over
  many moves, then for a tag deleted, a manifest deleted, and the tag list.
- Both gateways say the feed is up (`lading_gateway_cache_feed_up` 1); with metadata replica B
  stopped, gateway 2 says it is down (0) and falls back to the TTL, and is up again once B is back.

Speed is measured by `python -m bench.coherence` (docs/benchmarks.md), never asserted here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.regions.site import Site, site
from tests.support.oci import Manifest as OciManifest
from tests.support.oci import get_manifest, image, push, push_manifest_only, render

pytestmark = pytest.mark.postgres

# Deadline of waits that must succeed (generous: a loaded CI machine); the bound is not the point.
DEADLINE_SECONDS = 10.0
MOVES = 20


@pytest.fixture(scope="module")
def coherent_site(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # noqa: ANN001
    with postgres.database() as url, site(tmp_path_factory.mktemp("coherence"), url) as running_site:
        yield running_site


@pytest.fixture
def clients(coherent_site: Site) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    one, two = (httpx.Client(base_url=u, timeout=30.0) for u in coherent_site.gateway_urls)
    with one, two:
        yield one, two


def variant(base: OciManifest, n: int) -> OciManifest:
    """`base` with an annotation: a new digest over the same blobs."""
    document = {**base.json, "annotations": {"test.variant": str(n)}}
    return OciManifest(render(document), base.media_type, blobs=base.blobs)


def eventually(check: Callable[[], bool]) -> bool:
    end = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.005)
    return check()


def digest_of(client: httpx.Client, repo: str, reference: str) -> str | None:
    response = get_manifest(client, repo, reference)
    return response.headers.get("docker-content-digest") if response.status_code == 200 else None


def gauge(metrics_url: str, name: str) -> float | None:
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_tag_moved_through_one_gateway_is_served_moved_by_the_other(
    coherent_site: Site, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    one, two = clients
    for url in coherent_site.metrics_urls:
        assert eventually(lambda u=url: gauge(u, "lading_gateway_cache_feed_up") == 1.0)
    repo = f"coherence/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    assert digest_of(two, repo, "latest") == base.digest  # now in gateway 2's cache
    for n in range(MOVES):
        moved = variant(base, n)
        assert push_manifest_only(one, repo, "latest", moved).status_code == 201
        assert eventually(lambda m=moved: digest_of(two, repo, "latest") == m.digest), f"move {n}: stale"
        # Cached again in gateway 2 (by tag and by digest, GET and HEAD) for the next move.
        assert get_manifest(two, repo, moved.digest, method="HEAD").status_code == 200

    tags = two.get(f"/v2/{repo}/tags/list").json()["tags"]
    assert tags == ["latest"]
    assert push_manifest_only(one, repo, "stable", base).status_code == 201
    assert eventually(lambda: two.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest", "stable"])

    assert one.delete(f"/v2/{repo}/manifests/stable").status_code == 202  # a tag deleted
    assert eventually(lambda: get_manifest(two, repo, "stable").status_code == 404)
    last = digest_of(two, repo, "latest")
    assert last is not None
    assert one.delete(f"/v2/{repo}/manifests/{last}").status_code == 202  # a manifest deleted
    assert eventually(lambda: get_manifest(two, repo, "latest").status_code == 404)
    assert eventually(lambda: get_manifest(two, repo, last, method="HEAD").status_code == 404)


def test_without_the_feed_the_gateway_says_so_and_comes_back(
    coherent_site: Site, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    one, two = clients
    metrics_two = coherent_site.metrics_urls[1]
    replica_b = coherent_site.processes["metadata-b"]
    assert eventually(lambda: gauge(metrics_two, "lading_gateway_cache_feed_up") == 1.0)
    replica_b.stop()
    try:
        assert eventually(lambda: gauge(metrics_two, "lading_gateway_cache_feed_up") == 0.0)
    finally:
        replica_b.start()
    assert eventually(lambda: gauge(metrics_two, "lading_gateway_cache_feed_up") == 1.0)
    # Back and coherent: a move through gateway 1 shows in gateway 2.
    repo = f"coherence/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="t")
    assert eventually(lambda: digest_of(two, repo, "t") == base.digest)
    moved = variant(base, 1)
    assert push_manifest_only(one, repo, "t", moved).status_code == 201
    assert eventually(lambda: digest_of(two, repo, "t") == moved.digest)
    assert json.loads(get_manifest(two, repo, "t").content)["annotations"] == {"test.variant": "1"}
