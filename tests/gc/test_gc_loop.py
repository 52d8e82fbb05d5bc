"""The periodic collector inside the metadata service (gc.interval_seconds)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from lading.metadata.v1 import admin_pb2 as pb

from tests.gc.stack_support import gc_stack, image_of, layer, push_retrying, stored, stubs


async def test_the_service_collects_on_its_own(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with gc_stack("sqlite", request, tmp_path, LADING_GC__INTERVAL_SECONDS="0.2") as stack:
        garbage, kept = layer(2048), image_of([layer(1024)])
        def push() -> None:
            with httpx.Client(base_url=stack.base_url, timeout=30) as client:
                # Zero delay: a run between the blob uploads and the manifest PUT makes it start over.
                push_retrying(client, "loop/app", kept, "v1")
                posted = client.post("/v2/loop/app/blobs/uploads/", params={"digest": garbage.digest},
                                     content=garbage.data, headers={"Content-Type": "application/octet-stream"})
                # Zero delay and a run every 0.2 s: the upload may race a run; both answers are clean.
                assert posted.status_code in (201, 404), posted.text

        await asyncio.to_thread(push)
        async with stubs(stack) as (admin, blob):
            for _ in range(200):  # a deadline, not a timing assertion
                if not await stored(blob, garbage.digest):
                    break
                await asyncio.sleep(0.05)
            assert not await stored(blob, garbage.digest)
            for item in kept.blobs:
                assert await stored(blob, item.digest)
            runs = (await admin.GcStats(pb.GcStatsRequest(last_runs=50), timeout=10)).runs
            assert runs and sum(r.blobs_deleted for r in runs) >= 1
