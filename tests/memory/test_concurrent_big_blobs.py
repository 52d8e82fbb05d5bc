"""Issue 5, item 3: blob bytes stream, so 16 concurrent 256 MiB pushes and then 16 concurrent pulls
keep every Lading process (gateway, metadata, blob) under 300 MiB resident.

`lading serve` (embedded: SQLite + filesystem) runs in a temporary folder that is deleted at the
end (the 16 blobs take 4 GiB). Each client streams a distinct generated blob (tests/memory/streams:
made and hashed 1 MiB at a time, never held whole) in one monolithic PUT, then pulls it back and
checks its digest. A thread samples VmRSS of the three processes from /proc meanwhile; the bound is
checked against VmHWM, the kernel's own peak, per phase (VmHWM is reset between the phases), and
the failure message carries the sampled timeline.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.memory.streams import MiB, PatternBlob, RssSampler, process_labels, pull_hashed, push_streamed
from tests.support.stack import Stack

CLIENTS = 16
BLOB_BYTES = 256 * MiB
BOUND_MIB = 300
REPOSITORY = "memory/big"

# 4 GiB pushed then pulled on a 2-core machine: about a minute, more when the machine is busy.
pytestmark = pytest.mark.timeout(900)


def _rounded(peaks: dict[str, float]) -> dict[str, float]:
    return {label: round(peak, 1) for label, peak in sorted(peaks.items())}


def _over(peaks: dict[str, float]) -> dict[str, float]:
    return {label: round(peak, 1) for label, peak in peaks.items() if peak >= BOUND_MIB}


def test_sixteen_concurrent_256_mib_pushes_and_pulls_stay_under_300_mib(record_property) -> None:
    work = Path(tempfile.mkdtemp(prefix="lading-memory-"))
    try:
        free = shutil.disk_usage(work).free
        if free < CLIENTS * BLOB_BYTES + 2 * 1024 * MiB:
            pytest.skip(f"needs {CLIENTS * BLOB_BYTES // MiB + 2048} MiB free in {work.parent}, has {free // MiB}")
        with Stack(work / "data", name="lading-serve-memory") as stack:
            processes = process_labels(stack.process.children())
            assert sorted(processes) == ["blob", "gateway", "metadata"], processes
            blobs = [PatternBlob(seed, BLOB_BYTES) for seed in range(CLIENTS)]
            with RssSampler(processes) as sampler, ThreadPoolExecutor(CLIENTS) as pool:
                digests = list(pool.map(lambda blob: push_streamed(stack.base_url, REPOSITORY, blob), blobs))
                push_peaks = sampler.peaks_mib()
                sampler.reset_peaks()
                pulled = list(pool.map(lambda digest: pull_hashed(stack.base_url, REPOSITORY, digest), digests))
                pull_peaks = sampler.peaks_mib()
            assert len(set(digests)) == CLIENTS
            for digest, (received, pulled_digest) in zip(digests, pulled, strict=True):
                assert received == BLOB_BYTES, f"{digest}: pulled {received} of {BLOB_BYTES} bytes"
                assert pulled_digest == digest, f"pulled bytes hash to {pulled_digest}, pushed {digest}"
            over_push, over_pull = _over(push_peaks), _over(pull_peaks)
            assert not over_push and not over_pull, (
                f"{CLIENTS} × {BLOB_BYTES // MiB} MiB: Lading processes reached {BOUND_MIB} MiB resident "
                f"(VmHWM) during the pushes {over_push} / the pulls {over_pull}; all peaks: pushes "
                f"{_rounded(push_peaks)}, pulls {_rounded(pull_peaks)}. VmRSS samples (MiB):\n" + sampler.describe()
            )
        for label in sorted(processes):
            record_property(f"peak_rss_mib_{label}_push", round(push_peaks[label], 1))
            record_property(f"peak_rss_mib_{label}_pull", round(pull_peaks[label], 1))
        print(f"peak RSS (MiB) pushes {_rounded(push_peaks)}, pulls {_rounded(pull_peaks)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
