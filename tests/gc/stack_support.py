"""A `lading serve` stack with zero GC delay, gRPC stubs on its sockets, and image builders."""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import admin_pb2_grpc

from services.common.errors import ErrorKind, from_rpc_error
from tests.support import oci
from tests.support.stack import Stack


@contextlib.contextmanager
def gc_stack(profile: str, request: pytest.FixtureRequest, root: Path, **extra: str) -> Iterator[Stack]:
    env = {"LADING_GC__REVIEW_DELAY_SECONDS": "0", **extra}
    with contextlib.ExitStack() as resources:
        if profile == "postgres":
            env["LADING_METADATA__DATABASE_URL"] = resources.enter_context(
                request.getfixturevalue("postgres").database())
        stack = resources.enter_context(Stack(root / "data", env=env))
        yield stack


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\w+) ")


def service_troubles(stack: Stack, limit: int = 12_000) -> str:
    """The WARNING and ERROR records of the stack's three planes, with their tracebacks (what a
    500 means is there: "the service logs say more"), at most the last `limit` characters."""
    kept: list[str] = []
    keeping = False
    for line in stack.process.log(tail=10_000_000).splitlines():
        record = _RECORD.match(line)
        if record is not None:
            keeping = record.group(2) in ("WARNING", "ERROR", "CRITICAL")
        if keeping:
            kept.append(line)
    return "\n".join(kept)[-limit:] or "(no warnings or errors logged)"


@contextlib.contextmanager
def troubles_on_failure(stack: Stack) -> Iterator[None]:
    """A failed assertion inside carries the planes' warnings and errors (service_troubles)."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n-- the planes' warnings and errors --\n{service_troubles(stack)}") from error


def targets(stack: Stack) -> tuple[str, str]:
    run = stack.data_dir / "run"
    return f"unix:{run / 'metadata.sock'}", f"unix:{run / 'blob.sock'}"


@contextlib.asynccontextmanager
async def stubs(stack: Stack) -> AsyncIterator[tuple[Any, Any]]:
    metadata, blob = targets(stack)
    async with grpc.aio.insecure_channel(metadata) as m, grpc.aio.insecure_channel(blob) as b:
        yield admin_pb2_grpc.AdminServiceStub(m), blob_pb2_grpc.BlobServiceStub(b)


async def stored(blob: Any, digest: str) -> bool:
    """Whether the blob plane holds the bytes of `digest`."""
    try:
        await blob.StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=10)
    except grpc.RpcError as error:
        assert from_rpc_error(error).kind is ErrorKind.BLOB_UNKNOWN, error
        return False
    return True


def layer(size: int) -> oci.Blob:
    return oci.Blob(os.urandom(size), oci.OCI_LAYER)


def image_of(layers: list[oci.Blob]) -> oci.Manifest:
    config = oci.image_config([oci.sha256(b.data) for b in layers])
    document = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    return oci.Manifest(oci.render(document), oci.OCI_MANIFEST, blobs=(config, *layers))


def try_push(client: httpx.Client, repo: str, image: oci.Manifest, tag: str) -> tuple[bool, str]:
    """One push attempt (blobs, then the manifest); (ok, why not)."""
    for item in image.blobs:
        started = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": item.digest}, content=item.data,
                              headers={"Content-Type": "application/octet-stream"})
        if started.status_code != 201:
            return False, f"blob {started.status_code} {started.text[:200]}"
    put = oci.push_manifest_only(client, repo, tag, image)
    if put.status_code != 201:
        return False, f"manifest {put.status_code} {put.text[:200]}"
    return True, ""


def push_retrying(client: httpx.Client, repo: str, image: oci.Manifest, tag: str, attempts: int = 40) -> int:
    """Pushes, starting over when the GC took a blob mid-push (the clean 'upload it again'
    answers: 404 BLOB_UNKNOWN, 400 MANIFEST_BLOB_UNKNOWN). Returns the retries it took."""
    reasons = []
    for attempt in range(attempts):
        ok, why = try_push(client, repo, image, tag)
        if ok:
            return attempt
        assert "BLOB_UNKNOWN" in why, why
        reasons.append(why)
    raise AssertionError(f"push of {repo}:{tag} kept failing: {reasons[-3:]}")


def choose(rng: random.Random, pool: list[oci.Blob], k: int) -> list[oci.Blob]:
    return rng.sample(pool, k)
