"""The composition root: backend selection, start-up readiness, redirected reads and the
background purge; S3 against a real SeaweedFS."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from minio import Minio

from services.blob.backends import keys
from services.blob.backends.base import BackendUnavailable
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.instrumented import InstrumentedBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.backends.s3 import S3Backend
from services.blob.core import BlobStore
from services.blob.main import (
    BackendConfigError,
    UnknownBackend,
    build_backend,
    build_store,
    purge_periodically,
    wait_for_backend,
)
from services.blob.uploads import UploadSessions
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import BlobSettings, S3BackendSettings
from tests.blob.processes import BlobServiceProcess
from tests.support.seaweedfs import SeaweedFS

MiB = 1024 * 1024


async def test_build_backend_by_name(tmp_path) -> None:
    settings = BlobSettings(backend="filesystem", io_threads=2)
    settings.filesystem.root = tmp_path / "root"
    backend = build_backend(settings)
    # Every backend runs inside the wrapper that checks keys and measures calls.
    assert isinstance(backend, InstrumentedBackend) and backend.name == "filesystem"
    assert isinstance(backend.inner, FilesystemBackend) and backend.root == tmp_path / "root"
    await backend.close()
    assert isinstance(build_backend(BlobSettings(backend="memory")).inner, MemoryBackend)


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(UnknownBackend, match="'tape'.*filesystem, memory, s3"):
        build_backend(BlobSettings.model_construct(backend="tape"))


async def test_background_purge_removes_expired_sessions() -> None:
    clock = [time.time()]
    backend = MemoryBackend()
    store = BlobStore(backend, upload_expiry_seconds=60, sessions=UploadSessions(backend, clock=lambda: clock[0]))
    upload = await store.start_upload("r")
    clock[0] += 120
    task = asyncio.create_task(purge_periodically(store, 0.01))
    try:
        for _ in range(500):
            if not backend.objects:
                break
            await asyncio.sleep(0.01)
        assert backend.objects == {}, f"upload {upload.upload_id} was not purged"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wait_for_backend_gives_up_on_a_broken_backend(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    backend = FilesystemBackend(blocker, io_threads=1)  # its root is a file: every write fails
    try:
        with pytest.raises(OSError):
            await wait_for_backend(BlobStore(backend, upload_expiry_seconds=60), attempts=2, first_delay=0.01)
    finally:
        await backend.close()


# ---- S3: wiring into the composition root, against a real SeaweedFS -----------------------------


def s3_settings(server: SeaweedFS, **s3: object) -> BlobSettings:
    values: dict[str, object] = {
        "endpoint": server.endpoint, "region": server.region, "bucket": server.bucket,
        "access_key": server.access_key, "secret_key": server.secret_key, "secure": False,
        "path_style": True, "key_prefix": server.new_prefix(), "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 10.0, "max_retries": 1,
    }
    values.update(s3)
    return BlobSettings(backend="s3", io_threads=4, upload_expiry_seconds=1, s3=S3BackendSettings(**values))


def s3_env(server: SeaweedFS, **extra: str) -> dict[str, str]:
    return {
        "LADING_BLOB__BACKEND": "s3", "LADING_BLOB__S3__ENDPOINT": server.endpoint,
        "LADING_BLOB__S3__REGION": server.region, "LADING_BLOB__S3__ACCESS_KEY": server.access_key,
        "LADING_BLOB__S3__SECRET_KEY": server.secret_key, "LADING_BLOB__S3__SECURE": "false",
        "LADING_BLOB__S3__PATH_STYLE": "true", "LADING_BLOB__S3__KEY_PREFIX": server.new_prefix(),
        "LADING_BLOB__IO_THREADS": "4", "LADING_BLOB__SHUTDOWN_GRACE_SECONDS": "2", **extra,
    }


def raw_client(server: SeaweedFS) -> Minio:
    return Minio(server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region)


async def test_s3_is_built_from_settings_without_io(seaweedfs: SeaweedFS) -> None:
    settings = s3_settings(seaweedfs, endpoint="127.0.0.1:9")  # nothing listens there: no I/O yet
    backend = build_backend(settings)
    try:
        assert isinstance(backend.inner, S3Backend) and backend.bucket == seaweedfs.bucket
    finally:
        await backend.close()


def test_s3_settings_it_cannot_work_with_fail_at_start_up(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(BackendConfigError, match="LADING_BLOB__S3__BUCKET"):
        build_backend(s3_settings(seaweedfs, bucket=""))
    with pytest.raises(BackendConfigError, match="ACCESS_KEY.*SECRET_KEY"):
        build_backend(s3_settings(seaweedfs, secret_key=""))


def test_s3_without_a_bucket_exits_at_start_up(tmp_path: Path) -> None:
    process = BlobServiceProcess("blob-no-bucket", listen=f"unix://{tmp_path}/s3.sock",
                                 env={"LADING_BLOB__BACKEND": "s3"}, workdir=tmp_path)
    process.start()
    assert process.run_to_exit() == 2
    assert "LADING_BLOB__S3__BUCKET" in process.log()


async def test_readiness_checks_the_bucket_and_creates_it_only_when_allowed(seaweedfs: SeaweedFS) -> None:
    bucket = f"lading-ready-{uuid.uuid4().hex[:8]}"
    refused = build_backend(s3_settings(seaweedfs, bucket=bucket, create_bucket=False))
    created = build_backend(s3_settings(seaweedfs, bucket=bucket, create_bucket=True))
    try:
        with pytest.raises(BackendUnavailable, match="LADING_BLOB__S3__CREATE_BUCKET"):
            await wait_for_backend(BlobStore(refused, upload_expiry_seconds=60), attempts=1)
        assert not raw_client(seaweedfs).bucket_exists(bucket)
        await wait_for_backend(BlobStore(created, upload_expiry_seconds=60), attempts=1)
        assert raw_client(seaweedfs).bucket_exists(bucket)
        # Once it exists, a replica without create_bucket is ready too.
        await wait_for_backend(BlobStore(refused, upload_expiry_seconds=60), attempts=1)
    finally:
        await refused.close()
        await created.close()


async def test_reads_redirect_only_for_s3_with_redirect_reads(seaweedfs: SeaweedFS) -> None:
    data = b"redirect me" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    settings = s3_settings(seaweedfs)
    backend = build_backend(settings)
    try:
        await backend.put(keys.blob_key(Digest.parse(digest)), _chunks(data))
        redirecting = build_store(settings, backend)
        assert redirecting.redirects_reads
        url = await redirecting.read_redirect(digest)
        assert url is not None and "X-Amz-Signature=" in url
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(url)).content == data
            ranged = await http.get(url, headers={"Range": "bytes=5-14"})
            assert ranged.status_code == 206 and ranged.content == data[5:15]
        with pytest.raises(RegistryError) as caught:
            await redirecting.read_redirect(digest, offset=len(data))
        assert caught.value.kind is ErrorKind.BLOB_RANGE_INVALID
        with pytest.raises(RegistryError) as caught:
            await redirecting.read_redirect("sha256:" + "0" * 64)
        assert caught.value.kind is ErrorKind.BLOB_UNKNOWN

        settings.s3.redirect_reads = False
        assert await build_store(settings, backend).read_redirect(digest) is None
        assert await build_store(BlobSettings(backend="memory"), MemoryBackend()).read_redirect(digest) is None
    finally:
        await backend.delete(keys.blob_key(Digest.parse(digest)))
        await backend.close()


async def test_background_purge_aborts_abandoned_multipart_uploads(seaweedfs: SeaweedFS) -> None:
    settings = s3_settings(seaweedfs)  # upload_expiry_seconds=1, purge_multipart_uploads on
    backend = build_backend(settings)
    client = raw_client(seaweedfs)
    name = settings.s3.key_prefix + "blobs/sha256/ab/crashed-writer"
    upload_id = client._create_multipart_upload(seaweedfs.bucket, name, {})

    def pending() -> list[str]:
        listed = client._list_multipart_uploads(seaweedfs.bucket, prefix=settings.s3.key_prefix)
        return [upload.upload_id or "" for upload in listed.uploads]

    assert pending() == [upload_id]
    await asyncio.sleep(2.1)  # S3 reports initiation times in whole seconds; the expiry is 1 s
    task = asyncio.create_task(purge_periodically(build_store(settings, backend), 0.05))
    try:
        for _ in range(400):
            if not await asyncio.to_thread(pending):
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(pending) == [], "the purge loop did not abort the abandoned upload"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await backend.close()


async def test_s3_service_creates_its_bucket_and_answers_reads_with_redirects(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """`python -m services.blob` on S3: a fresh bucket is created before SERVING; ReadBlob with
    allow_redirect answers one message with a presigned URL, without it the bytes."""
    bucket = f"lading-svc-{uuid.uuid4().hex[:8]}"
    socket_dir = Path(tempfile.mkdtemp(prefix="lading-s3-"))
    process = BlobServiceProcess(
        "blob-s3", listen=f"unix://{socket_dir}/b.sock", workdir=tmp_path,
        env=s3_env(seaweedfs, LADING_BLOB__S3__BUCKET=bucket, LADING_BLOB__S3__CREATE_BUCKET="true"),
    )
    try:
        process.start()
        process.wait_serving()
        assert raw_client(seaweedfs).bucket_exists(bucket)
        data = b"0123456789" * 300_000  # 3 MB: several ReadBlob messages when streamed
        async with grpc.aio.insecure_channel(process.target, options=CHANNEL_OPTIONS) as channel:
            stub = blob_pb2_grpc.BlobServiceStub(channel)
            started = await stub.StartUpload(blob_pb2.StartUploadRequest(repository="r"), timeout=10)
            assert started.min_chunk_size == 5 * 1024 * 1024
            upload_id = started.status.upload_id
            await stub.AppendUpload(iter([blob_pb2.AppendUploadRequest(
                upload_id=upload_id, repository="r", expected_offset=0, data=data[:MiB]),
                blob_pb2.AppendUploadRequest(data=data[MiB:2 * MiB]),
                blob_pb2.AppendUploadRequest(data=data[2 * MiB:])]), timeout=30)
            digest = (await stub.CommitUpload(blob_pb2.CommitUploadRequest(
                upload_id=upload_id, repository="r", digest="sha256:" + hashlib.sha256(data).hexdigest(),
                expected_size=len(data)), timeout=30)).digest

            redirected = [m async for m in stub.ReadBlob(
                blob_pb2.ReadBlobRequest(digest=digest, allow_redirect=True), timeout=30)]
            assert len(redirected) == 1 and redirected[0].data == b"" and redirected[0].redirect_url
            async with httpx.AsyncClient(timeout=30) as http:
                assert (await http.get(redirected[0].redirect_url)).content == data

            streamed = [m async for m in stub.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest), timeout=30)]
            assert len(streamed) > 1 and not any(m.redirect_url for m in streamed)
            assert b"".join(m.data for m in streamed) == data

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.ReadBlob(blob_pb2.ReadBlobRequest(
                        digest=digest, offset=len(data), allow_redirect=True), timeout=30):
                    pass
            assert from_rpc_error(caught.value).kind is ErrorKind.BLOB_RANGE_INVALID
        assert process.stop() == 0, process.log()
    finally:
        process.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_a_stop_whose_cleanup_hangs_is_cut_at_its_bound_and_says_what_it_cut(tmp_path: Path) -> None:
    """The blob plane run alone (outside `lading serve`) had no bound on its stop past the grace:
    a cleanup step that never ends held it for ever, here the last trace flush to a collector
    that takes the spans and never answers (up to the exporter's timeout, 60 s here). Now it exits
    at grace + cleanup with status 1 and says which step it cut short."""
    collector = socket.socket()  # listens, never accepts: an export waits for its answer
    collector.bind(("127.0.0.1", 0))
    collector.listen(8)
    process = BlobServiceProcess("blob-stuck-stop", listen=f"unix://{tmp_path}/blob.sock", workdir=tmp_path, env={
        "LADING_BLOB__BACKEND": "memory",
        "LADING_BLOB__SHUTDOWN_GRACE_SECONDS": "0.5",
        "LADING_BLOB__SHUTDOWN_CLEANUP_SECONDS": "1",
        "LADING_OBSERVABILITY__OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
        "LADING_OBSERVABILITY__OTLP_TIMEOUT_SECONDS": "60"})
    try:
        process.start()
        process.wait_serving()  # its health checks are traced: spans wait for the collector
        code = process.stop(timeout=120)  # SIGTERM; past that only a stop that never ends
        log = process.log()
        assert code == 1, log
        assert "lading blob: still stopping 1.5 s after the stop began (shutdown grace + cleanup" in log, log
        assert "cut short: flushing traces to the collector" in log, log
    finally:
        process.stop()
        collector.close()
