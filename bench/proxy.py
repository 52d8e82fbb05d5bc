"""`python -m bench.proxy [--size-mib N] [--rounds R] [--profile embedded|production]`: the pull-through cache's bench rows.

CNCF Distribution is the upstream of a `lading serve` (prefix `cache/`). Each round pushes a fresh
random blob into Distribution, then times, one client, one blob at a time:
- **cold**: a pull through the cache (fetched from Distribution, stored, streamed) against a
  direct pull of the same blob from Distribution; ratio = direct ÷ cold seconds (the issue asks
  ≥ 0.8);
- **cold, verified**: the same with a second fresh blob, each client hashing the bytes as they
  arrive and checking the digest at the end, as containerd and skopeo do (both sides pay for it);
- **warm**: a second pull through the cache (now local) against a pull of the same bytes pushed
  into an ordinary Lading repository; ratio = local ÷ warm seconds (≥ 0.95).
The first pull of each pair alternates between rounds. Medians are printed as a Markdown table.
`--profile production`: Lading on PostgreSQL (`LADING_TEST_DATABASE_URL`, else a throwaway
server) and SeaweedFS S3, Distribution storing in the same SeaweedFS (bench/registries.py).
`--py-spy DIR` samples the Lading processes meanwhile (bench/profile.py) and prints their top frames.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import profile, registries
from bench.transfer import Client

MiB = 1024 * 1024


def _timed(client: Client, repository: str, digest: str, size: int, *, verified: bool = False) -> float:
    started = time.perf_counter()
    received = client.pull_verified(repository, digest) if verified else client.pull(repository, digest)
    elapsed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"pulled {received} bytes of {repository}@{digest}, expected {size}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--py-spy", type=Path, dest="py_spy", help="record py-spy profiles of Lading here")
    parser.add_argument("--profile", choices=("embedded", "production"), default="embedded",
                        help="embedded: SQLite + filesystem (default); production: PostgreSQL + SeaweedFS S3")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    rows: dict[str, list[float]] = {"cold": [], "direct": [], "cold verified": [], "direct verified": [],
                                    "warm": [], "local": []}
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        s3 = None
        if args.profile == "production":
            database_url, s3 = stack.enter_context(registries.production_backends())
            env = registries.lading_production_env(database_url, s3)
        upstream = stack.enter_context(registries.distribution(s3=s3))
        config = Path(tempfile.mkdtemp(prefix="lading-bench-proxy-")) / "lading.toml"
        config.write_text(f'[[proxy.upstreams]]\nname = "bench"\nurl = "{upstream.base_url}"\nprefix = "cache/"\n')
        lading = stack.enter_context(registries.lading(env={**env, "LADING_CONFIG_FILE": str(config)}))
        with (profile.recording(lading.processes, args.py_spy) if args.py_spy else contextlib.nullcontext()):
            up, local = Client(upstream.base_url), Client(lading.base_url)
            for round_no in range(args.rounds):
                data = os.urandom(size)
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                up.push_monolithic("bench/app", digest, data)
                pairs = [("cold", lading.base_url, "cache/bench/app"), ("direct", upstream.base_url, "bench/app")]
                for name, _, repository in pairs if round_no % 2 == 0 else reversed(pairs):
                    client = local if name == "cold" else up
                    rows[name].append(_timed(client, repository, digest, size))
                # The same with a fresh blob, both clients verifying the digest as they read.
                other = os.urandom(size)
                other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
                up.push_monolithic("bench/app", other_digest, other)
                for name, client, repository in ([("cold verified", local, "cache/bench/app"),
                                                  ("direct verified", up, "bench/app")][::1 if round_no % 2 else -1]):
                    rows[name].append(_timed(client, repository, other_digest, size, verified=True))
                del other
                # Only now the same bytes into an ordinary repository (pushed before, they made the
                # "cold" pull a local read: the blob plane had them already and only asked the
                # upstream whether it holds them too).
                local.push_monolithic("own/app", digest, data)
                pairs = [("warm", "cache/bench/app"), ("local", "own/app")]
                for name, repository in pairs if round_no % 2 == 0 else reversed(pairs):
                    rows[name].append(_timed(local, repository, digest, size))
                print(f"[bench.proxy] round {round_no + 1}: " + ", ".join(
                    f"{name} {values[-1]:.3f} s" for name, values in rows.items()), file=sys.stderr)
            up.close()
            local.close()
    if args.py_spy:
        for raw in sorted(args.py_spy.glob("*.txt")):
            print(profile.summarize(raw), file=sys.stderr)
    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"\nPull-through cache, profile {args.profile}, {args.size_mib} MiB blobs, {args.rounds} rounds "
          "(median seconds; ratio > 1: the cache is faster)\n")
    print("| row | through the cache | reference | ratio | bound |")
    print("|---|---|---|---|---|")
    print(f"| cold pull (fetch + store + stream) vs direct pull from Distribution | {median['cold']:.3f} s | "
          f"{median['direct']:.3f} s | {median['direct'] / median['cold']:.2f} | ≥ 0.8 |")
    print(f"| cold pull, both clients verifying the digest as they read | {median['cold verified']:.3f} s | "
          f"{median['direct verified']:.3f} s | {median['direct verified'] / median['cold verified']:.2f} | |")
    print(f"| warm pull vs a local Lading pull | {median['warm']:.3f} s | {median['local']:.3f} s | "
          f"{median['local'] / median['warm']:.2f} | ≥ 0.95 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
