"""`python -m bench.governance [--requests N] [--runs R]`: what the governance features cost on the
push and pull paths (issue 16's bench rows, with and without policies).

One `lading serve` (SQLite, filesystem) per run, the gateway's manifest cache off (TTL 0, so that
every manifest GET reaches the metadata plane and its pull policies). One client, sequential
requests, medians of N each:
- **blob upload**: POST + PUT of a fresh 1 KiB blob;
- **tagged manifest PUT**: a new image manifest under a new tag (its blobs already uploaded);
- **manifest GET by tag**: the same signed and scanned image again and again.
Variants, in this order on the same registry: "no rules" (the audit log is on, as by default), then
"policies": an immutable rule, a quota, a signature policy and a vulnerability policy (severity
high, reports at most 7 days old) all covering the repository, set with the `lading` CLI. The image
pulled is signed (cosign's tag convention) and has a SARIF report without findings, so every GET
passes the policies rather than stopping at a refusal. Prints a Markdown table (ms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.transfer import OCI_MANIFEST, Client, image_manifest
from tests.support.stack import Stack, child_env, lading_command

REPOSITORY = "bench/governed"
SARIF = "application/sarif+json"


def _blob(client: Client, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_monolithic(REPOSITORY, digest, data)
    return digest, len(data)


def _median_ms(count: int, call: Callable[[int], None]) -> float:
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _measure(client: Client, count: int, variant: str) -> dict[str, float]:
    config = _blob(client, json.dumps({"variant": variant}).encode())
    layer = _blob(client, os.urandom(1024))
    rows = {"blob upload": _median_ms(count, lambda _i: _blob(client, os.urandom(1024)))}
    rows["tagged manifest PUT"] = _median_ms(count, lambda i: client.put_manifest(
        REPOSITORY, f"{variant}-{i}", image_manifest(config, [layer, _blob_fixed(variant, i)])))
    accept = {"Accept": OCI_MANIFEST}
    rows["manifest GET by tag"] = _median_ms(count, lambda _i: client.request(
        "GET", f"/v2/{REPOSITORY}/manifests/v1", headers=accept))
    return rows


_FIXED: dict[tuple[str, int], tuple[str, int]] = {}


def _blob_fixed(variant: str, i: int) -> tuple[str, int]:
    """The distinct layer of the `i`-th manifest of `variant` (uploaded by `_prepare`)."""
    return _FIXED[(variant, i)]


def _prepare(client: Client, count: int, variant: str) -> None:
    """Uploads the distinct layer of each manifest the PUT row pushes (outside the timing)."""
    for i in range(count):
        _FIXED[(variant, i)] = _blob(client, os.urandom(512))


def _signed_scanned_image(client: Client) -> None:
    config = _blob(client, b"{}")
    layer = _blob(client, os.urandom(2048))
    image = image_manifest(config, [layer])
    client.put_manifest(REPOSITORY, "v1", image)
    digest = "sha256:" + hashlib.sha256(image).hexdigest()
    signature = image_manifest(config, [_blob(client, os.urandom(256))])
    client.put_manifest(REPOSITORY, "sha256-" + digest.split(":", 1)[1] + ".sig", signature)
    document = _blob(client, json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "bench"}},
                                                                         "results": []}]}).encode())
    report = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SARIF,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": _blob(client, b"{}")[0], "size": 2},
        "layers": [{"mediaType": SARIF, "digest": document[0], "size": document[1]}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(image)},
    }, separators=(",", ":")).encode()
    client.put_manifest(REPOSITORY, "sha256:" + hashlib.sha256(report).hexdigest(), report)


def _lading(stack: Stack, *args: str) -> None:
    run = stack.data_dir / "run"
    subprocess.run(lading_command(*args, "--metadata", f"unix:{run / 'metadata.sock'}"), env=child_env(),
                   check=True, capture_output=True, timeout=60)


def _policies_on(stack: Stack) -> None:
    _lading(stack, "immutable", "add", "bench-releases", "--repository", "bench/*", "--tag", "v*")
    _lading(stack, "quota", "set", "bench", "--repository", "bench/*", "--limit", "10GiB")
    _lading(stack, "signature", "require", "bench-signed", "--repository", "bench/*")
    _lading(stack, "vuln", "require", "bench-scanned", "--repository", "bench/*", "--severity", "high",
            "--max-age", "7d")


def run_once(count: int) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="lading-bench-governance-"))
    stack = Stack(work / "data", env={"LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "0",
                                      "LADING_GOVERNANCE__POLICY_CACHE_SECONDS": "1"}, name="lading-serve")
    try:
        stack.start(timeout=90)
        client = Client(stack.base_url)
        _signed_scanned_image(client)
        results = {}
        for variant in ("no rules", "policies"):
            if variant == "policies":
                _policies_on(stack)
                time.sleep(1.2)  # past the policy cache
            _prepare(client, count, variant.replace(" ", "-"))
            results[variant] = _measure(client, count, variant.replace(" ", "-"))
        client.close()
        return results
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.governance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=150, help="requests per row and variant (median)")
    parser.add_argument("--runs", type=int, default=2, help="runs, each on a fresh registry")
    args = parser.parse_args(argv)
    runs = []
    for number in range(args.runs):
        runs.append(run_once(args.requests))
        print(f"[bench.governance] run {number + 1}: {runs[-1]}", file=sys.stderr)
    columns = ["blob upload", "tagged manifest PUT", "manifest GET by tag"]
    print(f"\nGovernance cost, SQLite, one client, medians of {args.requests} requests (ms), "
          f"{args.runs} run(s) separated by /\n")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for variant in ("no rules", "policies"):
        cells = [" / ".join(f"{run[variant][column]:.1f}" for run in runs) for column in columns]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
