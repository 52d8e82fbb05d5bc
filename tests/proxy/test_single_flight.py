"""Single-flight across replicas, and a crash mid-delivery, on the HA harness of tests/ha (two
gateways, two blob planes, two metadata planes, PostgreSQL and S3), with CNCF Distribution as the
upstream behind a relay that can hold its answers mid-body (tests/support/relay.py).

- Many clients on two gateways pulling the same missing layer through the cache cause one
  upstream fetch, counted in the upstream's access log. The layer is 64 MiB, as the issue asks.
  Clients hash what they receive as it streams (16 bodies of 64 MiB held in memory made the test
  twice as slow); waiters poll the lease less often as they wait (services/metadata/proxy/cache.py),
  so 15 of them do not starve the fetch they wait for.
- The blob plane streaming a cold fetch is killed with SIGKILL while the upstream is held
  mid-body and other clients wait on the blob's fetch lease (services/metadata/fetch_leases.py):
  the leader's body is cut short, the waiters neither hang nor get wrong bytes (they take the
  fetch over through the other blob plane, or fail with an error status), nothing is stored
  under the blob's key but its verified bytes, and a retry succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ha.cluster import Cluster, S3Storage, blob_storage
from tests.proxy.helpers import PREFIX, proxy_config
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.haproxy import haproxy_binary
from tests.support.holding_relay import HoldingRelay

pytestmark = [pytest.mark.clients, pytest.mark.postgres, pytest.mark.s3]

CLIENTS = 16
LAYER_BYTES = 64 * 1024 * 1024


class Site:
    def __init__(self, upstream: Distribution, relay: HoldingRelay, cluster: Cluster, storage: S3Storage) -> None:
        self.upstream, self.relay, self.cluster, self.storage = upstream, relay, cluster, storage


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    haproxy_binary()
    tmp_path = tmp_path_factory.mktemp("single-flight")
    upstream = Distribution(tmp_path / "distribution").start()
    relay = HoldingRelay(upstream.port).start()
    try:
        config = proxy_config(tmp_path / "lading.toml", relay.url)
        with postgres.database() as url, blob_storage(tmp_path) as storage, \
                Cluster(tmp_path / "ha", url, storage, extra_env={"LADING_CONFIG_FILE": str(config)}) as cluster:
            yield Site(upstream, relay, cluster, storage)
    finally:
        relay.stop()
        upstream.stop()


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


def test_sixteen_clients_on_two_gateways_fetch_a_missing_layer_once(site: Site) -> None:
    upstream, cluster, storage = site.upstream, site.cluster, site.storage
    layer = oci.Blob(os.urandom(LAYER_BYTES))
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/shared", layer)
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


def _socket_owner(pids: list[int], local_ports: list[int]) -> int | None:
    """Which of `pids` holds a TCP socket bound to one of `local_ports` on 127.0.0.1 (from /proc)."""
    inodes: set[str] = set()
    wanted = {f"0100007F:{port:04X}" for port in local_ports}
    for table in ("/proc/net/tcp",):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] in wanted:
                inodes.add(fields[9])
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            return pid
    return None


def _get(url: str, path: str, outcomes: list[str], *, started: threading.Event | None = None) -> None:
    """GETs `path` and appends what came of it: the body's digest, an error status and code, or the
    name of the error that cut the body short. `started` is set once some body bytes arrived."""
    try:
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as client, \
                client.stream("GET", path) as response:
            if response.status_code != 200:
                response.read()
                outcomes.append(f"{response.status_code} {response.text[:300]}")
                return
            hasher = hashlib.sha256()
            for chunk in response.iter_bytes():
                hasher.update(chunk)
                if started is not None:
                    started.set()
            outcomes.append(f"sha256:{hasher.hexdigest()}")
    except httpx.HTTPError as error:
        outcomes.append(f"cut: {type(error).__name__}")


def test_blob_plane_killed_mid_fetch_waiters_take_over_or_fail_clearly_and_a_retry_succeeds(site: Site) -> None:
    upstream, relay, cluster, storage = site.upstream, site.relay, site.cluster, site.storage
    layer = oci.Blob(os.urandom(16 * 1024 * 1024))
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/crash", layer)
    path = f"/v2/{PREFIX}team/crash/blobs/{layer.digest}"
    hex_digest = layer.digest.split(":")[1]
    peers_before = set(relay.peers())
    relay.hold_after(4 * 1024 * 1024)  # the upstream is held mid-body
    leader: list[str] = []
    streaming = threading.Event()
    threads = [threading.Thread(target=_get, args=(cluster.gateway_url(0), path, leader),
                                kwargs={"started": streaming})]
    threads[0].start()
    try:
        assert streaming.wait(30), f"the leader received nothing; {leader}"
        # Waiters on both gateways: they find the lease held and wait for it.
        waiters: list[str] = []
        for index in (0, 1):
            threads.append(threading.Thread(target=_get, args=(cluster.gateway_url(index), path, waiters)))
            threads[-1].start()
        time.sleep(0.5)
        blob_pids = [process.pid for process in cluster.processes["blob"]]
        fetching = _socket_owner(blob_pids, sorted(set(relay.peers()) - peers_before) or relay.peers())
        assert fetching is not None, "no blob plane holds a connection to the upstream"
        index = blob_pids.index(fetching)
        cluster.kill("blob", index)
    finally:
        relay.release()
    deadline = time.monotonic() + 40
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.1))
    assert not any(thread.is_alive() for thread in threads), f"clients hang: {leader} {waiters}"
    # The leader's body was cut short: never a complete body of wrong bytes.
    assert len(leader) == 1 and leader[0].startswith("cut:"), leader
    # Waiters got the right bytes (one took the fetch over through the other blob plane) or an
    # error status naming what failed; none got wrong bytes or a body cut short.
    for outcome in waiters:
        assert outcome == layer.digest or outcome[:3] in ("502", "503"), waiters
    # Nothing is stored under the blob's key but its verified bytes.
    stored = [key for key in storage.blob_keys() if hex_digest in key]
    if stored:
        with httpx.Client(base_url=cluster.gateway_url(1), timeout=30, follow_redirects=True) as client:
            assert hashlib.sha256(client.get(path).content).hexdigest() == hex_digest
    cluster.restart("blob", index)
    outcomes: list[str] = []
    _get(cluster.gateway_url(0), path, outcomes)
    assert outcomes == [layer.digest], cluster.logs(40)
