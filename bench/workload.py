"""The benchmark rows and the A/B runner.

Every test runs `rounds` times against each registry, alternating the order (D then L, then L
then D, ...) so that machine noise (page cache, CPU frequency, another process) hits both alike;
consecutive tests start with different registries too, so that a one-round run (`--quick`) does
not always measure Distribution first. Figures are aggregated over rounds: rates as total work /
total time, latency percentiles as the median of the rounds' percentiles.

Rows marked "gateway cache off" run against a second Lading with
`LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS=0` (the `uncached` variant): every manifest GET/HEAD
and tags/list goes to the metadata plane, as in Distribution, which has no such cache.

Data: before the tests each registry gets the same fixture (`bench/app:latest`, a small OCI
image, plus `TAGS` more tags on it and `CATALOG_REPOSITORIES` small repositories); byte-moving
tests push fresh random blobs each round (a different first 16 bytes, so nothing deduplicates).

The memory test (last) runs once per registry, not in rounds: 16 clients push distinct
generated blobs at once, then pull them at once, and each process's peak resident size over just
that workload is read from VmHWM (reset through /proc/<pid>/clear_refs first; the whole-run peak
rows keep the peaks from before the reset).
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import run_load
from bench.registries import Registry
from bench.transfer import OCI_MANIFEST, Client, MiB, aiohttp_pulls, image_manifest
from tests.memory.streams import PatternBlob, pull_hashed, push_streamed

APP = "bench/app"
TAGS = 50
CATALOG_REPOSITORIES = 30
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


@dataclass(frozen=True)
class Sizes:
    """How long and how big; `--quick` scales everything down (see QUICK)."""

    seconds: int  # per wrk run
    rounds: int
    big_blob: int  # the push / pull blob
    chunk: int  # PATCH size of the chunked push
    shared_blob: int  # the blob many clients pull at once
    pull_clients: int
    images: int
    image_clients: int
    memory_blob: int  # each client's blob in the concurrent push-then-pull memory test
    memory_clients: int
    concurrency: tuple[int, ...] = (1, 16, 64)


FULL = Sizes(seconds=5, rounds=3, big_blob=256 * MiB, chunk=8 * MiB, shared_blob=64 * MiB, pull_clients=16,
             images=200, image_clients=16, memory_blob=256 * MiB, memory_clients=16)
QUICK = Sizes(seconds=1, rounds=1, big_blob=64 * MiB, chunk=8 * MiB, shared_blob=16 * MiB, pull_clients=16,
              images=48, image_clients=16, memory_blob=32 * MiB, memory_clients=16)
# Issue 5: every Lading process stays under this resident size during the memory test; issue 13:
# the whole registry (every process) under 300 MiB there, and under 150 MiB at idle.
RSS_BOUND_MIB = 300.0
IDLE_BOUND_MIB = 150.0
WHOLE = "peak RSS, whole registry (Lading: sum of the peaks of every process)"
# Which Lading a test runs against: the default, or one with the gateway's manifest cache off.
DEFAULT, UNCACHED = "default", "uncached"


@dataclass
class Metric:
    """One table row: `better` is "higher" (rates) or "lower" (latency, memory)."""

    name: str
    unit: str
    better: str
    values: dict[str, float] = field(default_factory=dict)
    client_cpu: dict[str, float] = field(default_factory=dict)
    note: str = ""
    target: float | None = None  # minimum ratio the issue asks for (None: not rated)
    limit: float | None = None  # maximum Lading value the issue asks for, in `unit` (None: none)

    def ratio(self) -> float | None:
        d, lading = self.values.get("distribution"), self.values.get("lading")
        if not d or not lading:
            return None
        return lading / d if self.better == "higher" else d / lading


@dataclass
class Test:
    """One workload: `prepare` runs once per registry (untimed), `run` once per round and returns
    {metric suffix: (value, weight)} plus the client's CPU share."""

    name: str
    # (suffix, unit, better, target ratio[, limit]); a suffix a registry's run does not return
    # (a Lading-only process) stays empty for it.
    metrics: list[tuple[Any, ...]]
    run: Callable[[Registry, Any, int], tuple[dict[str, float], float, float]]
    prepare: Callable[[Registry], Any] = lambda registry: None
    note: str = ""
    rounds: int | None = None  # None: `Sizes.rounds`
    variant: str = DEFAULT  # which Lading (DEFAULT or UNCACHED)


