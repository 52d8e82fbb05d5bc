"""A cold pull through the cache on S3 is not paced by S3 (fetch.proto's `tail_when_verified`):
on the HA harness (PostgreSQL, SeaweedFS S3; one replica of each plane), with the blob plane's
S3 behind a relay that can hold S3's answers (tests/support/holding_relay.py):

- the client receives the whole blob while S3 is held, i.e. before the blob is committed, and
  the blob is linked in the repository only once S3 took it (then a pull is served locally);
- a commit that fails after the client got its bytes (S3 gone) leaves the blob unlinked and
  unstored, and a retry once S3 is back fetches, stores and links it.

Wrong upstream bodies on S3 (never complete at the client, nothing stored): tests/blob/
test_fetch_behind.py and tests/proxy/test_single_flight.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.ha.cluster import Cluster, S3Storage, blob_storage
from tests.proxy.helpers import PREFIX, proxy_config
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.haproxy import haproxy_binary
from tests.support.holding_relay import HoldingRelay
from tests.support.postgres import query

pytestmark = [pytest.mark.clients, pytest.mark.postgres, pytest.mark.s3]

LAYER_BYTES = 12 * 1024 * 1024


class Site:
    def __init__(self, upstream: Distribution, s3: HoldingRelay, cluster: Cluster, storage: S3Storage,
                 database_url: str) -> None:
        self.upstream, self.s3, self.cluster, self.storage = upstream, s3, cluster, storage
        self.database_url = database_url


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    haproxy_binary()
    tmp_path = tmp_path_factory.mktemp("cold-fetch-s3")
    upstream = Distribution(tmp_path / "distribution").start()
    try:
        config = proxy_config(tmp_path / "lading.toml", upstream.url)
        with postgres.database() as url, blob_storage(tmp_path) as storage:
            s3 = HoldingRelay(int(storage.seaweed.endpoint.rsplit(":", 1)[1])).start()
            env = {"LADING_CONFIG_FILE": str(config), "LADING_BLOB__S3__READ_TIMEOUT_SECONDS": "5",
                   "LADING_BLOB__S3__PART_SIZE_BYTES": str(5 * 1024 * 1024)}
            blob_env = {"LADING_BLOB__S3__ENDPOINT": f"127.0.0.1:{s3.port}"}
            cluster = Cluster(tmp_path / "ha", url, storage, replicas=1, extra_env=env)
            # Only the blob plane writes through the relay (the gateway presigns with the real endpoint).
            original = cluster._env
            cluster._env = lambda plane, index: {**original(plane, index),  # type: ignore[method-assign]
                                                 **(blob_env if plane == "blob" else {})}
            try:
                with cluster:
                    yield Site(upstream, s3, cluster, storage, url)
            finally:
                s3.stop()
    finally:
        upstream.stop()


def _fetch_over(site: Site, digest: str) -> None:
    """Waits until the blob's fetch lease was handed back (EndBlobFetch: the fetch is over)."""
    deadline = time.monotonic() + 30
    while query(site.database_url, "SELECT 1 FROM proxy_fetch_leases WHERE digest = $1", digest):
        assert time.monotonic() < deadline, "the fetch lease was never handed back"
        time.sleep(0.1)


def _linked(site: Site, digest: str) -> bool:
    return bool(query(site.database_url, "SELECT 1 FROM repository_blobs WHERE digest = $1", digest))


def _stored(site: Site, digest: str) -> bool:
    return any(digest.split(":")[1] in key for key in site.storage.blob_keys())


def _pull_while_s3_is_held(site: Site, path: str) -> tuple[bytes, httpx.Response, httpx.Client]:
    """Streams `path`, holding S3's answers once the first bytes arrived (the fetch's upload
    session exists by then); returns the whole body read while S3 is held, with the response
    still open (the gateway ends it once the blob is recorded)."""
    client = httpx.Client(base_url=site.cluster.gateway_url(0), timeout=10)
    response = client.send(client.build_request("GET", path), stream=True)
    assert response.status_code == 200, response.read()
    length = int(response.headers["content-length"])
    body = bytearray()
    chunks = response.iter_raw()
    body += next(chunks)
    site.s3.hold_after(0)
    while len(body) < length:
        body += next(chunks)
    return bytes(body), response, client


def test_the_client_gets_the_blob_before_s3_committed_it(site: Site) -> None:
    layer = oci.Blob(os.urandom(LAYER_BYTES))
    with httpx.Client(base_url=site.upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/app", layer)
    path = f"/v2/{PREFIX}team/app/blobs/{layer.digest}"
    try:
        body, response, client = _pull_while_s3_is_held(site, path)
        assert oci.Blob(body).digest == layer.digest
        time.sleep(0.5)
        assert not _linked(site, layer.digest) and not _stored(site, layer.digest)
    finally:
        site.s3.release()
    response.close()
    client.close()
    _fetch_over(site, layer.digest)
    assert _linked(site, layer.digest) and _stored(site, layer.digest)
    with httpx.Client(base_url=site.cluster.gateway_url(0), timeout=30, follow_redirects=True) as again:
        assert oci.Blob(again.get(path).content).digest == layer.digest
    assert site.upstream.requests("GET", f"/v2/team/app/blobs/{layer.digest}") == 1


def test_a_commit_failing_after_the_client_got_its_bytes_links_nothing_and_a_retry_works(site: Site) -> None:
    layer = oci.Blob(os.urandom(LAYER_BYTES))
    with httpx.Client(base_url=site.upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/lib", layer)
    path = f"/v2/{PREFIX}team/lib/blobs/{layer.digest}"
    port = site.s3.port
    try:
        body, response, client = _pull_while_s3_is_held(site, path)
        assert oci.Blob(body).digest == layer.digest
        site.s3.cut()  # S3 gone mid-upload: the upload fails, the commit never happens
        response.close()
        client.close()
        _fetch_over(site, layer.digest)
        assert not _linked(site, layer.digest) and not _stored(site, layer.digest)
    finally:
        site.s3.stop()
        # S3 back, at the address the blob plane knows.
        revived = HoldingRelay(site.s3.target_port)
        revived.port = port
        site.s3 = revived.start()
    with httpx.Client(base_url=site.cluster.gateway_url(0), timeout=30, follow_redirects=True) as again:
        assert oci.Blob(again.get(path).content).digest == layer.digest
    _fetch_over(site, layer.digest)  # the client may have its bytes before the blob is linked
    assert _linked(site, layer.digest) and _stored(site, layer.digest)


def test_a_head_or_ranged_get_leading_the_fetch_answers_once_the_blob_is_linked(site: Site) -> None:
    head_layer, ranged_layer = oci.Blob(os.urandom(LAYER_BYTES)), oci.Blob(os.urandom(LAYER_BYTES))
    with httpx.Client(base_url=site.upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/head", head_layer)
        oci.push_blob(up, "team/head", ranged_layer)
    with httpx.Client(base_url=site.cluster.gateway_url(0), timeout=30, follow_redirects=True) as client:
        head = client.head(f"/v2/{PREFIX}team/head/blobs/{head_layer.digest}")
        assert head.status_code == 200 and int(head.headers["content-length"]) == LAYER_BYTES
        assert _linked(site, head_layer.digest) and _stored(site, head_layer.digest)
        ranged = client.get(f"/v2/{PREFIX}team/head/blobs/{ranged_layer.digest}", headers={"range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == ranged_layer.data[10:20]
        assert _linked(site, ranged_layer.digest)
