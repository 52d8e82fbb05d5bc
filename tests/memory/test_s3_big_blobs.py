"""Issue 5, item 3, on the S3 backend: 16 concurrent big pushes, then 16 concurrent pulls streamed
through Lading (presigned redirects off), keep every Lading process under 300 MiB resident.

`lading serve` runs with SQLite metadata and the S3 blob backend on a throwaway SeaweedFS (its own
process: its memory is not Lading's and is not measured), with the default part size (16 MiB) and
part buffer budget (`blob.s3.part_buffer_budget_bytes`). Each client streams a distinct generated
blob (tests/memory/streams) in one monolithic PUT; the blob plane turns each into a multipart
upload, so without a budget every write holds a part uploading and a part filling. The pulls run
with `blob.s3.redirect_reads` off, so the bytes pass through the blob plane and the gateway instead
of going straight to S3. VmHWM (the kernel's peak RSS) is checked per phase, reset in between; the
failure message carries the sampled VmRSS timeline.

LADING_TEST_S3_MEMORY_BLOB_MIB sets the blob size (default 64 MiB; the issue's 256 works too, with
4 GiB going through SeaweedFS).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.memory.streams import MiB, PatternBlob, push_then_pull_within_bound
from tests.support.seaweedfs import seaweedfs_server
from tests.support.stack import Stack

CLIENTS = 16
BLOB_BYTES = int(os.environ.get("LADING_TEST_S3_MEMORY_BLOB_MIB", "64")) * MiB
REPOSITORY = "memory/s3"

pytestmark = [pytest.mark.s3, pytest.mark.timeout(1200)]


def test_sixteen_concurrent_big_pushes_and_streamed_pulls_on_s3_stay_under_300_mib(record_property) -> None:
    work = Path(tempfile.mkdtemp(prefix="lading-memory-s3-"))
    try:
        free = shutil.disk_usage(work).free
        # SeaweedFS keeps the staged part and the committed copy of every blob.
        needed = 2 * CLIENTS * BLOB_BYTES + 2048 * MiB
        if free < needed:
            pytest.skip(f"needs {needed // MiB} MiB free in {work.parent}, has {free // MiB}")
        with seaweedfs_server() as weed, Stack(work / "data", name="lading-serve-memory-s3", env={
            "LADING_BLOB__BACKEND": "s3",
            "LADING_BLOB__S3__ENDPOINT": weed.endpoint,
            "LADING_BLOB__S3__REGION": weed.region,
            "LADING_BLOB__S3__BUCKET": weed.bucket,
            "LADING_BLOB__S3__ACCESS_KEY": weed.access_key,
            "LADING_BLOB__S3__SECRET_KEY": weed.secret_key,
            "LADING_BLOB__S3__SECURE": "false",
            "LADING_BLOB__S3__PATH_STYLE": "true",
            "LADING_BLOB__S3__KEY_PREFIX": weed.new_prefix(),
            "LADING_BLOB__S3__REDIRECT_READS": "false",
            "LADING_BLOB__S3__READ_TIMEOUT_SECONDS": "300",
        }) as stack:
            blobs = [PatternBlob(1000 + seed, BLOB_BYTES) for seed in range(CLIENTS)]
            push_then_pull_within_bound(stack, REPOSITORY, blobs, f"S3, {CLIENTS} × {BLOB_BYTES // MiB} MiB",
                                        record_property)
    finally:
        shutil.rmtree(work, ignore_errors=True)
