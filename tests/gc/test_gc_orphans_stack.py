"""Orphan bytes through a real `lading serve` stack: blobs committed on the blob plane whose
LinkBlob never happened are reclaimed by `lading gc` once past gc.orphan_grace_seconds (0 here),
linked blobs are never touched, and a link racing the claim gets "upload it again". SQLite and
PostgreSQL on the filesystem, and PostgreSQL on S3 (SeaweedFS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from lading.blob.v1 import blob_pb2
from lading.metadata.v1 import admin_pb2 as pb

from services.common.errors import ErrorKind, from_rpc_error
from services.metadata.gc.worker import RunReport, _delete_bytes, run_gc
from tests.gc.stack_support import gc_stack, image_of, layer, stored, stubs, targets, try_push
from tests.support import oci
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server
from tests.support.stack import Stack, child_env, lading_command


def s3_env(server: SeaweedFS) -> dict[str, str]:
    """An S3 blob backend on `server`, under a fresh key prefix (fresh, empty storage)."""
    return server.lading_env()


@contextlib.contextmanager
def orphan_stack(profile: str, request: pytest.FixtureRequest, root: Path, **extra: str) -> Iterator[Stack]:
    with contextlib.ExitStack() as resources:
        if profile.endswith("-s3"):
            extra = {**s3_env(resources.enter_context(seaweedfs_server())), **extra}
        yield resources.enter_context(gc_stack(profile.removesuffix("-s3"), request, root, **extra))


@pytest.fixture(scope="module", params=[
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"orphans-{request.param}")
    with orphan_stack(request.param, request, root, LADING_GC__ORPHAN_GRACE_SECONDS="0") as running:
        yield running


async def commit_orphan(blob: Any, data: bytes) -> str:
    """What a gateway that crashed between CommitUpload and LinkBlob leaves: stored bytes, no row."""
    digest = oci.sha256(data)
    started = await blob.StartUpload(blob_pb2.StartUploadRequest(repository="crashed/push"), timeout=10)
    await blob.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=started.status.upload_id, repository="crashed/push", digest=digest, expected_size=len(data),
        final_data=data, final_offset=-1), timeout=10)
    return digest


async def listed_blob(blob: Any, digest: str) -> Any:
    """The blob plane's listing entry (digest, size, modified_at) of `digest`."""
    token = ""
    while True:
        page = await blob.ListBlobs(blob_pb2.ListBlobsRequest(page_size=1000, page_token=token), timeout=10)
        for item in page.blobs:
            if item.digest == digest:
                return item
        token = page.next_page_token
        assert token, f"{digest} is not listed"


async def all_listed(blob: Any, page_size: int) -> list[str]:
    digests, token = [], ""
    while True:
        page = await blob.ListBlobs(blob_pb2.ListBlobsRequest(page_size=page_size, page_token=token), timeout=10)
        digests += [b.digest for b in page.blobs]
        token = page.next_page_token
        if not token:
            return digests


