"""Coherence of the gateways' manifest caches (issue 15, item 5): how long after a tag moved
through gateway 1 does gateway 2, which had the old digest cached, serve the new one?

`python -m bench.coherence [--moves 1000] [--database-url postgresql://...]` starts one site
(tests/regions/site.py: two metadata replicas on one PostgreSQL database, two gateways each on its
own replica, fallback TTL one hour, replica polls once a minute, so only LISTEN/NOTIFY and the
change feed can deliver), then for each move: PUT the tag through gateway 1, and from the moment
the 201 arrived poll gateway 2 (GET by tag, back to back) until it answers the new digest. Prints
p50/p90/p99/max of that delay. Needs PostgreSQL (LADING_TEST_DATABASE_URL or --database-url).

`--read-your-writes N` (issue 15, item 4) instead builds a PostgreSQL primary and hot standby
(tests/support/standby.py), has both metadata replicas read from the standby, and pushes N images
through gateway 1, each immediately followed by pulls through gateway 2 (manifest by the new tag,
by digest, a blob HEAD; then the moved `latest` tag): it counts stale or missing reads and prints
the push latency.

`--replica-region N` does the same through a REPLICA region (tests/regions/two_regions.py: eu the
primary, us on eu's hot standby, the regions linked directly): N pushes through us's gateway 1,
each read at once through us's gateway 2 (the gateways' fallback TTL an hour).

Tag and manifest writes wait for every gateway's cache to acknowledge their change
(services/metadata/changes/acks.py); `--without-acks` turns that wait off
(`LADING_METADATA__CHANGE_FEED__WAIT_FOR_CACHES=false`) to show what it costs and what it buys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.regions.site import site
from tests.support.oci import ACCEPT_ALL, image, push, push_blob, render
from tests.support.oci import Manifest as OciManifest
from tests.support.postgres import PostgresProvider


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wait_until_coherent(metrics_urls: tuple[str, ...], seconds: float = 30.0) -> None:
    """Until every gateway holds its first lease (`lading_gateway_cache_coherent` 1): before it, a
    gateway caches with the fallback TTL (an hour here) and writes do not wait for it, which is
    its start-up, not the steady state these rows measure."""
    deadline = time.monotonic() + seconds
    for url in metrics_urls:
        while "lading_gateway_cache_coherent 1.0" not in httpx.get(url, timeout=5).text:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url}: the gateway's cache did not become coherent within {seconds:g} s")
            time.sleep(0.05)


def measure(urls: tuple[str, str], moves: int) -> tuple[list[float], list[float]]:
    """(delays until gateway 2 serves the move, PUT latencies through gateway 1)."""
    delays: list[float] = []
    puts: list[float] = []
    with httpx.Client(base_url=urls[0], timeout=30) as one, httpx.Client(base_url=urls[1], timeout=30) as two:
        repo = f"bench/coherence-{uuid.uuid4().hex[:8]}"
        base = image(layers=1)
        push(one, repo, base, tag="latest")
        headers = {"Accept": ACCEPT_ALL}
        two.get(f"/v2/{repo}/manifests/latest", headers=headers)
        for n in range(moves):
            moved = OciManifest(render({**base.json, "annotations": {"n": str(n)}}), base.media_type, blobs=base.blobs)
            put_started = time.perf_counter()
            response = one.put(f"/v2/{repo}/manifests/latest", content=moved.payload,
                               headers={"Content-Type": moved.media_type})
            assert response.status_code == 201, response.text
            start = time.perf_counter()
            puts.append(start - put_started)
            while True:
                seen = two.get(f"/v2/{repo}/manifests/latest", headers=headers).headers.get("docker-content-digest")
                if seen == moved.digest:
                    break
                if time.perf_counter() - start > 30:
                    raise SystemExit(f"move {n}: gateway 2 still serves {seen} after 30 s")
            delays.append(time.perf_counter() - start)
    return delays, puts


def read_your_writes(urls: tuple[str, str], pushes: int) -> None:
    headers = {"Accept": ACCEPT_ALL}
    missing = 0
    stale_rounds: list[int] = []
    latencies: list[float] = []
    with httpx.Client(base_url=urls[0], timeout=30) as one, httpx.Client(base_url=urls[1], timeout=30) as two:
        repo = f"bench/ryw-{uuid.uuid4().hex[:8]}"
        for n in range(pushes):
            manifest = image(layers=1, layer_size=512)
            started = time.perf_counter()
            for blob in manifest.blobs:
                push_blob(one, repo, blob)
            for tag in (f"t{n}", "latest"):
                response = one.put(f"/v2/{repo}/manifests/{tag}", content=manifest.payload,
                                   headers={"Content-Type": manifest.media_type})
                assert response.status_code == 201, response.text
            latencies.append(time.perf_counter() - started)
            reads = [
                two.get(f"/v2/{repo}/manifests/t{n}", headers=headers),
                two.head(f"/v2/{repo}/manifests/{manifest.digest}", headers=headers),
                two.head(f"/v2/{repo}/blobs/{manifest.blobs[-1].digest}"),
            ]
            missing += sum(1 for r in reads if r.status_code != 200)
            if two.get(f"/v2/{repo}/manifests/latest", headers=headers).headers.get("docker-content-digest") \
                    != manifest.digest:
                stale_rounds.append(n)
    ms = [x * 1000 for x in latencies]
    print(f"read-your-writes over {pushes} pushes (gateway 1 push -> gateway 2 pull at once, reads on the standby):")
    print(f"  missing new tag/digest/blob reads: {missing} of {3 * pushes}")
    print(f"  `latest` (moved by every push) stale right after the 201: {len(stale_rounds)} of {pushes}"
          + (f" (pushes {', '.join(map(str, stale_rounds[:20]))})" if stale_rounds else ""))
    print(f"  push (2 blobs + 2 manifest PUTs) p50 {statistics.median(ms):.1f} ms  p99 {_percentile(ms, 0.99):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coherence", description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("LADING_TEST_DATABASE_URL", ""))
    parser.add_argument("--read-your-writes", type=int, default=0, metavar="PUSHES")
    parser.add_argument("--replica-region", type=int, default=0, metavar="PUSHES")
    parser.add_argument("--without-acks", action="store_true",
                        help="writes do not wait for the gateways' acknowledgements (the behaviour before)")
    args = parser.parse_args()
    acks_env = {"LADING_METADATA__CHANGE_FEED__WAIT_FOR_CACHES": "false"} if args.without_acks else {}
    print("writes wait for every gateway cache's acknowledgement:", "no" if args.without_acks else "yes")
    if args.replica_region:
        from tests.regions.two_regions import two_regions

        long_ttl = {"LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "3600",
                    "LADING_GATEWAY__CACHE_FEED__COHERENT_TTL_SECONDS": "3600"}
        with tempfile.TemporaryDirectory(prefix="lading-replica-ryw-") as root, two_regions(
                Path(root), eu_env=acks_env, us_env=acks_env, gateway_env=long_ttl, relayed=False) as regions:
            time.sleep(2)  # the gateways' first leases
            read_your_writes(regions.us.gateway_urls, args.replica_region)
        return 0
    if args.read_your_writes:
        from tests.support.standby import primary_and_standby

        with primary_and_standby() as pair, tempfile.TemporaryDirectory(prefix="lading-ryw-") as root:
            pair.primary.psql("CREATE DATABASE lading")
            while "lading" not in pair.standby.psql("SELECT datname FROM pg_database"):
                time.sleep(0.05)
            env = {"LADING_METADATA__READ_REPLICA_URL": pair.standby.database_url("lading"), **acks_env}
            with site(Path(root), pair.primary.database_url("lading"), metadata_env=env) as running:
                if not args.without_acks:
                    wait_until_coherent(running.metrics_urls)
                read_your_writes(running.gateway_urls, args.read_your_writes)
        return 0
    if args.database_url:
        os.environ["LADING_TEST_DATABASE_URL"] = args.database_url
    provider = PostgresProvider()
    with tempfile.TemporaryDirectory(prefix="lading-coherence-") as root, provider.database() as url, \
            site(Path(root), url, metadata_env=acks_env) as running:
        delays, puts = measure(running.gateway_urls, args.moves)
    ms = [d * 1000 for d in delays]
    print(f"coherence over {len(ms)} tag moves (gateway 1 PUT 201 -> gateway 2 serves the new digest):")
    print(f"  p50 {statistics.median(ms):.1f} ms  p90 {_percentile(ms, 0.9):.1f} ms  "
          f"p99 {_percentile(ms, 0.99):.1f} ms  max {max(ms):.1f} ms")
    put_ms = [p * 1000 for p in puts]
    print(f"  tag move PUT through gateway 1: p50 {statistics.median(put_ms):.1f} ms  "
          f"p99 {_percentile(put_ms, 0.99):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
