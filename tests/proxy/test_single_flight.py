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
- Fetch leases are renewed by their holder (services/common/lease_keeper.py; a short lifetime
  here, `LEASE_SECONDS`): a fetch held up for longer than the lifetime keeps its lease (one
  upstream fetch), and a gateway killed with SIGKILL mid-fetch stops renewing, so a client on
  the other gateway takes the fetch over once its lease lapses (not after the old 120 s).
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
from tests.support.postgres import query

pytestmark = [pytest.mark.clients, pytest.mark.postgres, pytest.mark.s3]

CLIENTS = 16
LAYER_BYTES = 64 * 1024 * 1024
# The fetch lease's lifetime (proxy.fetch_lease_seconds), short so that a lapse costs seconds.
LEASE_SECONDS = 3.0


class Site:
    def __init__(self, upstream: Distribution, relay: HoldingRelay, cluster: Cluster, storage: S3Storage,
                 database_url: str) -> None:
        self.upstream, self.relay, self.cluster, self.storage = upstream, relay, cluster, storage
        self.database_url = database_url


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    haproxy_binary()
    tmp_path = tmp_path_factory.mktemp("single-flight")
    upstream = Distribution(tmp_path / "distribution").start()
    relay = HoldingRelay(upstream.port).start()
    try:
        config = proxy_config(tmp_path / "lading.toml", relay.url, extra=f"fetch_lease_seconds = {LEASE_SECONDS}\n")
        with postgres.database() as url, blob_storage(tmp_path) as storage, \
                Cluster(tmp_path / "ha", url, storage, extra_env={"LADING_CONFIG_FILE": str(config)}) as cluster:
            yield Site(upstream, relay, cluster, storage, url)
    finally:
        relay.stop()
        upstream.stop()


async def _pull_all(urls: list[str], path: str, *, retry_for: float = 0.0) -> list[str]:
    """Each client's result: the digest of the body it received, or the error status and text.
    `retry_for`: seconds a client keeps retrying a 503 (the cache's "being fetched by another
    request; retry shortly", which a waiter gets once its wait, a few seconds in the HA harness,
    runs out before the leader's fetch ends), as Docker and containerd retry a layer."""
    async def one(url: str) -> str:
        deadline = asyncio.get_running_loop().time() + retry_for
        async with httpx.AsyncClient(base_url=url, timeout=60, follow_redirects=True) as client:
            while True:
                async with client.stream("GET", path) as response:
                    if response.status_code == 503 and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.5)
                        continue
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
    results = asyncio.run(_pull_all(urls, path, retry_for=60))
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


def _start_held_leader(relay, url: str, path: str) -> tuple[threading.Thread, list[str]]:
    """Holds the upstream mid-body, starts a client GETting `path` through `url` and returns once
    its first bytes arrived: the fetch is in flight and its lease held. Returns the client's
    thread and the list its outcome lands in."""
    relay.hold_after(4 * 1024 * 1024)
    leader: list[str] = []
    streaming = threading.Event()
    thread = threading.Thread(target=_get, args=(url, path, leader), kwargs={"started": streaming})
    thread.start()
    if not streaming.wait(30):
        relay.release()
        thread.join(30)
        raise AssertionError(f"the leader received nothing; {leader}")
    return thread, leader


def test_blob_plane_killed_mid_fetch_waiters_take_over_or_fail_clearly_and_a_retry_succeeds(site: Site) -> None:
    upstream, relay, cluster, storage = site.upstream, site.relay, site.cluster, site.storage
    layer = oci.Blob(os.urandom(16 * 1024 * 1024))
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/crash", layer)
    path = f"/v2/{PREFIX}team/crash/blobs/{layer.digest}"
    hex_digest = layer.digest.split(":")[1]
    peers_before = set(relay.peers())
    leading, leader = _start_held_leader(relay, cluster.gateway_url(0), path)
    threads = [leading]
    try:
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


def _get_until_served(url: str, path: str, outcomes: list[tuple[float, str]], *, give_up_after: float) -> None:
    """GETs `path` again while the gateway answers 503 (another request's fetch still holds the
    blob's lease past the gateway's wait), as clients do; appends (when it ended, the outcome)."""
    deadline = time.monotonic() + give_up_after
    while True:
        outcome: list[str] = []
        _get(url, path, outcome)
        if not outcome[0].startswith("503") or time.monotonic() > deadline:
            outcomes.append((time.time(), outcome[0]))
            return


