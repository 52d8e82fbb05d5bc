"""The S3 backend passes the backend contract against a real SeaweedFS, plus what only S3 has:
multipart writes, server-side compose, presigned URLs, purge of abandoned multipart uploads, and
UNAVAILABLE (never a hang) when S3 stops answering."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from minio import Minio
from minio.credentials.providers import Provider

from services.blob.backends import keys
from services.blob.backends.base import BackendAccessDenied, BackendUnavailable
from services.blob.backends.s3 import ReportingProvider, S3Backend
from services.blob.backends.s3_factory import create_s3_backend
from services.blob.core import BlobStore, registry_error
from services.common.digests import Digest
from services.common.errors import ErrorKind
from services.common.settings import BlobSettings, S3BackendSettings
from tests.contracts.blob_backend_suite import (
    BlobBackendContract,
    ComposingStoreContract,
    chunks_of,
    keys_of,
    pattern,
    read,
)
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server

MiB = 1024 * 1024


def s3_settings(server: SeaweedFS, **overrides: object) -> BlobSettings:
    s3 = {
        "endpoint": server.endpoint,
        "region": server.region,
        "bucket": server.bucket,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "secure": False,
        "path_style": True,
        "key_prefix": server.new_prefix(),
        # Small parts keep multipart tests quick; 5 MiB is S3's minimum.
        "part_size_bytes": 5 * MiB,
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 10.0,
        "max_retries": 2,
    }
    s3.update(overrides)
    return BlobSettings(backend="s3", io_threads=8, s3=S3BackendSettings(**s3))


def raw_client(server: SeaweedFS) -> Minio:
    return Minio(server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region)


class TestS3Backend(BlobBackendContract, ComposingStoreContract):
    @pytest.fixture
    def make_backend(self, seaweedfs: SeaweedFS) -> Callable[[], S3Backend]:
        # Each backend gets a fresh key prefix: fresh, empty storage in the shared bucket.
        return lambda: create_s3_backend(s3_settings(seaweedfs))


@pytest.fixture
async def backend(seaweedfs: SeaweedFS) -> AsyncIterator[S3Backend]:
    backend = create_s3_backend(s3_settings(seaweedfs))
    try:
        yield backend
        leftovers = await keys_of(backend)
        for key in leftovers:
            await backend.delete(key)
        assert not leftovers, f"the test left keys behind: {leftovers}"
    finally:
        await backend.close()


def multipart_uploads(server: SeaweedFS, prefix: str) -> list[tuple[str, str]]:
    result = raw_client(server)._list_multipart_uploads(server.bucket, prefix=prefix)
    return [(upload.object_name, upload.upload_id or "") for upload in result.uploads]


async def small_chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_large_put_is_a_multipart_upload_streamed_from_small_chunks(
    backend: S3Backend, seaweedfs: SeaweedFS
) -> None:
    data = pattern(12 * MiB + 777, seed=11)
    assert await backend.put("big/object", small_chunks(data)) == len(data)
    head = await backend._head("big/object")
    # A multipart object's ETag ends with "-<parts>": 5 MiB + 5 MiB + the rest.
    assert head.etag.endswith("-3"), head.etag
    assert head.info.size == len(data)
    assert await read(backend, "big/object") == data
    assert await read(backend, "big/object", 5 * MiB - 3, 10) == data[5 * MiB - 3 : 5 * MiB + 7]
    assert multipart_uploads(seaweedfs, backend.key_prefix) == []
    await backend.delete("big/object")


async def test_failed_multipart_put_aborts_its_upload(backend: S3Backend, seaweedfs: SeaweedFS) -> None:
    async def failing() -> AsyncIterator[bytes]:
        async for chunk in small_chunks(pattern(11 * MiB)):
            yield chunk
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await backend.put("never", failing())
    assert multipart_uploads(seaweedfs, backend.key_prefix) == []
    assert await keys_of(backend) == []


async def test_cancelled_multipart_put_aborts_its_upload(backend: S3Backend, seaweedfs: SeaweedFS) -> None:
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in small_chunks(pattern(6 * MiB)):
            yield chunk
        started.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield b""

    task = asyncio.create_task(backend.put("stalled", stalls()))
    await started.wait()
    # The first part is uploading or uploaded: an upload exists until the cancel aborts it.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert multipart_uploads(seaweedfs, backend.key_prefix) == []
    assert await keys_of(backend) == []


async def test_compose_copies_parts_server_side(backend: S3Backend, seaweedfs: SeaweedFS) -> None:
    parts = [pattern(5 * MiB, seed=1), pattern(5 * MiB + 1, seed=2), pattern(1234, seed=3)]
    names = ["staged/1", "staged/2", "staged/3"]
    for name, data in zip(names, parts, strict=True):
        await backend.put(name, chunks_of(data))
    assert await backend.compose("blob", names) == sum(map(len, parts))
    head = await backend._head("blob")
    assert head.etag.endswith("-3"), head.etag  # one UploadPartCopy per source
    assert await read(backend, "blob") == b"".join(parts)
    assert await read(backend, "blob", 5 * MiB - 2, 4) == parts[0][-2:] + parts[1][:2]
    # An empty last source adds no part: what is left is a plain server-side copy.
    await backend.put("staged/empty", chunks_of())
    assert await backend.compose("copy", ["staged/1", "staged/empty"]) == 5 * MiB
    assert await read(backend, "copy") == parts[0]
    assert await keys_of(backend) == ["blob", "copy", *names, "staged/empty"]
    assert multipart_uploads(seaweedfs, backend.key_prefix) == []
    for name in ["blob", "copy", *names, "staged/empty"]:
        await backend.delete(name)


async def test_compose_of_only_empty_sources_is_an_empty_object(backend: S3Backend) -> None:
    await backend.put("e", chunks_of())
    assert await backend.compose("out", ["e"]) == 0
    assert await read(backend, "out") == b""
    await backend.delete("e")
    await backend.delete("out")


async def test_presigned_url_serves_the_bytes_and_ranges(backend: S3Backend) -> None:
    data = pattern(300_000, seed=5)
    await backend.put("blobs/x", chunks_of(data))
    url = await backend.presigned_get_url("blobs/x", expires=60)
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as http:
        whole = await http.get(url)
        assert whole.status_code == 200
        assert whole.content == data
        ranged = await http.get(url, headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206
        assert ranged.content == data[100:200]
        typed_url = await backend.presigned_get_url(
            "blobs/x", response_headers={"response-content-type": "application/vnd.oci.image.layer.v1.tar"}
        )
        typed = await http.get(typed_url)
        assert typed.headers["content-type"] == "application/vnd.oci.image.layer.v1.tar"
        signature = url.rsplit("X-Amz-Signature=", 1)[1]
        forged = "0" * len(signature) if signature != "0" * len(signature) else "1" * len(signature)
        tampered = await http.get(url.replace(signature, forged))
        assert tampered.status_code == 403
    with pytest.raises(ValueError):
        await backend.presigned_get_url("blobs/x", expires=8 * 24 * 3600)
    await backend.delete("blobs/x")


async def test_purge_aborts_only_old_uploads_under_the_prefix(
    backend: S3Backend, seaweedfs: SeaweedFS
) -> None:
    client = raw_client(seaweedfs)
    mine = backend.key_prefix + "uploads/abandoned"
    other_prefix = seaweedfs.new_prefix()
    theirs = other_prefix + "uploads/abandoned"
    for name in (mine, theirs):
        upload_id = client._create_multipart_upload(seaweedfs.bucket, name, {})
        client._upload_part(seaweedfs.bucket, name, pattern(5 * MiB), None, upload_id, 1)
    try:
        assert await backend.clean_up(24 * 3600) == 0  # the purge's age: nothing that old
        assert await backend.purge_multipart_uploads(older_than=3600) == 0
        assert [name for name, _ in multipart_uploads(seaweedfs, backend.key_prefix)] == [mine]
        await asyncio.sleep(1.1)  # S3 reports initiation times in whole seconds
        assert await backend.purge_multipart_uploads(older_than=0.5) == 1
        assert multipart_uploads(seaweedfs, backend.key_prefix) == []
        assert [name for name, _ in multipart_uploads(seaweedfs, other_prefix)] == [theirs]
    finally:
        for name, upload_id in multipart_uploads(seaweedfs, other_prefix):
            client._abort_multipart_upload(seaweedfs.bucket, name, upload_id)


async def test_key_prefix_isolates_backends_in_one_bucket(seaweedfs: SeaweedFS) -> None:
    first = create_s3_backend(s3_settings(seaweedfs, key_prefix="/iso-a/"))
    second = create_s3_backend(s3_settings(seaweedfs, key_prefix="iso-b"))
    try:
        await first.put("k", chunks_of(b"from a"))
        await second.put("k", chunks_of(b"from b"))
        assert await read(first, "k") == b"from a"
        assert await keys_of(second) == ["k"]
        stored = {obj.object_name for obj in raw_client(seaweedfs).list_objects(seaweedfs.bucket, "iso-a/")}
        assert stored == {"iso-a/k"}
    finally:
        await first.delete("k")
        await second.delete("k")
        await first.close()
        await second.close()


async def test_ensure_bucket_creates_or_reports_a_missing_bucket(seaweedfs: SeaweedFS) -> None:
    settings = s3_settings(seaweedfs, bucket="lading-made-by-test")
    backend = create_s3_backend(settings)
    try:
        with pytest.raises(BackendUnavailable, match="CREATE_BUCKET"):
            await backend.ensure_bucket(create=False)
        with pytest.raises(BackendUnavailable):
            await backend.ping()
        await backend.ensure_bucket(create=True)
        await backend.ensure_bucket(create=True)  # already there: fine
        configured = create_s3_backend(
            s3_settings(seaweedfs, bucket="lading-made-by-test", create_bucket=True)
        )
        await configured.ensure_bucket()  # the setting's default
        await configured.close()
        await backend.ping()
        await backend.put("k", chunks_of(b"v"))
        assert await read(backend, "k") == b"v"
        await backend.delete("k")
    finally:
        await backend.close()
        raw_client(seaweedfs).remove_bucket("lading-made-by-test")


async def test_credentials_from_the_environment_chain(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No keys in the settings: the chain finds them in AWS_* variables (SeaweedFS checks them).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    backend = create_s3_backend(s3_settings(seaweedfs, access_key="", secret_key=""))
    try:
        await backend.put("k", chunks_of(b"signed with env keys"))
        assert await read(backend, "k") == b"signed with env keys"
        async with httpx.AsyncClient() as http:
            assert (await http.get(await backend.presigned_get_url("k"))).content == b"signed with env keys"
        await backend.delete("k")
    finally:
        await backend.close()


async def test_refused_credentials_name_the_setting_to_fix(seaweedfs: SeaweedFS) -> None:
    backend = create_s3_backend(s3_settings(seaweedfs, secret_key="not-the-secret"))
    try:
        for call in (lambda: backend.stat("k"), lambda: backend.put("k", chunks_of(b"x"))):
            with pytest.raises(BackendAccessDenied, match="SECRET_KEY") as caught:
                await call()
            # What a client sees: an internal error naming the setting (core.registry_error).
            seen = registry_error(caught.value)
            assert seen.kind is ErrorKind.INTERNAL and "SECRET_KEY" in seen.message
        with pytest.raises(BackendAccessDenied):
            await backend.ping()
    finally:
        await backend.close()


def test_settings_that_cannot_work_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="BUCKET"):
        create_s3_backend(BlobSettings(backend="s3"))
    with pytest.raises(ValueError, match="bucket name"):
        create_s3_backend(BlobSettings(backend="s3", s3=S3BackendSettings(bucket="x")))
    with pytest.raises(ValueError, match="SECRET_KEY"):
        create_s3_backend(
            BlobSettings(backend="s3", s3=S3BackendSettings(bucket="bucket", access_key="only"))
        )
    with pytest.raises(ValueError, match="PRESIGN_ENDPOINT"):
        create_s3_backend(
            BlobSettings(
                backend="s3", s3=S3BackendSettings(bucket="bucket", presign_endpoint="s3.example.com")
            )
        )


async def test_presign_endpoint_signs_for_the_public_address(seaweedfs: SeaweedFS) -> None:
    backend = create_s3_backend(s3_settings(seaweedfs, presign_endpoint=f"http://{seaweedfs.endpoint}"))
    try:
        await backend.put("k", chunks_of(b"public"))
        url = await backend.presigned_get_url("k")
        assert url.startswith(f"http://{seaweedfs.endpoint}/{seaweedfs.bucket}/")
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).content == b"public"
        await backend.delete("k")
    finally:
        await backend.close()


async def test_a_stopped_server_is_unavailable_not_a_hang() -> None:
    with seaweedfs_server(bucket="doomed") as server:
        backend = create_s3_backend(s3_settings(server))
        await backend.put("k", chunks_of(pattern(1000)))
        stream = await backend.get("k")  # pooled connections now exist
        assert await anext(stream) == pattern(1000)
        await stream.aclose()
    # The server is gone (stopped by pid): every call fails fast with UNAVAILABLE.
    try:
        calls = [
            lambda: backend.stat("k"),
            lambda: backend.get("k"),
            lambda: backend.put("k", chunks_of(b"x")),
            lambda: backend.delete("k"),
            lambda: keys_of(backend),
            lambda: backend.compose("c", ["k"]),
            lambda: backend.purge_multipart_uploads(0),
            lambda: backend.ping(),
        ]
        for call in calls:
            with pytest.raises(BackendUnavailable, match="did not answer") as caught:
                await asyncio.wait_for(call(), timeout=60)
            assert registry_error(caught.value).kind is ErrorKind.UNAVAILABLE
    finally:
        await backend.close()


async def test_a_server_that_never_answers_times_out_as_unavailable() -> None:
    # Accepts connections (the kernel's backlog) but never reads or answers a request.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
    settings = BlobSettings(
        backend="s3",
        s3=S3BackendSettings(
            endpoint=endpoint,
            bucket="bucket",
            access_key="k",
            secret_key="s",
            secure=False,
            read_timeout_seconds=0.3,
            connect_timeout_seconds=0.3,
            max_retries=1,
        ),
    )
    backend = create_s3_backend(settings)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await asyncio.wait_for(backend.stat("k"), timeout=60)
        assert registry_error(caught.value).kind is ErrorKind.UNAVAILABLE
    finally:
        await backend.close()
        silent.close()


async def test_chunked_upload_across_two_replicas_commits_on_s3(seaweedfs: SeaweedFS) -> None:
    """The upload layer over S3: small and large chunks (re-staged into ≥ 5 MiB parts),
    appended on one 'replica', committed on another, read back, nothing left behind."""
    settings = s3_settings(seaweedfs)
    first, second = create_s3_backend(settings), create_s3_backend(settings)
    try:
        one = BlobStore(first, upload_expiry_seconds=3600)
        two = BlobStore(second, upload_expiry_seconds=3600)
        data = pattern(11 * MiB + 4321, seed=42)
        cuts = [0, 100, 3 * MiB, 3 * MiB + 7, 9 * MiB, len(data)]
        status = await one.start_upload("library/s3")
        for index, (start, end) in enumerate(itertools.pairwise(cuts)):
            store = one if index % 2 == 0 else two
            status = await store.append_upload(
                status.upload_id, "library/s3", expected_offset=start, chunks=small_chunks(data[start:end])
            )
        assert status.offset == len(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        committed = await two.commit_upload(
            status.upload_id, "library/s3", digest=digest, expected_size=len(data)
        )
        assert committed.size == len(data)
        stream = await one.read_blob(digest, offset=MiB, length=5 * MiB)
        assert b"".join([chunk async for chunk in stream]) == data[MiB : 6 * MiB]
        assert await keys_of(first) == [keys.blob_key(Digest.parse(digest))]
        assert multipart_uploads(seaweedfs, first.key_prefix) == []
        await one.delete_blob(digest)
        assert await keys_of(first) == []
    finally:
        await first.close()
        await second.close()


async def test_a_credential_chain_that_finds_nothing_is_recognised_by_type(seaweedfs: SeaweedFS) -> None:
    """A provider that fails (no keys in the environment, no instance role) surfaces as
    BackendUnavailable naming the settings, recognised by the exception's type: the SDK's
    message text is never matched."""

    class Empty(Provider):
        def retrieve(self):  # type: ignore[no-untyped-def]
            raise ValueError("some wording the SDK may change")

    client = Minio(seaweedfs.endpoint, secure=False, region=seaweedfs.region, credentials=ReportingProvider(Empty()))
    backend = S3Backend(client, bucket=seaweedfs.bucket, key_prefix=seaweedfs.new_prefix())
    try:
        with pytest.raises(BackendUnavailable, match="ACCESS_KEY") as caught:
            await backend.stat("k")
        assert registry_error(caught.value).kind is ErrorKind.UNAVAILABLE
    finally:
        await backend.close()
