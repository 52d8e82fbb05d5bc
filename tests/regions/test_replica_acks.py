"""Read-your-writes through every gateway's cache in a REPLICA region (issue 15, item 4), with two
real regions (tests/regions/two_regions.py: eu the primary, us a replica region on eu's hot
standby; each region with its own metadata plane and two gateways). Every gateway's fallback TTL
is an hour: only the change feed and its acknowledgements can make a gateway drop what it cached.

- A push through us's gateway 1 answers 201 only once us's gateway 2 acknowledged the change:
  an immediate GET of the moved tag through gateway 2 answers the new digest every time (without
  the replica region's wait, the 201 races us's feed and some reads are stale).
- us's gateways acknowledge through us's metadata plane to the primary region's database (rows
  with region `us`), and eu's writes wait only for eu's gateways: with both of us's gateways
  frozen, eu's pushes fence neither of them and give up on neither.
- A frozen gateway of us holds us's writes at most the bound, and serves the new digest once it
  runs again (its lease ran out: it dropped its cache).
- Cut off from the primary region, us's gateways cannot renew their leases and fall back to the
  short TTL (`lading_gateway_cache_coherent` 0); when the link is back they are coherent again.

Write latency in the replica region is measured by `python -m bench.regions` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.metadata.changes import acks
from tests.regions.test_coherence import digest_of, eventually, gauge, variant
from tests.regions.two_regions import Regions, two_regions
from tests.support.haproxy import haproxy_binary
from tests.support.oci import image, push, push_manifest_only
from tests.support.stack import child_env, lading_command

pytestmark = pytest.mark.postgres
ACK_WAIT_SECONDS = 0.5
LEASE_SECONDS = 1.0
# The bound of a write's wait, plus room for a loaded machine and the trip between regions.
BOUND_SECONDS = ACK_WAIT_SECONDS + LEASE_SECONDS + 5.0
ROUNDS = 30
FALLBACK_TTL_SECONDS = 3600


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    haproxy_binary()  # skip (or fail with LADING_TEST_REQUIRE_CLIENTS=1) before starting anything
    env = {"LADING_METADATA__CHANGE_FEED__ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
           "LADING_METADATA__CHANGE_FEED__LEASE_SECONDS": str(LEASE_SECONDS)}
    with two_regions(tmp_path_factory.mktemp("replica-acks"), eu_env=env, us_env=env, gateway_env={
        "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": str(FALLBACK_TTL_SECONDS),
        "LADING_GATEWAY__CACHE_FEED__COHERENT_TTL_SECONDS": str(FALLBACK_TTL_SECONDS),
    }) as built:
        yield built


def _coherent(regions: Regions) -> None:
    for url in (*regions.eu.gateway_metrics, *regions.us.gateway_metrics):
        assert eventually(lambda u=url: gauge(u, "lading_gateway_cache_coherent") == 1.0), url


@pytest.fixture
def us_clients(regions: Regions) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    _coherent(regions)
    one, two = (httpx.Client(base_url=u, timeout=30.0) for u in regions.us.gateway_urls)
    with one, two:
        yield one, two


def _standby_caught_up(regions: Regions) -> None:
    position = regions.pair.primary.psql("SELECT pg_current_wal_flush_lsn()")
    deadline = time.monotonic() + 30
    while regions.pair.standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{position}'::pg_lsn") != "t":
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.05)


def _metadata_gauge(address: str, name: str) -> float:
    return gauge(f"http://{address}/metrics", name) or 0.0


def _fences(regions: Regions, region: str) -> dict[str, int]:
    """The fence of each of `region`'s subscribers, in the primary region's table (0: none)."""
    rows = regions.pair.primary.psql(
        f"SELECT subscriber, fence FROM change_subscribers WHERE region = '{region}'", database="lading")
    return {name: int(fence) for name, fence in (row.split("|") for row in rows.splitlines())}


def test_a_push_in_the_replica_region_is_never_stale_through_its_other_gateway(
    regions: Regions, us_clients: tuple[httpx.Client, httpx.Client]
) -> None:
    one, two = us_clients
    repo = f"replica-acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    assert eventually(lambda: digest_of(two, repo, "latest") == base.digest)  # cached by gateway 2
    waits_before = _metadata_gauge(regions.us.metrics_address, "lading_change_ack_waits_total")
    stale, took = [], []
    for n in range(ROUNDS):
        moved = variant(base, n)
        started = time.monotonic()
        assert push_manifest_only(one, repo, "latest", moved).status_code == 201
        took.append(time.monotonic() - started)
        seen = digest_of(two, repo, "latest")  # at once, through the region's other gateway
        if seen != moved.digest:
            stale.append((n, seen))
        # Gateway 2 keeps it cached again (by tag) for the next round.
        assert eventually(lambda m=moved: digest_of(two, repo, "latest") == m.digest)
    took.sort()
    print(f"replica-region tag moves: {len(stale)} of {ROUNDS} stale; PUT p50 {took[len(took) // 2] * 1000:.0f} ms, "
          f"max {took[-1] * 1000:.0f} ms")
    assert stale == []
    # The replica region's plane did wait for its gateways (the mechanism, not luck).
    assert _metadata_gauge(regions.us.metrics_address, "lading_change_ack_waits_total") >= waits_before + 1

    # Deletes wait too: a tag deleted through us's gateway 1 is gone through its gateway 2 at once.
    assert push_manifest_only(one, repo, "doomed", base).status_code == 201
    assert digest_of(two, repo, "doomed") == base.digest
    assert one.delete(f"/v2/{repo}/manifests/doomed").status_code == 202
    assert digest_of(two, repo, "doomed") is None

# What the metadata plane logs when a write could not check, fenced, or gave up on subscribers
# (services/metadata/changes/acks.py); checked against its source so a rewording fails here.
GIVE_UP_LINES = ("could not check the gateways' acknowledgements", "did not acknowledge", "still not acknowledged")


def test_the_acknowledgement_log_lines_read_here_are_the_planes() -> None:
    source = Path(acks.__file__).read_text()
    assert all(line in source for line in GIVE_UP_LINES)


def test_the_primary_regions_writes_do_not_wait_for_the_replica_regions_gateways(
    regions: Regions, us_clients: tuple[httpx.Client, httpx.Client]
) -> None:
    us_one, us_two = us_clients
    repo = f"replica-acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    with httpx.Client(base_url=regions.eu.gateway_urls[0], timeout=30.0) as eu:
        push(eu, repo, base, tag="latest")
        assert eventually(lambda: digest_of(us_two, repo, "latest") == base.digest)
        eu_log = regions.eu.metadata.log_path
        log_from = eu_log.stat().st_size
        # Only a fence raises a fence (an acknowledgement lifts it), and only eu writes meanwhile.
        fences = _fences(regions, "us")
        assert fences  # us's gateways subscribe (through the primary region's table)
        frozen = regions.us.gateways
        for gateway in frozen:
            os.killpg(gateway.pid, signal.SIGSTOP)
        try:
            for n in range(3):
                assert push_manifest_only(eu, repo, "latest", variant(base, 100 + n)).status_code == 201
            # Read while they are frozen: a fence is lifted once its subscriber catches up.
            after = _fences(regions, "us")
        finally:
            for gateway in frozen:
                os.killpg(gateway.pid, signal.SIGCONT)
        # us's gateways hold leases in the primary's table, but eu waited for none of them: it fenced
        # none (an acknowledgement still in flight when they froze may only lift a fence) and gave up
        # on none, nor failed to check. (Not eu's counters: on a loaded machine eu may fence or give
        # up on one of its own gateways, slow to acknowledge, which is not the point here.)
        assert all(after[name] <= fence for name, fence in fences.items()), (fences, after)
        unchecked, fenced, late = GIVE_UP_LINES
        with eu_log.open(errors="replace") as log:
            log.seek(log_from)
            gave_up = [line for line in log if unchecked in line or (
                (fenced in line or late in line) and any(name in line for name in fences))]
        assert gave_up == [], gave_up
    # Their leases ran out while frozen: they serve the tag where eu moved it, not what they kept.
    assert eventually(lambda: digest_of(us_two, repo, "latest") == variant(base, 102).digest)
    assert digest_of(us_one, repo, "latest") == variant(base, 102).digest


def test_a_frozen_gateway_of_the_replica_region_holds_its_writes_only_within_the_bound(
    regions: Regions, us_clients: tuple[httpx.Client, httpx.Client]
) -> None:
    one, two = us_clients
    repo = f"replica-acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    assert eventually(lambda: digest_of(two, repo, "latest") == base.digest)  # cached by gateway 2
    fenced = _metadata_gauge(regions.us.metrics_address, "lading_change_ack_fenced_total")
    gateway2 = regions.us.gateways[1]
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
    print(f"frozen gateway: writes took {[round(t, 3) for t in took]} s; fenced on the primary: "
          f"{_metadata_gauge(regions.us.metrics_address, 'lading_change_ack_fenced_total') - fenced:.0f}")
    # Its lease ran out while it was frozen: the entry it kept is not served.
    assert digest_of(two, repo, "latest") == variant(base, 2).digest
    _coherent(regions)


def test_cut_off_from_the_primary_the_replica_regions_gateways_lose_their_leases(
    regions: Regions, us_clients: tuple[httpx.Client, httpx.Client]
) -> None:
    one, two = us_clients
    repo = f"replica-acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    regions.partition.cut()
    try:
        # No acknowledgement reaches the primary region: no lease, the short TTL.
        for url in regions.us.gateway_metrics:
            assert eventually(lambda u=url: gauge(u, "lading_gateway_cache_coherent") == 0.0), url
        assert digest_of(two, repo, "latest") == base.digest  # reads go on from the standby
    finally:
        regions.partition.mend()
    for url in regions.us.gateway_metrics:
        assert eventually(lambda u=url: gauge(u, "lading_gateway_cache_coherent") == 1.0), url
    # The standby streams again (its WAL receiver retries every few seconds): until then a write
    # through us cannot be read back in us, cache or not.
    _standby_caught_up(regions)
    moved = variant(base, 1)
    assert push_manifest_only(one, repo, "latest", moved).status_code == 201
    assert digest_of(two, repo, "latest") == moved.digest


def test_a_write_the_standby_has_not_replayed_in_time_is_read_from_the_primary_region(
    regions: Regions, us_clients: tuple[httpx.Client, httpx.Client]
) -> None:
    """us's standby slower than `read_your_writes.wait_seconds` (its replay paused): a push through
    us still answers 201 (after the bound), and us reads that repository from the primary region
    until its standby has the write, so the push reads back through either gateway. Without that,
    the standby answers the old digest and 404 for the new one."""
    one, two = us_clients
    repo = f"replica-acks/{uuid.uuid4().hex[:12]}"
    base = image(layers=1)
    push(one, repo, base, tag="latest")
    _standby_caught_up(regions)
    assert eventually(lambda: digest_of(two, repo, "latest") == base.digest)  # cached by gateway 2
    pinned = _metadata_gauge(regions.us.metrics_address, "lading_region_pinned_reads_total")
    moved = variant(base, 1)
    regions.pair.standby.psql("SELECT pg_wal_replay_pause()")
    try:
        assert push_manifest_only(one, repo, "latest", moved).status_code == 201
        for client in (two, one):
            assert digest_of(client, repo, "latest") == moved.digest
            assert digest_of(client, repo, moved.digest) == moved.digest
        assert regions.pair.standby.psql("SELECT pg_is_wal_replay_paused()") == "t"  # still behind
        assert _metadata_gauge(regions.us.metrics_address, "lading_region_pinned_reads_total") > pinned
    finally:
        regions.pair.standby.psql("SELECT pg_wal_replay_resume()")
    _standby_caught_up(regions)
    # Caught up: the repository is read from the standby again.
    assert digest_of(two, repo, moved.digest) == moved.digest
    pinned = _metadata_gauge(regions.us.metrics_address, "lading_region_pinned_reads_total")
    assert digest_of(two, repo, moved.digest) == moved.digest
    assert _metadata_gauge(regions.us.metrics_address, "lading_region_pinned_reads_total") == pinned
    shown = subprocess.run(lading_command("region", "status", "--json", "--metadata", f"unix:{regions.us.metadata_socket}"),
                           capture_output=True, text=True, timeout=60, env=child_env())
    assert json.loads(shown.stdout)["pinnedReads"] == str(int(pinned)), shown.stdout + shown.stderr
    _coherent(regions)
