"""`python -m bench [--quick] [--profile embedded|production] [--json out.json]`

Starts CNCF Distribution and Lading on loopback, seeds both with the same fixture, runs every
row in alternating A/B rounds and prints one Markdown table (plus JSON with `--json`).
`--rows REGEX` runs only matching rows; `--py-spy DIR` samples the Lading processes meanwhile.
A second Lading with the gateway's manifest cache off serves the "gateway cache off" rows; the
start-up rows (embedded profile) start fresh registries of their own (bench/startup.py).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from pathlib import Path

from bench import profile, registries, report, startup, workload
from bench.loadgen import ensure_hey, ensure_wrk, run_wrk

# Issue 13: `make run` answers /v2/ within this (the embedded profile).
STARTUP_BOUND_SECONDS = 1.0
# Idle memory is read this long after the registries answered (children settle their start-up).
IDLE_SETTLE_SECONDS = 2.0


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: 1 s per wrk run, one round, 64 MiB / 16 MiB blobs, 48 images, "
                             "16 × 32 MiB (not 256 MiB) in the memory test, 3 starts (not 7) per registry")
    parser.add_argument("--profile", choices=("embedded", "production"), default="embedded",
                        help="embedded: SQLite + filesystem (default); production: PostgreSQL + SeaweedFS S3 "
                             "(Distribution then stores in the same SeaweedFS)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rows", help="only tests whose name matches this regular expression")
    parser.add_argument("--py-spy", type=Path, dest="py_spy", help="record py-spy profiles of Lading here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = workload.QUICK if args.quick else workload.FULL
    registries.ensure_distribution()
    ensure_wrk()
    ensure_hey()
    started = time.monotonic()
    tests = workload.build_tests(sizes)
    if args.rows:
        tests = [t for t in tests if re.search(args.rows, t.name)]
    metrics: list[workload.Metric] = []
    if args.profile == "embedded" and (not args.rows or re.search(args.rows, "start-up")):
        runs = 3 if args.quick else 7
        _log(f"start-up: {runs} starts of each registry")
        starts = startup.measure_startups(runs)
        metrics += _startup_metrics(starts)
    with contextlib.ExitStack() as stack:
        lading_env: dict[str, str] = {}
        s3 = None
        if args.profile == "production":
            _log("starting PostgreSQL and SeaweedFS")
            database_url, s3 = stack.enter_context(registries.production_backends())
            lading_env = registries.lading_production_env(database_url, s3)
        _log("starting Distribution and Lading")
        distribution = stack.enter_context(registries.distribution(s3=s3))
        lading = stack.enter_context(registries.lading(env=lading_env))
        ladings = {workload.DEFAULT: lading}
        if any(test.variant == workload.UNCACHED for test in tests):
            uncached_env = {**lading_env, "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "0"}
            ladings[workload.UNCACHED] = stack.enter_context(registries.lading(env=uncached_env))
        time.sleep(IDLE_SETTLE_SECONDS)
        metrics.append(workload.Metric(
            "idle RSS right after start, whole registry (every process)", "MiB", "lower",
            values={"distribution": registries.tree_rss_mib(distribution.processes["registry"]),
                    "lading": registries.tree_rss_mib(lading.processes["serve+metadata"])},
            limit=workload.IDLE_BOUND_MIB))
        metrics.append(workload.Metric(
            "idle PSS right after start, whole registry (pages its processes share counted once)", "MiB", "lower",
            values={"distribution": registries.tree_pss_mib(distribution.processes["registry"]),
                    "lading": registries.tree_pss_mib(lading.processes["serve+metadata"])}))
        for registry in [distribution, *ladings.values()]:
            registry.fixture = workload.seed_registry(registry)
            # Warm-up (connection pools, caches, first-call imports), not measured.
            run_wrk(f"{registry.base_url}/v2/{workload.APP}/manifests/latest", method="GET",
                    accept=workload.ACCEPT, connections=16, seconds=1)
        _log(f"lading processes: {lading.processes}")
        if args.py_spy:
            stack.enter_context(profile.recording(lading.processes, args.py_spy))
        metrics += workload.run_tests(tests, distribution, ladings, sizes, _log)
        lading_peaks = lading.run_peaks_mib()
        for label, peak in sorted(lading_peaks.items()):
            metrics.append(workload.Metric(f"peak RSS (VmHWM) over the whole run, Lading {label} process", "MiB",
                                           "lower", values={"lading": peak}))
        metrics.append(workload.Metric("peak RSS (VmHWM) over the whole run, whole registry (Lading: sum over "
                                       "every process)", "MiB", "lower", values={
                                           "distribution": sum(distribution.run_peaks_mib().values()),
                                           "lading": sum(lading_peaks.values())}))
    if args.py_spy:
        for raw in sorted(args.py_spy.glob("*.txt")):
            print(profile.summarize(raw), file=sys.stderr)
    elapsed = time.monotonic() - started
    settings = {"quick": args.quick, "profile": args.profile, "sizes": sizes.__dict__ | {"concurrency": list(
        sizes.concurrency)}, "seconds": round(elapsed, 1)}
    print(f"\nLading vs CNCF Distribution, profile {args.profile}{', quick' if args.quick else ''}, "
          f"{elapsed:.0f} s. Ratio: Lading÷Distribution for rates, Distribution÷Lading for latency "
          "and memory (so >1 always means Lading is better).\n")
    print(report.table(metrics))
    if args.json:
        report.write_json(args.json, metrics=metrics, settings=settings)
    return 0


def _startup_metrics(starts: dict[str, list[startup.Start]]) -> list[workload.Metric]:
    """Medians of the measured starts (wall time and CPU time of every process)."""
    def median(name: str, attribute: str) -> float:
        return statistics.median(getattr(start, attribute) for start in starts[name])

    return [
        workload.Metric("start-up: `lading serve` (venv present) until GET /v2/ answers 200, median", "s", "lower",
                        values={name: median(name, "seconds") for name in starts}, limit=STARTUP_BOUND_SECONDS),
        workload.Metric("start-up: CPU time of every process until then, median", "s", "lower",
                        values={name: median(name, "cpu_seconds") for name in starts}),
    ]


if __name__ == "__main__":
    sys.exit(main())
