"""`python -m bench.small_images [--rounds N] [--images N] [--env K=V ...]`: the small-images row
against Lading alone, with the CPU time each process of `lading serve` spent per image.

Why: on a shared 2-core machine the images/s of the full bench swing with whatever else runs,
while CPU milliseconds per image per process (utime + stime from /proc, so kernel time counts)
move only with Lading's own work. Each round pushes `--images` new images (bench.workload's
small-images workload: 3 layers of 4-64 KiB + a config, each POST then one PUT, then the
manifest) from `--clients` clients into one fresh `lading serve`, after one untimed warm-up round.
Prints one line per round and the medians. `--root` runs another checkout's code (A/B runs):
its `lading serve` and its workload, this file's driver.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.small_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--env", action="append", default=[], metavar="LADING_X=VALUE")
    parser.add_argument("--root", type=Path, help="checkout whose Lading and workload to run (default: this one)")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    if args.root is not None:
        sys.path.insert(0, str(args.root.resolve()))
        for name in [m for m in sys.modules if m == "bench" or m.startswith(("bench.", "tests", "services"))]:
            del sys.modules[name]
    from bench import registries, workload

    sizes = workload.Sizes(seconds=1, rounds=args.rounds, big_blob=0, chunk=0, shared_blob=0, pull_clients=1,
                           images=args.images, image_clients=args.clients, memory_blob=0, memory_clients=0)
    test = workload.small_images_test(sizes)
    env = dict(item.split("=", 1) for item in args.env)
    ticks = os.sysconf("SC_CLK_TCK")
    rows: list[dict[str, float]] = []
    with registries.lading(env=env) as lading:
        labels = sorted(lading.processes)
        test.run(lading, None, 1000)  # warm-up: imports, first connections, SQLite pages
        for round_no in range(args.rounds):
            before = {label: _cpu_ticks(lading.processes[label]) for label in labels}
            results, wall, _ = test.run(lading, None, round_no)
            after = {label: _cpu_ticks(lading.processes[label]) for label in labels}
            row = {"images/s": results["images/s"]}
            for label in labels:
                row[label] = (after[label] - before[label]) / ticks * 1000 / args.images
            row["total"] = sum(row[label] for label in labels)
            rows.append(row)
            print(f"{args.label} round {round_no}: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(f"{args.label} median: " + "  ".join(f"{k} {v:.2f}" for k, v in medians.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
