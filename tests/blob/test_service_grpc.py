"""The blob service as real processes (`python -m services.blob`) over real sockets.

Two processes share one filesystem root, one listening on a unix socket and one on a 127.0.0.1
port, as two replicas behind a load balancer; every RPC and its errors go through real channels.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from services.common.errors import ErrorKind, from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from tests.blob.processes import BlobServiceProcess
from tests.contracts.blob_backend_suite import pattern
from tests.support.stack import free_port

MiB = 1024 * 1024
REPO = "library/busybox"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()



class Pair:
    def __init__(self, first: BlobServiceProcess, second: BlobServiceProcess, root: Path) -> None:
        self.first = first
        self.second = second
        self.root = root


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("blob-services")
    root = workdir / "blobs"
    # Unix socket paths are limited to ~107 bytes; pytest's temporary paths can be longer.
    socket_dir = Path(tempfile.mkdtemp(prefix="lading-blob-"))
    env = {"LADING_BLOB__BACKEND": "filesystem", "LADING_BLOB__FILESYSTEM__ROOT": str(root),
           "LADING_BLOB__IO_THREADS": "4", "LADING_BLOB__SHUTDOWN_GRACE_SECONDS": "2"}
    first = BlobServiceProcess("blob-a", listen=f"unix://{socket_dir}/a.sock", env=env, workdir=workdir)
    # This test is about two processes sharing one root; its stubs call every RPC, as the gateway,
    # the metadata plane and operators would. tests/access checks who may call what on TCP.
    second = BlobServiceProcess("blob-b", listen=f"127.0.0.1:{free_port()}", workdir=workdir,
                                env={**env, "LADING_GRPC_ACCESS__ALLOW_UNAUTHENTICATED": "true"})
    started: list[BlobServiceProcess] = []
    try:
        for process in (first, second):
            started.append(process.start())
        for process in started:
            process.wait_serving()
        yield Pair(first, second, root)
        codes = {process.name: process.stop() for process in started}
        assert codes == {"blob-a": 0, "blob-b": 0}, f"{first.log()}\n{second.log()}"
    finally:
        for process in started:
            process.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
async def stubs(services: Pair) -> AsyncIterator[tuple[blob_pb2_grpc.BlobServiceStub, blob_pb2_grpc.BlobServiceStub]]:
    async with (
        grpc.aio.insecure_channel(services.first.target, options=CHANNEL_OPTIONS) as one,
        grpc.aio.insecure_channel(services.second.target, options=CHANNEL_OPTIONS) as two,
    ):
        yield blob_pb2_grpc.BlobServiceStub(one), blob_pb2_grpc.BlobServiceStub(two)


def appends(upload_id: str, offset: int, data: bytes, message: int = MiB,
            repository: str = REPO) -> Iterator[blob_pb2.AppendUploadRequest]:
    """An AppendUpload stream: the first message names the session; all carry data."""
    yield blob_pb2.AppendUploadRequest(upload_id=upload_id, repository=repository, expected_offset=offset,
                                       data=data[:message])
    for start in range(message, len(data), message):
        yield blob_pb2.AppendUploadRequest(data=data[start : start + message])


async def read_blob(stub: blob_pb2_grpc.BlobServiceStub, digest: str, offset: int = 0, length: int = 0
                    ) -> list[bytes]:
    call = stub.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest, offset=offset, length=length), timeout=30)
    return [message.data async for message in call]


async def push(stub: blob_pb2_grpc.BlobServiceStub, data: bytes) -> str:
    started = await stub.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    await stub.AppendUpload(appends(started.status.upload_id, 0, data), timeout=30)
    committed = await stub.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=started.status.upload_id, repository=REPO, digest=sha256(data), expected_size=len(data)), timeout=30)
    return committed.digest


async def expect_error(call, kind: ErrorKind):  # type: ignore[no-untyped-def]
    """Awaits `call` (a unary call or a response stream) and checks it fails with `kind`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    error = from_rpc_error(caught.value)
    assert error.kind is kind, (error.kind, error.message)
    assert caught.value.code() is kind.grpc_status
    return error