def _pushed(site: Site, repository: str) -> tuple[oci.Blob, str]:
    layer = oci.Blob(os.urandom(16 * 1024 * 1024))
    with httpx.Client(base_url=site.upstream.url, timeout=30) as up:
        oci.push_blob(up, repository, layer)
    return layer, f"/v2/{PREFIX}{repository}/blobs/{layer.digest}"


def _lease_expiry(site: Site, digest: str) -> float:
    rows = query(site.database_url, "SELECT expires_at FROM proxy_fetch_leases WHERE digest = $1", digest)
    assert rows, f"no fetch lease on {digest}"
    return float(rows[0][0].timestamp())


def test_a_ranged_get_leading_a_cold_fetch_answers_206_with_its_range(site: Site) -> None:
    """Streamed through the gateway (S3: no direct-read server), a ranged GET that leads the fetch
    waits for the whole blob to be stored, then answers its range (206, or 307 to S3, which does)."""
    layer = oci.Blob(os.urandom(1024 * 1024))
    with httpx.Client(base_url=site.upstream.url, timeout=30) as up:
        oci.push_blob(up, "team/resumed", layer)
    path = f"/v2/{PREFIX}team/resumed/blobs/{layer.digest}"
    with httpx.Client(base_url=site.cluster.gateway_url(0), timeout=30, follow_redirects=True) as client:
        ranged = client.get(path, headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206, ranged.text
        assert ranged.headers["content-range"] == f"bytes 1000-1999/{layer.size}"
        assert ranged.content == layer.data[1000:2000]
    assert site.upstream.requests("GET", f"/v2/team/resumed/blobs/{layer.digest}") == 1


def test_a_fetch_held_up_longer_than_its_lease_lifetime_keeps_the_lease_one_upstream_fetch(site: Site) -> None:
    upstream, relay, cluster = site.upstream, site.relay, site.cluster
    layer, path = _pushed(site, "team/slow")
    upstream_path = f"/v2/team/slow/blobs/{layer.digest}"
    leading, leader = _start_held_leader(relay, cluster.gateway_url(0), path)
    threads = [leading]
    waiters: list[tuple[float, str]] = []
    try:
        for index in (0, 1):
            threads.append(threading.Thread(target=_get_until_served, args=(cluster.gateway_url(index), path, waiters),
                                            kwargs={"give_up_after": 30}))
            threads[-1].start()
        # Held for longer than the lease's lifetime: renewed, the lease keeps the waiters waiting.
        time.sleep(LEASE_SECONDS * 1.5)
        assert relay.requests("GET", upstream_path) == 1, "a waiter took the fetch over from a live holder"
    finally:
        relay.release()
    for thread in threads:
        thread.join(40)
    assert not any(thread.is_alive() for thread in threads), f"clients hang: {leader} {waiters}"
    assert leader == [layer.digest]
    assert [outcome for _, outcome in waiters] == [layer.digest] * 2
    assert upstream.requests("GET", upstream_path) == 1
    assert relay.requests("GET", upstream_path) == 1


def test_gateway_killed_mid_fetch_its_lease_lapses_and_a_client_on_the_other_gateway_takes_over(site: Site) -> None:
    relay, cluster = site.relay, site.cluster
    layer, path = _pushed(site, "team/orphan")
    upstream_path = f"/v2/team/orphan/blobs/{layer.digest}"
    leading, leader = _start_held_leader(relay, cluster.gateway_url(0), path)
    waiter: list[tuple[float, str]] = []
    waiting = threading.Thread(target=_get_until_served, args=(cluster.gateway_url(1), path, waiter),
                               kwargs={"give_up_after": 60})
    try:
        waiting.start()
        # The live holder keeps its lease past the lifetime (renewed): the waiter still waits.
        time.sleep(LEASE_SECONDS * 1.5)
        assert waiter == [] and relay.requests("GET", upstream_path) == 1
        cluster.kill("gateway", 0)
        killed = time.time()
        # The dead gateway renews no more: this is when its lease lapses.
        lapses = _lease_expiry(site, layer.digest)
    finally:
        relay.release()
    waiting.join(60)
    leading.join(30)
    try:
        assert not waiting.is_alive(), "the client on the other gateway hangs"
        (served, outcome), = waiter
        assert outcome == layer.digest, outcome
        # Through once the dead holder's lease lapsed (not before: nothing else let it through),
        # and soon after: the lifetime, not the old 120 s.
        assert served >= lapses, (served - killed, lapses - killed)
        assert served - killed < LEASE_SECONDS + 7, served - killed
        print(f"take-over: served {served - killed:.2f} s after the holder's SIGKILL "
              f"(its lease lapsed {lapses - killed:.2f} s after it)")
    finally:
        cluster.restart("gateway", 0)
