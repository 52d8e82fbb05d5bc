"""Read-your-writes through every gateway's manifest cache (issue 15, items 4-5), with real
processes on PostgreSQL: two metadata replicas, two gateways (tests/regions/site.py), the
gateways' fallback TTL an hour, so only the change feed and its acknowledgements can make
gateway 2 drop what it cached. Gateway 2 reaches its metadata replica through a `SlowLink`
(tests/support/slowlink.py): with a delay, it hears of every change late.

- A push through gateway 1 answers 201 only once gateway 2 acknowledged the change: an immediate
  GET of the moved tag through gateway 2 answers the new digest every time, even with gateway 2
  hearing of changes 30 ms late (without the acknowledgements every such read is stale).
- A gateway that stops acknowledging (SIGSTOP, or a link so slow that its lease cannot be
  renewed) holds writes at most `ack_wait_seconds + lease_seconds`, and while it has no lease it
  does not serve the entries it kept as coherent: right after the write, it answers the new digest.
  Once it acknowledges again it is coherent again (it dropped its cache first).

Speed (push latency with and without the wait) is measured by `python -m bench.coherence
--read-your-writes` (docs/benchmarks.md), never asserted here beyond the bound's order of magnitude.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.regions.site import Site, site
from tests.regions.test_coherence import digest_of, eventually, gauge, variant
from tests.support.oci import image, push, push_manifest_only
from tests.support.stack import free_port

pytestmark = pytest.mark.postgres

ACK_WAIT_SECONDS = 0.5
LEASE_SECONDS = 1.0
# The bound of a write's wait, plus room for a loaded machine (the point is "not stalled": a
# stalled write would wait for the gateway forever, or for the client's 30 s timeout).
BOUND_SECONDS = ACK_WAIT_SECONDS + LEASE_SECONDS + 5.0
ROUNDS = 30


@pytest.fixture(scope="module")
def acked_site(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:  # noqa: ANN001
    metrics_port = free_port()
    env = {"LADING_METADATA__CHANGE_FEED__ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
           "LADING_METADATA__CHANGE_FEED__LEASE_SECONDS": str(LEASE_SECONDS)}
    with postgres.database() as url, site(
        tmp_path_factory.mktemp("acks"), url, metadata_env=env, slow_link_b=True,
        metadata_a_env={"LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"},
    ) as running:
        yield running, f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture
def clients(acked_site: tuple[Site, str]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    running, _ = acked_site
    assert running.link_b is not None
    running.link_b.delay = 0.0
    one, two = (httpx.Client(base_url=u, timeout=30.0) for u in running.gateway_urls)
    with one, two:
        for url in running.metrics_urls:
            assert eventually(lambda u=url: gauge(u, "lading_gateway_cache_coherent") == 1.0)
        yield one, two
    running.link_b.delay = 0.0


def test_a_push_is_never_stale_through_the_other_gateway(
    acked_site: tuple[Site, str], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    running, metadata_metrics = acked_site
    assert running.link_b is not None
    one, two = clients
    repo = f"acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    assert digest_of(two, repo, "latest") == base.digest
    waits_before = gauge(metadata_metrics, "lading_change_ack_waits_total") or 0.0
    running.link_b.delay = 0.03  # gateway 2 hears of every change 30 ms after it committed
    stale = []
    for n in range(ROUNDS):
        moved = variant(base, n)
        assert push_manifest_only(one, repo, "latest", moved).status_code == 201
        seen = digest_of(two, repo, "latest")  # at once, through the other gateway
        if seen != moved.digest:
            stale.append((n, seen))
        # Gateway 2 keeps it cached again (by tag) for the next round.
        assert eventually(lambda m=moved: digest_of(two, repo, "latest") == m.digest)
    assert stale == []
    # The pushes did wait for the acknowledgements (the mechanism, not luck, kept the reads fresh).
    assert (gauge(metadata_metrics, "lading_change_ack_waits_total") or 0.0) >= waits_before + ROUNDS / 2

    # Deletes wait too: a deleted tag is gone through gateway 2 at once.
    assert push_manifest_only(one, repo, "doomed", base).status_code == 201
    assert digest_of(two, repo, "doomed") == base.digest
    assert one.delete(f"/v2/{repo}/manifests/doomed").status_code == 202
    assert digest_of(two, repo, "doomed") is None


def test_a_gateway_that_stops_acknowledging_holds_writes_only_within_the_bound(
    acked_site: tuple[Site, str], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    running, _ = acked_site
    assert running.link_b is not None
    one, two = clients
    repo = f"acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    assert digest_of(two, repo, "latest") == base.digest  # cached by gateway 2, as coherent

    # 1. Gateway 2 frozen: it acknowledges nothing.
    gateway2 = running.processes["gateway2"]
    os.killpg(gateway2.pid, signal.SIGSTOP)
    try:
        took = []
        for n in (1, 2):
            started = time.monotonic()
            assert push_manifest_only(one, repo, "latest", variant(base, n)).status_code == 201
            took.append(time.monotonic() - started)
    finally:
        os.killpg(gateway2.pid, signal.SIGCONT)
    assert max(took) < BOUND_SECONDS, took
    # Its lease ran out while it was frozen: the entry it kept is not served, whatever its feed says.
    assert digest_of(two, repo, "latest") == variant(base, 2).digest
    assert eventually(lambda: gauge(running.metrics_urls[1], "lading_gateway_cache_coherent") == 1.0)

    # 2. Gateway 2 alive but hearing of everything 2 s late: it cannot keep a lease (each grant
    # arrives after it ran out), so writes do not wait for it past the bound, and it serves no
    # entry kept as coherent.
    assert digest_of(two, repo, "latest") == variant(base, 2).digest  # cached as coherent again
    running.link_b.delay = 2.0
    started = time.monotonic()
    assert push_manifest_only(one, repo, "latest", variant(base, 3)).status_code == 201
    assert time.monotonic() - started < BOUND_SECONDS
    assert digest_of(two, repo, "latest") == variant(base, 3).digest
    assert eventually(lambda: gauge(running.metrics_urls[1], "lading_gateway_cache_coherent") == 0.0)

    # 3. Back to a fast link: coherent again, and every push is seen at once.
    running.link_b.delay = 0.0
    assert eventually(lambda: gauge(running.metrics_urls[1], "lading_gateway_cache_coherent") == 1.0)
    for n in range(4, 8):
        assert digest_of(two, repo, "latest") is not None  # cache it
        moved = variant(base, n)
        assert push_manifest_only(one, repo, "latest", moved).status_code == 201
        assert digest_of(two, repo, "latest") == moved.digest