async def test_both_processes_report_serving(services: Pair) -> None:
    for process in (services.first, services.second):
        async with grpc.aio.insecure_channel(process.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", "lading.blob.v1.BlobService"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_upload_appended_on_one_process_is_committed_by_another(services: Pair, stubs) -> None:
    one, two = stubs
    data = pattern(3 * MiB + 4321, seed=42)
    started = await one.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    upload_id = started.status.upload_id
    assert started.status.offset == 0 and started.min_chunk_size == 0
    reply = await one.AppendUpload(appends(upload_id, 0, data[: 2 * MiB]), timeout=30)
    assert reply.status.offset == 2 * MiB
    reply = await one.AppendUpload(appends(upload_id, 2 * MiB, data[2 * MiB :], message=256 * 1024), timeout=30)
    assert reply.status.offset == len(data)
    status = await two.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=REPO),
                                       timeout=10)
    assert status.status.offset == len(data) and status.status.repository == REPO
    assert status.status.started_at == started.status.started_at

    committed = await two.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=upload_id, repository=REPO, digest=sha256(data), expected_size=len(data)), timeout=30)
    assert (committed.digest, committed.size) == (sha256(data), len(data))
    for stub in (one, two):
        chunks = await read_blob(stub, sha256(data))
        assert b"".join(chunks) == data
        assert max(len(chunk) for chunk in chunks) <= MiB
    await expect_error(one.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=REPO)),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)
    assert not (services.root / "uploads" / upload_id).exists()
    await one.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=sha256(data)), timeout=10)


async def test_appends_alternating_between_processes(stubs) -> None:
    one, two = stubs
    data = pattern(700_000, seed=7)
    started = await two.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    upload_id = started.status.upload_id
    offset = 0
    for index, size in enumerate((1, 99_999, 300_000, 300_000)):
        stub = (one, two)[index % 2]
        reply = await stub.AppendUpload(appends(upload_id, offset, data[offset : offset + size], message=65536),
                                        timeout=30)
        offset = reply.status.offset
    await one.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=upload_id, repository=REPO, digest=sha256(data), expected_size=-1), timeout=30)
    assert b"".join(await read_blob(two, sha256(data))) == data
    await two.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=sha256(data)), timeout=10)


async def test_stat_ranged_read_and_idempotent_delete(stubs) -> None:
    one, two = stubs
    data = pattern(2 * MiB + 10, seed=3)
    digest = await push(one, data)
    stat = await two.StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=10)
    assert (stat.digest, stat.size) == (digest, len(data))
    assert b"".join(await read_blob(two, digest, offset=MiB - 1, length=MiB + 2)) == data[MiB - 1 : 2 * MiB + 1]
    assert b"".join(await read_blob(two, digest, offset=len(data) - 1)) == data[-1:]
    assert b"".join(await read_blob(one, digest, offset=5, length=10 * MiB)) == data[5:]
    # Pushing the same blob again is fine and changes nothing.
    assert await push(two, data) == digest
    assert (await one.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10)).deleted is True
    assert (await two.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10)).deleted is False
    await expect_error(one.StatBlob(blob_pb2.StatBlobRequest(digest=digest)), ErrorKind.BLOB_UNKNOWN)


async def test_empty_blob(stubs) -> None:
    one, two = stubs
    digest = await push(one, b"")
    assert (await two.StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=10)).size == 0
    assert b"".join(await read_blob(two, digest)) == b""
    await expect_error(one.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest, offset=1)), ErrorKind.BLOB_RANGE_INVALID)
    await one.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10)


async def test_read_errors(stubs) -> None:
    one, two = stubs
    absent = sha256(b"never pushed")
    await expect_error(one.StatBlob(blob_pb2.StatBlobRequest(digest=absent)), ErrorKind.BLOB_UNKNOWN)
    await expect_error(two.ReadBlob(blob_pb2.ReadBlobRequest(digest=absent)), ErrorKind.BLOB_UNKNOWN)
    for bad in ("sha256:abc", "not-a-digest", ""):
        await expect_error(one.StatBlob(blob_pb2.StatBlobRequest(digest=bad)), ErrorKind.DIGEST_INVALID)
        await expect_error(one.ReadBlob(blob_pb2.ReadBlobRequest(digest=bad)), ErrorKind.DIGEST_INVALID)
        await expect_error(one.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=bad)), ErrorKind.DIGEST_INVALID)
    digest = await push(one, b"0123456789")
    error = await expect_error(two.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest, offset=10)),
                               ErrorKind.BLOB_RANGE_INVALID)
    assert error.detail["size"] == 10
    await expect_error(two.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest, offset=-1)), ErrorKind.BLOB_RANGE_INVALID)
    await one.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10)


