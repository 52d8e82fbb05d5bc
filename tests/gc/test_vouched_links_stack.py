"""Vouched first links through a real `lading serve` (services/metadata/gc): a blob the blob plane
stored with its commit is linked without the metadata plane asking the blob plane (StatBlob)
whether its bytes exist; a commit that found the bytes stored already (stray bytes of a push whose
link never came) or renamed staged bytes into place links the careful way, asking once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from tests.gc.stack_support import gc_stack, stubs
from tests.gc.test_gc_orphans_stack import commit_orphan
from tests.support import oci
from tests.support.grpc_calls import handled_calls
from tests.support.stack import Stack, free_port

OCTETS = {"Content-Type": "application/octet-stream"}


def _stat_blob_calls(metrics_url: str) -> float:
    return handled_calls(metrics_url).get("BlobService/StatBlob", 0.0)


def _post_then_put(client: httpx.Client, repository: str, data: bytes) -> None:
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    done = client.put(started.headers["location"], params={"digest": oci.sha256(data)}, content=data, headers=OCTETS)
    assert done.status_code == 201, done.text


def _chunked(client: httpx.Client, repository: str, data: bytes) -> None:
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    patched = client.patch(started.headers["location"], content=data,
                           headers={**OCTETS, "Content-Range": f"0-{len(data) - 1}"})
    assert patched.status_code == 202, patched.text
    done = client.put(patched.headers["location"], params={"digest": oci.sha256(data)})
    assert done.status_code == 201, done.text


async def _commit_stray(stack: Stack, data: bytes) -> None:
    async with stubs(stack) as (_, blob):
        await commit_orphan(blob, data)


def test_new_blobs_link_without_a_stat_and_stored_ones_are_checked(request: pytest.FixtureRequest,
                                                                    tmp_path: Path) -> None:
    metrics = f"http://127.0.0.1:{free_port()}/metrics"
    env = {"LADING_GC__ORPHAN_GRACE_SECONDS": "3600",
           "LADING_OBSERVABILITY__BLOB_METRICS_LISTEN": metrics.removeprefix("http://").removesuffix("/metrics")}
    with gc_stack("sqlite", request, tmp_path, **env) as stack, \
            httpx.Client(base_url=stack.base_url, timeout=30, follow_redirects=True) as client:
        repository = "vouched/app"
        _post_then_put(client, repository, os.urandom(2000))  # warm: channels open
        before = _stat_blob_calls(metrics)
        new = [os.urandom(1000 + i) for i in range(3)]
        for data in new:
            _post_then_put(client, repository, data)
        whole = os.urandom(4000)  # the single-request push (POST ?digest=)
        assert client.post(f"/v2/{repository}/blobs/uploads/", params={"digest": oci.sha256(whole)},
                           content=whole, headers=OCTETS).status_code == 201
        assert _stat_blob_calls(metrics) == before
        for data in [*new, whole]:
            assert client.get(f"/v2/{repository}/blobs/{oci.sha256(data)}").content == data

        # Bytes stored before this push (no row: their link never came) are not vouched for.
        stray = os.urandom(1500)
        asyncio.run(_commit_stray(stack, stray))
        _post_then_put(client, repository, stray)
        assert _stat_blob_calls(metrics) == before + 1
        # Nor are staged chunks renamed into place (their file is as old as the last chunk).
        _chunked(client, repository, os.urandom(3000))
        assert _stat_blob_calls(metrics) == before + 2
        assert client.head(f"/v2/{repository}/blobs/{oci.sha256(stray)}").status_code == 200