def sha256(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def seed_registry(registry: Registry) -> dict[str, str]:
    """Pushes the fixture every test reads; returns {"digest": manifest digest}."""
    client = Client(registry.base_url)
    try:
        layer = b"lading-bench-layer\n" * 100
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        for blob in (layer, config):
            client.push_monolithic(APP, sha256(blob), blob)
        manifest = image_manifest((sha256(config), len(config)), [(sha256(layer), len(layer))])
        client.put_manifest(APP, "latest", manifest)
        for i in range(TAGS):
            client.put_manifest(APP, f"t{i:03d}", manifest)
        for i in range(CATALOG_REPOSITORIES):
            repository = f"bench/catalog-{i:02d}"
            client.push_monolithic(repository, sha256(config), config)
            client.put_manifest(repository, "latest", image_manifest((sha256(config), len(config)), []))
        return {"digest": sha256(manifest)}
    finally:
        client.close()


# -- request-rate tests (wrk / hey) -------------------------------------------------------------------

def wrk_test(name: str, *, method: str, path: Callable[[dict[str, str]], str], connections: int,
             sizes: Sizes, latency: bool, target: float | None, variant: str = DEFAULT) -> Test:
    def run(registry: Registry, state: Any, round_no: int) -> tuple[dict[str, float], float, float]:
        result = run_load(registry.base_url + path(state), method=method, accept=ACCEPT,
                         connections=connections, seconds=sizes.seconds)
        values = {"req/s": result.rate, "p50": result.p50_ms, "p99": result.p99_ms}
        return values, result.seconds, result.client_cpu

    metrics: list[tuple[str, str, str, float | None]] = [("req/s", "req/s", "higher", target)]
    if latency:
        metrics += [("p50", "ms", "lower", None), ("p99", "ms", "lower", None)]
    return Test(name, metrics, run, prepare=lambda registry: registry.fixture, variant=variant)


# -- byte-moving tests (transfer.Client) ---------------------------------------------------------

class Blobs:
    """Random blobs of one size, a fresh first 16 bytes (and digest) per call."""

    def __init__(self, size: int) -> None:
        self._data = bytearray(os.urandom(size))
        self._counter = 0

    def fresh(self) -> tuple[memoryview, str]:
        self._counter += 1
        self._data[:16] = os.urandom(16)
        view = memoryview(self._data)
        return view, sha256(view)


def _timed(work: Callable[[], float]) -> tuple[float, float, float]:
    """Runs `work` (returns the work done); gives (work, wall seconds, client CPU share)."""
    cpu, wall = time.process_time(), time.perf_counter()
    done = work()
    wall = time.perf_counter() - wall
    return done, wall, (time.process_time() - cpu) / wall


def push_test(sizes: Sizes, *, chunked: bool, blobs: Blobs) -> Test:
    label = f"blob push {sizes.big_blob // MiB} MiB " + (f"chunked ({sizes.chunk // MiB} MiB PATCHes)"
                                                          if chunked else "monolithic (POST + one PUT)")

    def run(registry: Registry, state: Any, round_no: int) -> tuple[dict[str, float], float, float]:
        data, digest = blobs.fresh()
        client = Client(registry.base_url)
        try:
            def work() -> float:
                if chunked:
                    client.push_chunked("bench/push", digest, data, sizes.chunk)
                else:
                    client.push_monolithic("bench/push", digest, data)
                return len(data) / MiB

            mib, wall, cpu = _timed(work)
        finally:
            client.close()
        return {"MiB/s": mib / wall}, wall, cpu

    return Test(label, [("MiB/s", "MiB/s", "higher", 1.0)], run)


def pull_test(sizes: Sizes, *, clients: int, size: int, blobs: Blobs, aiohttp: bool = False) -> Test:
    """Pulls with `bench.transfer.Client` (http.client), or with `aiohttp` clients: both follow a
    307 on a new connection to wherever it points, as registry clients do."""
    label = (f"blob pull {size // MiB} MiB" if clients == 1
             else f"{clients} clients pulling one {size // MiB} MiB blob")
    if aiohttp:
        label += ", aiohttp client"

    def prepare(registry: Registry) -> str:
        data, digest = blobs.fresh()
        client = Client(registry.base_url)
        try:
            client.push_monolithic("bench/pull", digest, data)
            client.pull("bench/pull", digest)  # warm the page cache alike for both
        finally:
            client.close()
        return digest

    def run(registry: Registry, digest: Any, round_no: int) -> tuple[dict[str, float], float, float]:
        def one() -> int:
            client = Client(registry.base_url)
            try:
                received = client.pull("bench/pull", digest)
            finally:
                client.close()
            if received != size:
                raise RuntimeError(f"pulled {received} bytes of a {size}-byte blob from {registry.name}")
            return received

        def work() -> float:
            if aiohttp:
                received = aiohttp_pulls(registry.base_url, "bench/pull", digest, clients)
                if any(n != size for n in received):
                    raise RuntimeError(f"pulled {received} bytes of a {size}-byte blob from {registry.name}")
                return sum(received) / MiB
            if clients == 1:
                return one() / MiB
            with ThreadPoolExecutor(clients) as pool:
                return sum(pool.map(lambda _: one(), range(clients))) / MiB

        mib, wall, cpu = _timed(work)
        return {"MiB/s": mib / wall}, wall, cpu

    return Test(label, [("MiB/s", "MiB/s", "higher", 1.0)], run, prepare=prepare)


def small_images(count: int, round_no: int) -> list[tuple[str, list[tuple[bytes, str]], bytes]]:
    """A round's small images as (repository, [(blob, digest)...] with the config last, manifest):
    the same bytes for both registries (a generator seeded by the round alone), new bytes in every
    round (so nothing deduplicates against an earlier round)."""
    rng = random.Random(f"small-images-{round_no}")
    made = []
    for i in range(count):
        layers = [rng.randbytes(rng.randint(4 * 1024, 64 * 1024)) for _ in range(3)]
        config = (f'{{"architecture":"amd64","os":"linux","created":"round-{round_no}-{i}",'
                  '"rootfs":{"type":"layers","diff_ids":[]}}').encode()
        blobs = [(b, sha256(b)) for b in [*layers, config]]
        manifest = image_manifest((blobs[-1][1], len(config)), [(d, len(b)) for b, d in blobs[:-1]])
        made.append((f"bench/small-{i % 8}", blobs, manifest))
    return made


def small_images_test(sizes: Sizes) -> Test:
    label = f"{sizes.images} small images (3 layers 4-64 KiB + config + manifest), {sizes.image_clients} clients"

    def run(registry: Registry, state: Any, round_no: int) -> tuple[dict[str, float], float, float]:
        work_items = small_images(sizes.images, round_no)
        local = threading.local()
        opened: list[Client] = []
        lock = threading.Lock()

        def push(index: int) -> None:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = Client(registry.base_url)
                with lock:
                    opened.append(client)
            repository, blobs, manifest = work_items[index]
            for data, digest in blobs:
                client.push_monolithic(repository, digest, data)
            client.put_manifest(repository, f"v{round_no}-{index}", manifest)

        def work() -> float:
            with ThreadPoolExecutor(sizes.image_clients) as pool:
                list(pool.map(push, range(len(work_items))))
            return float(len(work_items))

        try:
            count, wall, cpu = _timed(work)
        finally:
            for client in opened:
                client.close()
        return {"images/s": count / wall}, wall, cpu

    return Test(label, [("images/s", "images/s", "higher", 1.0)], run)


def memory_test(sizes: Sizes) -> Test:
    """`memory_clients` clients push distinct `memory_blob` blobs at once (POST + one streamed PUT
    each), then pull them back at once; the peak resident size (VmHWM, reset just before) of every
    process, plus the aggregate push and pull rates. Blobs are generated 1 MiB at a time
    (tests/memory/streams.PatternBlob) so the client holds none of them; their digests are made
    once, untimed, and pulled bytes are counted (not hashed: tests/memory checks the digests)."""
    clients, size = sizes.memory_clients, sizes.memory_blob
    label = f"{clients} clients × {size // MiB} MiB concurrent pushes, then pulls"
    labels = ("serve+metadata", "blob", "gateway")
    blobs = [PatternBlob(1000 + i, size) for i in range(clients)]
    digests: list[str] = []

    def prepare(registry: Registry) -> list[str]:
        if not digests:
            with ThreadPoolExecutor(2) as pool:
                digests.extend(pool.map(PatternBlob.digest, blobs))
        return digests

    def run(registry: Registry, state: Any, round_no: int) -> tuple[dict[str, float], float, float]:
        repository = f"bench/memory-{round_no}"
        registry.reset_peaks()
        with ThreadPoolExecutor(clients) as pool:
            def push() -> float:
                list(pool.map(lambda i: push_streamed(registry.base_url, repository, blobs[i], digest=state[i],
                                                      verify=False), range(clients)))
                return clients * size / MiB

            def pull() -> float:
                received = list(pool.map(lambda d: pull_hashed(registry.base_url, repository, d, verify=False)[0],
                                         state))
                if any(n != size for n in received):
                    raise RuntimeError(f"{registry.name}: pulled {received} bytes of {size}-byte blobs")
                return sum(received) / MiB

            pushed, push_wall, push_cpu = _timed(push)
            pulled, pull_wall, pull_cpu = _timed(pull)
        peaks = registry.peaks_mib()
        values = {"push MiB/s": pushed / push_wall, "pull MiB/s": pulled / pull_wall,
                  WHOLE: sum(peaks.values())}
        if len(peaks) > 1:
            values |= {f"peak RSS, {name} process": peak for name, peak in peaks.items()}
        wall = push_wall + pull_wall
        return values, wall, (push_cpu * push_wall + pull_cpu * pull_wall) / wall

    metrics: list[tuple[Any, ...]] = [("push MiB/s", "MiB/s", "higher", None), ("pull MiB/s", "MiB/s", "higher", None)]
    metrics += [(f"peak RSS, {name} process", "MiB", "lower", None, RSS_BOUND_MIB) for name in labels]
    metrics.append((WHOLE, "MiB", "lower", None, RSS_BOUND_MIB))
    return Test(label, metrics, run, prepare=prepare, rounds=1)


def build_tests(sizes: Sizes) -> list[Test]:
    tests = []
    for method in ("GET", "HEAD"):
        for by in ("tag", "digest"):
            for connections in sizes.concurrency:
                def path(state: dict[str, str], by: str = by) -> str:
                    return f"/v2/{APP}/manifests/" + ("latest" if by == "tag" else state["digest"])

                tests.append(wrk_test(
                    f"manifest {method} by {by}, c={connections}", method=method, path=path,
                    connections=connections, sizes=sizes, latency=True,
                    target=2.0 if connections >= 16 else 1.0,
                ))
                # The same against a Lading whose gateway caches nothing (Distribution has no
                # such cache): the metadata plane answers every request. Not rated.
                tests.append(wrk_test(
                    f"manifest {method} by {by}, c={connections}, gateway cache off", method=method, path=path,
                    connections=connections, sizes=sizes, latency=True, target=None, variant=UNCACHED,
                ))
    tests.append(wrk_test("tags/list (50 tags), c=16", method="GET", path=lambda s: f"/v2/{APP}/tags/list",
                          connections=16, sizes=sizes, latency=False, target=1.0))
    tests.append(wrk_test("tags/list (50 tags), c=16, gateway cache off", method="GET",
                          path=lambda s: f"/v2/{APP}/tags/list", connections=16, sizes=sizes, latency=False,
                          target=None, variant=UNCACHED))
    tests.append(wrk_test("_catalog (31 repositories), c=16", method="GET", path=lambda s: "/v2/_catalog",
                          connections=16, sizes=sizes, latency=False, target=1.0))
    big = Blobs(sizes.big_blob)
    tests.append(push_test(sizes, chunked=False, blobs=big))
    tests.append(push_test(sizes, chunked=True, blobs=big))
    tests.append(pull_test(sizes, clients=1, size=sizes.big_blob, blobs=big))
    tests.append(pull_test(sizes, clients=1, size=sizes.big_blob, blobs=big, aiohttp=True))
    shared = Blobs(sizes.shared_blob)
    tests.append(pull_test(sizes, clients=sizes.pull_clients, size=sizes.shared_blob, blobs=shared))
    tests.append(pull_test(sizes, clients=sizes.pull_clients, size=sizes.shared_blob, blobs=shared, aiohttp=True))
    tests.append(small_images_test(sizes))
    tests.append(memory_test(sizes))
    return tests


def run_tests(tests: list[Test], distribution: Registry, ladings: dict[str, Registry], sizes: Sizes,
              log: Callable[[str], None]) -> list[Metric]:
    """Runs every test in alternating A/B rounds against Distribution and the test's Lading
    (`ladings[test.variant]`); returns the table's metrics in order."""
    metrics: list[Metric] = []
    for index, test in enumerate(tests):
        registries = [distribution, ladings[test.variant]]
        states = {registry.name: test.prepare(registry) for registry in registries}
        samples: dict[str, list[tuple[dict[str, float], float, float]]] = {r.name: [] for r in registries}
        for round_no in range(test.rounds or sizes.rounds):
            # Alternate by round and by test: with one round, every other test starts with Lading.
            order = registries if (round_no + index) % 2 == 0 else list(reversed(registries))
            for registry in order:
                samples[registry.name].append(test.run(registry, states[registry.name], round_no))
        for suffix, unit, better, target, *limit in test.metrics:
            metric = Metric(f"{test.name}: {suffix}" if suffix not in ("req/s", "MiB/s", "images/s")
                            else test.name, unit, better, target=target, limit=limit[0] if limit else None,
                            note=test.note)
            for name, runs in samples.items():
                if any(suffix not in values for values, _, _ in runs):
                    continue
                if better == "higher":
                    # Total work over total time: weight each round's rate by its duration.
                    total_time = sum(wall for _, wall, _ in runs)
                    metric.values[name] = sum(values[suffix] * wall for values, wall, _ in runs) / total_time
                else:
                    metric.values[name] = statistics.median(values[suffix] for values, _, _ in runs)
                metric.client_cpu[name] = max(cpu for _, _, cpu in runs)
            metrics.append(metric)
        summary = "  ".join(f"{m.name.split(': ')[-1] if ': ' in m.name else m.unit}: "
                            + " ".join(f"{name[0].upper()} {m.values[name]:.1f}"
                                       for name in ("distribution", "lading") if name in m.values)
                            for m in metrics[-len(test.metrics):])
        log(f"{test.name}: {summary}")
    return metrics