async def test_upload_errors(services: Pair, stubs) -> None:
    one, two = stubs
    started = await one.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    upload_id = started.status.upload_id
    await one.AppendUpload(appends(upload_id, 0, b"hello"), timeout=10)

    error = await expect_error(two.AppendUpload(appends(upload_id, 3, b"lo world")), ErrorKind.RANGE_INVALID)
    assert error.detail == {"offset": 5}
    await expect_error(two.AppendUpload(appends(upload_id, 5, b"x", repository="library/other")),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)
    await expect_error(two.AppendUpload(appends("../../../etc", 0, b"x")), ErrorKind.BLOB_UPLOAD_UNKNOWN)
    await expect_error(one.AppendUpload(iter(())), ErrorKind.BLOB_UPLOAD_INVALID)
    await expect_error(two.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository="x/y")),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)
    await expect_error(two.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=upload_id, repository=REPO, digest="sha256:nothex", expected_size=5)), ErrorKind.DIGEST_INVALID)
    # A malformed digest keeps the session; a wrong size cancels it.
    status = await one.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=REPO))
    assert status.status.offset == 5
    error = await expect_error(two.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=upload_id, repository=REPO, digest=sha256(b"hello"), expected_size=4)), ErrorKind.SIZE_INVALID)
    await expect_error(one.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=REPO)),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)

    started = await two.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    upload_id = started.status.upload_id
    await two.AppendUpload(appends(upload_id, 0, b"content"), timeout=10)
    error = await expect_error(one.CommitUpload(blob_pb2.CommitUploadRequest(
        upload_id=upload_id, repository=REPO, digest=sha256(b"other content"), expected_size=-1)),
        ErrorKind.DIGEST_INVALID)
    assert error.detail["actual"] == sha256(b"content")
    await expect_error(two.StatBlob(blob_pb2.StatBlobRequest(digest=sha256(b"other content"))), ErrorKind.BLOB_UNKNOWN)
    await expect_error(two.StatBlob(blob_pb2.StatBlobRequest(digest=sha256(b"content"))), ErrorKind.BLOB_UNKNOWN)
    assert not list((services.root / "uploads").glob("*/*"))


async def test_cancel_and_purge(services: Pair, stubs) -> None:
    one, two = stubs
    started = await one.StartUpload(blob_pb2.StartUploadRequest(repository=REPO), timeout=10)
    upload_id = started.status.upload_id
    await one.AppendUpload(appends(upload_id, 0, b"some bytes"), timeout=10)
    # A fresh session survives a purge of sessions older than an hour.
    purged = await two.PurgeUploads(blob_pb2.PurgeUploadsRequest(older_than_seconds=3600), timeout=30)
    assert purged.purged == 0
    status = await two.GetUploadStatus(blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=REPO))
    assert status.status.offset == 10
    await expect_error(one.PurgeUploads(blob_pb2.PurgeUploadsRequest(older_than_seconds=-1)),
                       ErrorKind.BLOB_UPLOAD_INVALID)
    await expect_error(two.CancelUpload(blob_pb2.CancelUploadRequest(upload_id=upload_id, repository="a/b")),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)
    await two.CancelUpload(blob_pb2.CancelUploadRequest(upload_id=upload_id, repository=REPO), timeout=10)
    await expect_error(one.CancelUpload(blob_pb2.CancelUploadRequest(upload_id=upload_id, repository=REPO)),
                       ErrorKind.BLOB_UPLOAD_UNKNOWN)
    assert not (services.root / "uploads" / upload_id).exists()


def test_unknown_backend_fails_at_start_up(tmp_path: Path) -> None:
    process = BlobServiceProcess("blob-bad", listen=f"unix://{tmp_path}/bad.sock",
                                 env={"LADING_BLOB__BACKEND": "floppy-disk"}, workdir=tmp_path)
    process.start()
    assert process.run_to_exit() == 2
    output = process.log()
    assert "floppy-disk" in output and "backend" in output
