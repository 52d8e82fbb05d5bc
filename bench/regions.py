"""Fetch on miss between regions (issue 15, item 3): what a pull in a replica region costs when its
storage lacks the blob, against a pull in the region that has it.

`python -m bench.regions [--sizes 1,16,64] [--repeat 3] [--concurrent 8] [--storage seaweedfs]`
builds two regions (tests/regions/two_regions.py: a PostgreSQL primary and its hot standby, each
region with HAProxy, two gateways, a metadata and a blob plane; with `--storage seaweedfs` one
SeaweedFS cluster per region, no storage replication, reads redirected to presigned URLs). For
each size it pushes a one-layer image through eu's HAProxy `--repeat` times and times one
`GET /v2/<repo>/blobs/<digest>` of the layer (following a redirect, as clients do):

- eu, local: the bytes are in eu's storage;
- us, cold: us's storage lacks them; us's blob plane fetches them from eu's while it streams them
  to the client and stores them;
- us, warm: the next pull, from us's own storage.

Then `--concurrent` clients pull one new blob through us's HAProxy at once (both gateways): the
wall time, the slowest pull, and how many fetches from eu region us started (its metadata plane's
`lading_region_blob_fetches_total`). Prints a Markdown table (medians). Needs the PostgreSQL
server binaries (Debian `postgresql`) and `haproxy`.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from tests.regions.two_regions import Regions, two_regions
from tests.support.oci import image, push

MiB = 1024 * 1024


def _pull(client: httpx.Client, repo: str, digest: str, size: int) -> float:
    started = time.perf_counter()
    answer = client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200 or len(answer.content) != size:
        raise SystemExit(f"pull of {digest}: {answer.status_code}, {len(answer.content)} bytes of {size}")
    return elapsed


def _fetches_started(regions: Regions) -> int:
    text = httpx.get(f"http://{regions.us.metrics_address}/metrics", timeout=10).text
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("lading_region_blob_fetches_total") and 'outcome="started"' in line)


def sizes_table(regions: Regions, sizes: list[int], repeat: int) -> list[tuple[int, float, float, float]]:
    rows = []
    with httpx.Client(base_url=regions.eu.url, timeout=300) as eu, \
            httpx.Client(base_url=regions.us.url, timeout=300) as us:
        for mib in sizes:
            local, cold, warm = [], [], []
            for _ in range(repeat):
                repo = f"bench/regions-{uuid.uuid4().hex[:8]}"
                manifest = image(layers=1, layer_size=mib * MiB)
                push(eu, repo, manifest, tag="v1")
                layer = manifest.blobs[-1]
                local.append(_pull(eu, repo, layer.digest, layer.size))
                cold.append(_pull(us, repo, layer.digest, layer.size))
                warm.append(_pull(us, repo, layer.digest, layer.size))
            rows.append((mib, statistics.median(local), statistics.median(cold), statistics.median(warm)))
    return rows


def concurrent(regions: Regions, clients: int, mib: int) -> tuple[float, float, int]:
    repo = f"bench/regions-{uuid.uuid4().hex[:8]}"
    manifest = image(layers=1, layer_size=mib * MiB)
    with httpx.Client(base_url=regions.eu.url, timeout=300) as eu:
        push(eu, repo, manifest, tag="v1")
    layer = manifest.blobs[-1]
    before = _fetches_started(regions)
    barrier = threading.Barrier(clients)
    times: list[float] = []
    errors: list[BaseException] = []

    def pull() -> None:
        with httpx.Client(base_url=regions.us.url, timeout=300) as us:
            barrier.wait(30)
            try:
                times.append(_pull(us, repo, layer.digest, layer.size))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

    threads = [threading.Thread(target=pull) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    wall = time.perf_counter() - started
    if errors or len(times) != clients:
        raise SystemExit(f"concurrent pulls failed: {errors[:3]}")
    time.sleep(0.5)  # a fetch is counted when the gateway ends it, just after the last byte
    return wall, max(times), _fetches_started(regions) - before


@contextlib.contextmanager
def _storage(kind: str) -> Iterator[Mapping[str, Mapping[str, str]] | None]:
    if kind == "filesystem":
        yield None
        return
    from tests.support.seaweedfs import seaweedfs_server

    with seaweedfs_server() as eu, seaweedfs_server() as us:
        prefix = eu.new_prefix()  # the same keys in both clusters, as storage replication has them
        yield {name: cluster.lading_env(LADING_BLOB__S3__KEY_PREFIX=prefix, LADING_BLOB__S3__REDIRECT_READS="true")
               for name, cluster in (("eu", eu), ("us", us))}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regions", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64", help="blob sizes in MiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="blobs per size (medians are printed)")
    parser.add_argument("--concurrent", type=int, default=8, help="clients pulling one cold blob at once")
    parser.add_argument("--concurrent-mib", type=int, default=16)
    parser.add_argument("--storage", choices=("seaweedfs", "filesystem"), default="seaweedfs")
    parser.add_argument("--relayed", action="store_true",
                        help="the links between the regions through the tests' relays (in this process: slower)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.sizes.split(",") if part]
    with tempfile.TemporaryDirectory(prefix="lading-bench-regions-") as folder, _storage(args.storage) as blob_env:
        with two_regions(Path(folder), blob_env=blob_env, relayed=args.relayed) as regions:
            rows = sizes_table(regions, sizes, max(1, args.repeat))
            wall, slowest, fetches = concurrent(regions, args.concurrent, args.concurrent_mib)
    print(f"Fetch on miss between regions ({args.storage}{', relayed' if args.relayed else ''}; "
          f"medians of {args.repeat}; "
          "one GET through the region's HAProxy, redirects followed)\n")
    print("| blob | eu, local | us, cold (fetched from eu) | us, warm (its own storage) |")
    print("|---|---|---|---|")
    for mib, local, cold, warm in rows:
        print(f"| {mib} MiB | {local:.3f} s | {cold:.3f} s | {warm:.3f} s |")
    print(f"\n{args.concurrent} concurrent cold pulls of a {args.concurrent_mib} MiB blob through us's HAProxy: "
          f"{wall:.2f} s wall, slowest {slowest:.2f} s, {fetches} fetch(es) from eu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
