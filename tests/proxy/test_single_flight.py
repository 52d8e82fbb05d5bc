"""Single-flight across replicas: many clients on two gateways (and two blob planes, two metadata
planes, PostgreSQL and S3: the HA harness of tests/ha) pulling the same missing layer through the
cache cause one upstream fetch, counted in the upstream's (CNCF Distribution's) access log.

The layer is 64 MiB, as the issue asks. Clients hash what they receive as it streams (16 bodies
of 64 MiB held in memory made the test twice as slow); waiters poll the lease less often as they
wait (services/metadata/proxy/cache.py), so 15 of them do not starve the fetch they wait for."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.ha.cluster import Cluster, blob_storage
from tests.proxy.helpers import PREFIX, proxy_config
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.haproxy import haproxy_binary

pytestmark = [pytest.mark.clients, pytest.mark.postgres, pytest.mark.s3]

CLIENTS = 16
LAYER_BYTES = 64 * 1024 * 1024


async def _pull_all(urls: list[str], path: str) -> list[str]:
    """Each client's result: the digest of the body it received, or the error status and text."""
    async def one(url: str) -> str:
        async with httpx.AsyncClient(base_url=url, timeout=60, follow_redirects=True) as client, \
                client.stream("GET", path) as response:
            if response.status_code != 200:
                return f"{response.status_code} {(await response.aread()).decode(errors='replace')}"
            hasher = hashlib.sha256()
            async for chunk in response.aiter_bytes():
                hasher.update(chunk)
            return f"sha256:{hasher.hexdigest()}"

    return await asyncio.gather(*(one(url) for url in urls))


def test_sixteen_clients_on_two_gateways_fetch_a_missing_layer_once(postgres, tmp_path: Path) -> None:
    haproxy_binary()
    upstream = Distribution(tmp_path / "distribution").start()
    try:
        layer = oci.Blob(os.urandom(LAYER_BYTES))
        with httpx.Client(base_url=upstream.url, timeout=30) as up:
            oci.push_blob(up, "team/shared", layer)
        config = proxy_config(tmp_path / "lading.toml", upstream.url)
        with postgres.database() as url, blob_storage(tmp_path) as storage, \
                Cluster(tmp_path / "ha", url, storage, extra_env={"LADING_CONFIG_FILE": str(config)}) as cluster:
            path = f"/v2/{PREFIX}team/shared/blobs/{layer.digest}"
            urls = [cluster.gateway_url(i % 2) for i in range(CLIENTS)]
            results = asyncio.run(_pull_all(urls, path))
            assert [r for r in results if r != layer.digest] == []
            fetches = upstream.requests("GET", f"/v2/team/shared/blobs/{layer.digest}")
            assert fetches == 1, f"{fetches} upstream fetches for {CLIENTS} clients"
            # Stored once, under its digest, in the shared bucket.
            assert [key for key in storage.blob_keys() if layer.digest.split(":")[1] in key] != []
            # And served from the cache afterwards, through either gateway.
            again = asyncio.run(_pull_all([cluster.gateway_url(1)], path))
            assert again == [layer.digest]
            assert upstream.requests("GET", f"/v2/team/shared/blobs/{layer.digest}") == 1
    finally:
        upstream.stop()
