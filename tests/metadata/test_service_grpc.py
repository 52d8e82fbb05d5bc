"""The real metadata service (`python -m services.metadata` in a subprocess, on a unix socket),
exercised through a real gRPC channel: every RPC, its rich errors, health, and start-up rules.

The service runs once per dialect (SQLite file, PostgreSQL database); tests use repository names of
their own so they can share it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.common.v1 import common_pb2
from lading.metadata.v1 import metadata_pb2 as pb
from lading.metadata.v1 import metadata_pb2_grpc

from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import load_settings
from services.metadata.main import migrate_main
from tests.metadata import docs
from tests.support.stack import LadingProcess, wait_until_path_exists

SERVICE = "lading.metadata.v1.MetadataService"
MAX_MANIFEST = 32 * 1024
DEFAULT_PAGE = 2


def metadata_process(tmp: Path, database_url: str, *, auto_migrate: bool = True, name: str = "metadata"
                     ) -> tuple[LadingProcess, Path]:
    socket = tmp / f"{name}.sock"
    env = {
        "LADING_METADATA__LISTEN": f"unix://{socket}",
        "LADING_METADATA__DATABASE_URL": database_url,
        "LADING_METADATA__AUTO_MIGRATE": str(auto_migrate).lower(),
        "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
        "LADING_METADATA__MAX_MANIFEST_BYTES": str(MAX_MANIFEST),
        "LADING_METADATA__DEFAULT_PAGE_SIZE": str(DEFAULT_PAGE),
    }
    command = [sys.executable, "-m", "services.metadata"]
    return LadingProcess(name, command, log_dir=tmp, env=env), socket


def wait_until_serving(socket: Path, attempts: int = 200) -> int:
    """Polls grpc.health.v1 (blocking client) until SERVING; returns the last status seen."""
    status = health_pb2.HealthCheckResponse.UNKNOWN
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(attempts):
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2).status
            except grpc.RpcError:
                pass
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.05)
    return status


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service_socket(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp(f"metadata-{request.param}")
    if request.param == "sqlite":
        url_context = None
        url = f"sqlite+aiosqlite:///{tmp}/data/registry.db"
    else:
        url_context = request.getfixturevalue("postgres").database()
        url = url_context.__enter__()
    process, socket = metadata_process(tmp, url)
    process.start()
    try:
        wait_until_path_exists(socket, process)
        assert wait_until_serving(socket) == health_pb2.HealthCheckResponse.SERVING, process.log()
        yield socket
    finally:
        code = process.stop()
        if url_context is not None:
            url_context.__exit__(None, None, None)
    assert code == 0, process.log()  # SIGTERM is a clean shutdown


@pytest.fixture(scope="module")
async def channel(service_socket: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix://{service_socket}", options=CHANNEL_OPTIONS) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> metadata_pb2_grpc.MetadataServiceStub:
    return metadata_pb2_grpc.MetadataServiceStub(channel)


@pytest.fixture
def repo() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


async def rpc_error(call: object) -> RegistryError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return from_rpc_error(caught.value)


async def expect(call: object, kind: ErrorKind) -> RegistryError:
    error = await rpc_error(call)
    assert error.kind is kind, error
    return error


async def push_image(stub: metadata_pb2_grpc.MetadataServiceStub, repository: str, reference: str,
                     document: dict) -> tuple[bytes, str]:
    for digest, size in docs.blobs_of(document):
        await stub.LinkBlob(pb.LinkBlobRequest(repository=repository, digest=digest, size=size))
    payload = docs.render(document)
    reply = await stub.PutManifest(pb.PutManifestRequest(
        repository=repository, reference=reference, media_type=docs.OCI_MANIFEST, payload=payload))
    return payload, reply.digest


async def test_health_is_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_blob_links(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    digest = docs.random_digest()
    await stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest=digest, size=11))
    await stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest=digest, size=11))
    stat = await stub.StatBlob(pb.StatBlobRequest(repository=repo, digest=digest))
    assert (stat.digest, stat.size) == (digest, 11)

    mounted = await stub.MountBlob(pb.MountBlobRequest(repository=repo + "-b", digest=digest, from_repository=repo))
    assert mounted.mounted and mounted.size == 11
    anywhere = await stub.MountBlob(pb.MountBlobRequest(repository=repo + "-c", digest=digest))
    assert anywhere.mounted and anywhere.size == 11
    missing = await stub.MountBlob(pb.MountBlobRequest(repository=repo + "-d", digest=docs.random_digest(),
                                                       from_repository="no/such/repo"))
    assert not missing.mounted and missing.size == 0

    await stub.UnlinkBlob(pb.UnlinkBlobRequest(repository=repo, digest=digest))
    error = await expect(stub.StatBlob(pb.StatBlobRequest(repository=repo, digest=digest)), ErrorKind.BLOB_UNKNOWN)
    assert error.detail == {"name": repo, "digest": digest}
    await expect(stub.UnlinkBlob(pb.UnlinkBlobRequest(repository=repo, digest=digest)), ErrorKind.BLOB_UNKNOWN)
    await expect(stub.StatBlob(pb.StatBlobRequest(repository="nobody/here", digest=digest)), ErrorKind.BLOB_UNKNOWN)


async def test_blob_input_validation(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    await expect(stub.LinkBlob(pb.LinkBlobRequest(repository="Not Valid", digest=docs.random_digest(), size=1)),
                 ErrorKind.NAME_INVALID)
    await expect(stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest="sha256:zz", size=1)),
                 ErrorKind.DIGEST_INVALID)
    await expect(stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest=docs.random_digest(), size=-5)),
                 ErrorKind.SIZE_INVALID)
    await expect(stub.StatBlob(pb.StatBlobRequest(repository=repo, digest="")), ErrorKind.DIGEST_INVALID)
    await expect(stub.MountBlob(pb.MountBlobRequest(repository=repo, digest=docs.random_digest(),
                                                    from_repository="UPPER")), ErrorKind.NAME_INVALID)


async def test_manifest_lifecycle(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    payload, digest = await push_image(stub, repo, "v1", docs.image())
    assert digest == docs.sha256(payload)
    for reference in ("v1", digest):
        got = await stub.GetManifest(pb.GetManifestRequest(repository=repo, reference=reference))
        assert (got.digest, got.media_type, got.size, got.payload) == (digest, docs.OCI_MANIFEST, len(payload), payload)
        head = await stub.GetManifest(pb.GetManifestRequest(repository=repo, reference=reference, omit_payload=True))
        assert (head.digest, head.size, head.payload) == (digest, len(payload), b"")

    await stub.DeleteManifest(pb.DeleteManifestRequest(repository=repo, reference="v1"))
    await expect(stub.GetManifest(pb.GetManifestRequest(repository=repo, reference="v1")), ErrorKind.MANIFEST_UNKNOWN)
    assert (await stub.GetManifest(pb.GetManifestRequest(repository=repo, reference=digest))).payload == payload
    await expect(stub.DeleteManifest(pb.DeleteManifestRequest(repository=repo, reference="v1")),
                 ErrorKind.MANIFEST_UNKNOWN)

    await stub.PutManifest(pb.PutManifestRequest(repository=repo, reference="v2", media_type=docs.OCI_MANIFEST,
                                                 payload=payload))
    await stub.DeleteManifest(pb.DeleteManifestRequest(repository=repo, reference=digest))
    for reference in ("v2", digest):
        await expect(stub.GetManifest(pb.GetManifestRequest(repository=repo, reference=reference)),
                     ErrorKind.MANIFEST_UNKNOWN)
    await expect(stub.DeleteManifest(pb.DeleteManifestRequest(repository=repo, reference=digest)),
                 ErrorKind.MANIFEST_UNKNOWN)
    await expect(stub.GetManifest(pb.GetManifestRequest(repository="ghost/repo", reference="v1")),
                 ErrorKind.NAME_UNKNOWN)
    await expect(stub.DeleteManifest(pb.DeleteManifestRequest(repository="ghost/repo", reference="v1")),
                 ErrorKind.NAME_UNKNOWN)


async def test_put_manifest_errors(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    document = docs.image(layers=1)
    payload = docs.render(document)

    def put(reference: str, body: bytes = payload, media_type: str = docs.OCI_MANIFEST, repository: str = repo):
        return stub.PutManifest(pb.PutManifestRequest(repository=repository, reference=reference,
                                                      media_type=media_type, payload=body))

    error = await expect(put("v1"), ErrorKind.MANIFEST_BLOB_UNKNOWN)
    assert sorted(error.detail["blobs"]) == sorted(d for d, _ in docs.blobs_of(document))
    assert error.detail["blob_count"] == len(docs.blobs_of(document)) and error.detail["manifest_count"] == 0
    await expect(put("sha256:" + "0" * 64), ErrorKind.DIGEST_INVALID)
    await expect(put("v1", b"{}"), ErrorKind.MANIFEST_INVALID)
    schema1 = await expect(put("v1", b'{"schemaVersion": 1}', "application/vnd.docker.distribution.manifest.v1+json"),
                           ErrorKind.MANIFEST_INVALID)
    assert "schema1" in schema1.message
    await expect(put("v1", media_type="image/png"), ErrorKind.MANIFEST_INVALID)
    too_large = await expect(put("v1", b" " * (MAX_MANIFEST + 1)), ErrorKind.MANIFEST_TOO_LARGE)
    assert too_large.kind.http_status == 413
    await expect(put("bad:tag:"), ErrorKind.DIGEST_INVALID)
    await expect(put(".hidden"), ErrorKind.TAG_INVALID)
    await expect(put("v1", repository="a//b"), ErrorKind.NAME_INVALID)
    # Nothing above created the repository.
    await expect(stub.ListTags(pb.ListTagsRequest(repository=repo)), ErrorKind.NAME_UNKNOWN)


async def test_index_and_subject(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    child, child_digest = await push_image(stub, repo, "amd64", docs.image())
    index_payload = docs.render(docs.index([child]))
    reply = await stub.PutManifest(pb.PutManifestRequest(repository=repo, reference="latest",
                                                         media_type=docs.OCI_INDEX, payload=index_payload))
    assert reply.subject_digest == ""
    missing = docs.render(docs.index([child, b"not pushed"]))
    error = await expect(stub.PutManifest(pb.PutManifestRequest(repository=repo, reference="broken",
                                                                media_type=docs.OCI_INDEX, payload=missing)),
                         ErrorKind.MANIFEST_BLOB_UNKNOWN)
    assert error.detail["manifests"] == [docs.sha256(b"not pushed")]

    subject = docs.descriptor(docs.OCI_MANIFEST, child_digest, len(child))
    artifact = docs.image(layers=1, config_type=docs.OCI_EMPTY, artifact_type="application/x-sbom",
                          subject=subject, annotations={"k": "v"})
    for d, s in docs.blobs_of(artifact):
        await stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest=d, size=s))
    artifact_payload = docs.render(artifact)
    put = await stub.PutManifest(pb.PutManifestRequest(
        repository=repo, reference=docs.sha256(artifact_payload), media_type="", payload=artifact_payload))
    assert put.subject_digest == child_digest and put.digest == docs.sha256(artifact_payload)

    referrers = await stub.ListReferrers(pb.ListReferrersRequest(repository=repo, subject_digest=child_digest))
    assert len(referrers.referrers) == 1 and not referrers.page.has_more
    found = referrers.referrers[0]
    assert (found.digest, found.media_type, found.size, found.artifact_type) == (
        put.digest, docs.OCI_MANIFEST, len(artifact_payload), "application/x-sbom")
    assert dict(found.annotations) == {"k": "v"}
    filtered = await stub.ListReferrers(pb.ListReferrersRequest(repository=repo, subject_digest=child_digest,
                                                                artifact_type="application/other"))
    assert list(filtered.referrers) == []
    unknown = await stub.ListReferrers(pb.ListReferrersRequest(repository="ghost/x", subject_digest=child_digest))
    assert list(unknown.referrers) == []
    await expect(stub.ListReferrers(pb.ListReferrersRequest(repository=repo, subject_digest="nope")),
                 ErrorKind.DIGEST_INVALID)


async def test_listings_and_pagination(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    payload, _ = await push_image(stub, repo, "c", docs.image(layers=1))
    for tag in ("a", "b"):
        await stub.PutManifest(pb.PutManifestRequest(repository=repo, reference=tag, media_type=docs.OCI_MANIFEST,
                                                     payload=payload))

    async def tags(page: common_pb2.PageRequest | None = None) -> tuple[list[str], bool]:
        reply = await stub.ListTags(pb.ListTagsRequest(repository=repo, page=page))
        return list(reply.tags), reply.page.has_more

    assert await tags() == (["a", "b"], True)  # the default page size (2)
    assert await tags(common_pb2.PageRequest(has_limit=True, limit=0)) == ([], True)
    assert await tags(common_pb2.PageRequest(has_limit=True, limit=3)) == (["a", "b", "c"], False)
    assert await tags(common_pb2.PageRequest(has_limit=True, limit=1, last="a")) == (["b"], True)
    assert await tags(common_pb2.PageRequest(has_limit=True, limit=5, last="c")) == ([], False)
    await expect(stub.ListTags(pb.ListTagsRequest(repository=repo, page=common_pb2.PageRequest(
        has_limit=True, limit=-1))), ErrorKind.PAGINATION_NUMBER_INVALID)
    await expect(stub.ListTags(pb.ListTagsRequest(repository="ghost/tags")), ErrorKind.NAME_UNKNOWN)

    repos = await stub.ListRepositories(pb.ListRepositoriesRequest(
        page=common_pb2.PageRequest(has_limit=True, limit=1000)))
    assert repo in repos.repositories and list(repos.repositories) == sorted(repos.repositories)
    after = await stub.ListRepositories(pb.ListRepositoriesRequest(
        page=common_pb2.PageRequest(has_limit=True, limit=1, last=repo)))
    assert all(name > repo for name in after.repositories)
    empty = await stub.ListRepositories(pb.ListRepositoriesRequest(page=common_pb2.PageRequest(has_limit=True)))
    assert list(empty.repositories) == [] and empty.page.has_more
    default = await stub.ListRepositories(pb.ListRepositoriesRequest())
    assert len(default.repositories) <= DEFAULT_PAGE


async def test_concurrent_pushes_through_the_service(stub: metadata_pb2_grpc.MetadataServiceStub, repo: str) -> None:
    document = docs.image(layers=1)
    for d, s in docs.blobs_of(document):
        await stub.LinkBlob(pb.LinkBlobRequest(repository=repo, digest=d, size=s))
    payload = docs.render(document)
    replies = await asyncio.gather(*(
        stub.PutManifest(pb.PutManifestRequest(repository=repo, reference="latest", media_type=docs.OCI_MANIFEST,
                                               payload=payload)) for _ in range(10)))
    assert {r.digest for r in replies} == {docs.sha256(payload)}
    assert list((await stub.ListTags(pb.ListTagsRequest(repository=repo))).tags) == ["latest"]


def test_refuses_out_of_date_schema_until_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/db/registry.db"
    process, socket = metadata_process(tmp_path, url, auto_migrate=False, name="strict")
    process.start()
    try:
        for _ in range(600):
            if process.poll() is not None:
                break
            time.sleep(0.05)
        code = process.poll()
    finally:
        process.stop()
    assert code == 2, process.log()
    assert "lading migrate" in process.log()
    assert not socket.exists()  # it never listened

    monkeypatch.setenv("LADING_METADATA__DATABASE_URL", url)
    assert migrate_main(load_settings()) == 0

    process, socket = metadata_process(tmp_path, url, auto_migrate=False, name="strict-after-migrate")
    process.start()
    try:
        wait_until_path_exists(socket, process)
        assert wait_until_serving(socket) == health_pb2.HealthCheckResponse.SERVING
        assert process.poll() is None
    finally:
        assert process.stop() == 0


def test_migrate_command_reports_unreachable_database(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADING_METADATA__DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/none")
    assert migrate_main(load_settings()) == 1
    assert "lading migrate: failed" in capsys.readouterr().err
