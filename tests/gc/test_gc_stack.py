"""GC through a real `lading serve` stack (SQLite and PostgreSQL): under fire, and the
HEAD-then-delete race reproduced deterministically with the run's test hook."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from lading.metadata.v1 import admin_pb2 as pb

from services.metadata.gc.worker import run_gc
from tests.gc.stack_support import (
    gc_stack,
    image_of,
    layer,
    push_retrying,
    stored,
    stubs,
    troubles_on_failure,
    try_push,
)
from tests.support import oci
from tests.support.stack import Stack

CLIENTS = 4
ROUNDS = 6


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with gc_stack(request.param, request, tmp_path_factory.mktemp(f"gc-{request.param}")) as running:
        yield running


async def test_gc_under_fire(stack: Stack) -> None:
    shared = [layer(16 * 1024) for _ in range(6)]
    kept: dict[tuple[str, str], oci.Manifest] = {}
    pushed_blobs: dict[str, oci.Blob] = {}
    lock = threading.Lock()
    retries = [0]
    done = threading.Event()

    def client_work(number: int) -> None:
        rng = random.Random(number)
        repo = f"fire/client{number}"
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            for round_ in range(ROUNDS):
                image = image_of([*rng.sample(shared, 2), layer(8 * 1024)])
                tag = f"r{round_}"
                retries[0] += push_retrying(client, repo, image, tag)
                with lock:
                    pushed_blobs.update({b.digest: b for b in image.blobs})
                    kept[(repo, tag)] = image
                if round_ % 2 == 1:  # delete every other image again, by digest
                    deleted = client.delete(f"/v2/{repo}/manifests/{image.digest}")
                    assert deleted.status_code == 202, deleted.text
                    with lock:
                        del kept[(repo, tag)]

    async def gc_loop() -> tuple[int, int, int, float]:
        runs = blobs = freed = 0
        started = time.monotonic()
        async with stubs(stack) as (admin, blob):
            while not done.is_set():
                report = await run_gc(admin, blob)
                runs += 1
                blobs += report.blobs_deleted
                freed += report.bytes_freed
                # Zero review delay: a run between a blob upload and its manifest PUT unlinks the
                # blob and the client must push again; pausing between runs lets pushes finish.
                await asyncio.sleep(0.25)
        return runs, blobs, freed, time.monotonic() - started

    loop_task = asyncio.create_task(gc_loop())
    try:
        with troubles_on_failure(stack):  # a 500 is explained only in the planes' logs
            await asyncio.gather(*(asyncio.to_thread(client_work, n) for n in range(CLIENTS)))
    finally:
        done.set()
    runs, blobs_during, freed_during, seconds = await loop_task

    async with stubs(stack) as (admin, blob):
        final = await run_gc(admin, blob)
        live = {b.digest for image in kept.values() for b in image.blobs}
        dead = set(pushed_blobs) - live
        still_stored = [d for d in live if await stored(blob, d)]
        dead_stored = [d for d in dead if await stored(blob, d)]
        stats = await admin.GcStats(pb.GcStatsRequest(last_runs=3), timeout=10)
    assert len(still_stored) == len(live) and dead_stored == []
    assert dead, "the scenario must produce garbage"
    assert stats.blob_candidates == 0 and stats.link_candidates == 0 and stats.deleting_blobs == 0

    def pull_everything() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            for (repo, tag), image in kept.items():
                got = oci.get_manifest(client, repo, tag)
                assert got.status_code == 200 and got.content == image.payload
                for item in image.blobs:
                    pulled = client.get(f"/v2/{repo}/blobs/{item.digest}", follow_redirects=True)
                    assert pulled.status_code == 200 and pulled.content == item.data

    await asyncio.to_thread(pull_everything)
    print(f"\nGC under fire ({stack.data_dir.parent.name}): {CLIENTS} clients x {ROUNDS} images, {runs} GC runs in "
          f"{seconds:.1f}s during the pushes, {blobs_during + final.blobs_deleted} blobs / "
          f"{freed_during + final.bytes_freed} bytes freed; kept {len(kept)} tags, {len(live)} live blobs all "
          f"stored, {len(dead)} unreferenced blobs all gone; {retries[0]} push retries")


async def test_head_then_delete_race_is_closed(stack: Stack) -> None:
    repo = "race/app"
    target = layer(4096)
    image = image_of([target])
    config = image.blobs[0]
    seen: dict[str, object] = {}
    client = httpx.Client(base_url=stack.base_url, timeout=30)

    def upload(blob: oci.Blob) -> httpx.Response:
        return client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data,
                           headers={"Content-Type": "application/octet-stream"})

    def before() -> None:
        assert upload(target).status_code == 201
        # The client checks the layer is there and decides to skip its upload...
        assert client.head(f"/v2/{repo}/blobs/{target.digest}").status_code == 200
        assert upload(config).status_code == 201

    def probe() -> None:
        seen["head"] = client.head(f"/v2/{repo}/blobs/{target.digest}").status_code
        seen["manifest"] = oci.push_manifest_only(client, repo, "v1", image)
        seen["reupload"] = upload(target)
        seen["mount"] = client.post("/v2/other/blobs/uploads/", params={"mount": target.digest, "from": repo})

    async def between_mark_and_delete(marked: list) -> None:
        # ...while the GC has claimed it (nothing references it) but not yet deleted the bytes.
        seen["marked"] = {m.digest for m in marked}
        await asyncio.to_thread(probe)

    def after() -> None:
        assert seen["head"] == 404
        oci.assert_error(seen["manifest"], 400, "MANIFEST_BLOB_UNKNOWN")
        oci.assert_error(seen["reupload"], 404, "BLOB_UNKNOWN")
        assert "upload it again" in seen["reupload"].text
        assert seen["mount"].status_code == 202  # no mount: the client is told to upload
        # Nothing points at missing bytes: the manifest was never stored.
        assert oci.get_manifest(client, repo, "v1").status_code == 404
        # Uploading again works, and so does the push.
        ok, why = try_push(client, repo, image, "v1")
        assert ok, why
        assert client.get(f"/v2/{repo}/blobs/{target.digest}", follow_redirects=True).content == target.data

    try:
        await asyncio.to_thread(before)
        async with stubs(stack) as (admin, blob):
            report = await run_gc(admin, blob, after_mark=between_mark_and_delete)
            assert target.digest in seen["marked"] and report.blobs_deleted >= 1
            assert not await stored(blob, target.digest)
        await asyncio.to_thread(after)
    finally:
        await asyncio.to_thread(client.close)