def lading_gc(stack: Stack, *args: str) -> str:
    metadata, blob = targets(stack)
    done = subprocess.run(lading_command("gc", *args, "--metadata", metadata, "--blob", blob),
                          env=child_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_orphans_are_reclaimed_and_linked_blobs_kept(stack: Stack) -> None:
    image = image_of([layer(2048), layer(1024)])
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        ok, why = try_push(client, "orphans/app", image, "v1")
        assert ok, why
    async with stubs(stack) as (admin, blob):
        orphans = [await commit_orphan(blob, os.urandom(size)) for size in (1000, 3000)]
        listed = await all_listed(blob, 1000)
        assert set(listed) == {*orphans, *(b.digest for b in image.blobs)}
        assert await all_listed(blob, 1) == listed == sorted(listed)

        # A dry run reports them (and the CLI prints them) but takes nothing.
        plan = await run_gc(admin, blob, dry_run=True)
        assert (plan.orphans, plan.orphan_bytes) == (2, 4000)
        assert "2 orphan blob(s)" in await asyncio.to_thread(lading_gc, stack, "--dry-run")
        assert all([await stored(blob, digest) for digest in orphans])

        report = await run_gc(admin, blob)
        assert (report.orphans, report.orphan_bytes, report.errors) == (2, 4000, 0)
        assert report.blobs_deleted >= 2 and report.bytes_freed >= 4000
        assert not any([await stored(blob, digest) for digest in orphans])
        assert all([await stored(blob, item.digest) for item in image.blobs])
        stats = await admin.GcStats(pb.GcStatsRequest(last_runs=1), timeout=10)
        assert stats.runs[0].blobs_deleted == report.blobs_deleted and stats.deleting_blobs == 0
        again = await run_gc(admin, blob)
        assert (again.orphans, again.blobs_deleted) == (0, 0)

        with pytest.raises(grpc.RpcError) as caught:
            await blob.ListBlobs(blob_pb2.ListBlobsRequest(page_token="uploads/elsewhere"), timeout=10)
        assert from_rpc_error(caught.value).kind is ErrorKind.PAGINATION_NUMBER_INVALID

    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        got = oci.get_manifest(client, "orphans/app", "v1")
        assert got.status_code == 200 and got.content == image.payload
        for item in image.blobs:
            assert client.head(f"/v2/orphans/app/blobs/{item.digest}").status_code == 200


async def test_a_link_racing_the_claim_is_told_to_upload_again(stack: Stack) -> None:
    repo = "orphans/race"
    target = layer(4096)
    seen: dict[str, Any] = {}
    client = httpx.Client(base_url=stack.base_url, timeout=30)

    def upload() -> httpx.Response:
        return client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": target.digest}, content=target.data,
                           headers={"Content-Type": "application/octet-stream"})

    def probe() -> None:
        # The push that left the orphan is retried while the GC holds its claim.
        seen["reupload"] = upload()
        seen["head"] = client.head(f"/v2/{repo}/blobs/{target.digest}").status_code

    async def between_claim_and_delete(claimed: list[Any]) -> None:
        seen["claimed"] = {item.digest for item in claimed}
        await asyncio.to_thread(probe)

    try:
        async with stubs(stack) as (admin, blob):
            await commit_orphan(blob, target.data)
            report = await run_gc(admin, blob, after_orphan_claim=between_claim_and_delete)
            assert seen["claimed"] == {target.digest} and report.orphans == 1
            oci.assert_error(seen["reupload"], 404, "BLOB_UNKNOWN")
            assert "upload it again" in seen["reupload"].text
            assert seen["head"] == 404
            assert not await stored(blob, target.digest)

            # After the run the blob uploads, links and pushes again, and stays.
            assert (await asyncio.to_thread(upload)).status_code == 201
            ok, why = await asyncio.to_thread(try_push, client, repo, image_of([target]), "v1")
            assert ok, why
            assert (await run_gc(admin, blob)).orphans == 0
            assert await stored(blob, target.digest)
        head = await asyncio.to_thread(client.head, f"/v2/{repo}/blobs/{target.digest}")
        assert head.status_code == 200
    finally:
        await asyncio.to_thread(client.close)


async def test_a_stale_listing_never_deletes_bytes_stored_after_it(stack: Stack) -> None:
    """A run listed old bytes of a digest; meanwhile another run deleted them and a push stored the
    digest again (its LinkBlob vouched for the new bytes: services/metadata/gc). The stale run's
    claim must not delete the new bytes: the blob plane keeps them and the claim is forgotten."""
    data = os.urandom(3000)
    async with stubs(stack) as (admin, blob):
        digest = await commit_orphan(blob, data)
        stale = (await listed_blob(blob, digest)).modified_at - 3600  # what the old bytes showed
        claimed = (await admin.GcClaimOrphans(pb.GcClaimOrphansRequest(
            blobs=[pb.OrphanCandidate(digest=digest, size=len(data), modified_at=stale)]), timeout=10)).orphans
        assert [item.digest for item in claimed] == [digest]
        report, said = RunReport(dry_run=False), []
        assert not await _delete_bytes(admin, blob, claimed[0], report, said.append, listed_modified_at=stale)
        assert await stored(blob, digest)
        assert report.blobs_deleted == 0 and any("kept" in line for line in said), said
        # The claim is forgotten: the push of those bytes links them (a `deleting` row would refuse).
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            pushed = await asyncio.to_thread(
                client.post, "/v2/orphans/stale/blobs/uploads/", params={"digest": digest}, content=data,
                headers={"Content-Type": "application/octet-stream"})
            assert pushed.status_code == 201, pushed.text
            assert (await asyncio.to_thread(client.head, f"/v2/orphans/stale/blobs/{digest}")).status_code == 200


async def test_orphans_younger_than_the_grace_are_kept(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # The default grace (an hour): bytes committed a moment ago may still be waiting for their link.
    with orphan_stack("sqlite", request, tmp_path) as stack:
        async with stubs(stack) as (admin, blob):
            digest = await commit_orphan(blob, os.urandom(500))
            plan = await run_gc(admin, blob, dry_run=True)
            report = await run_gc(admin, blob)
            assert (plan.orphans, report.orphans, report.errors) == (0, 0, 0)
            assert await stored(blob, digest)
