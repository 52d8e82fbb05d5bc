"""The gateway over real HTTP, with tiny in-test gRPC planes that answer canned values or raise
registry errors: how failures and plane answers are rendered as HTTP (codes, statuses, headers).

The full behaviour against the real planes lives in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import uvicorn
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.common.v1 import common_pb2
from lading.metadata.v1 import metadata_pb2, metadata_pb2_grpc

from gateway.app import create_app
from services.common.errors import ErrorKind, RegistryError
from services.common.grpc_server import ErrorMappingInterceptor
from services.common.settings import Settings

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
BLOB = b"0123456789"
SESSION_OFFSET = 5


class FakeMetadata(metadata_pb2_grpc.MetadataServiceServicer):
    async def GetManifest(self, request: Any, context: Any) -> Any:
        if request.reference != "present":
            raise RegistryError(
                ErrorKind.MANIFEST_UNKNOWN, f"no manifest {request.reference}", {"tag": request.reference}
            )
        return metadata_pb2.GetManifestResponse(
            digest=DIGEST, media_type="application/vnd.oci.image.manifest.v1+json", size=2, payload=b"{}"
        )

    async def StatBlob(self, request: Any, context: Any) -> Any:
        if request.digest != DIGEST:
            raise RegistryError(ErrorKind.BLOB_UNKNOWN, "not linked here", {"digest": request.digest})
        return metadata_pb2.StatBlobResponse(digest=DIGEST, size=len(BLOB))

    async def ListTags(self, request: Any, context: Any) -> Any:
        if request.repository == "missing":
            raise RegistryError(ErrorKind.NAME_UNKNOWN, "no such repository", {"name": request.repository})
        tags = ["a", "b", "c"][: request.page.limit]
        return metadata_pb2.ListTagsResponse(tags=tags, page=common_pb2.PageResponse(has_more=len(tags) < 3))

    async def ListReferrers(self, request: Any, context: Any) -> Any:
        raise RegistryError(ErrorKind.NAME_UNKNOWN, "no such repository", {"name": request.repository})

    async def PutManifest(self, request: Any, context: Any) -> Any:
        return metadata_pb2.PutManifestResponse(digest=DIGEST, subject_digest=OTHER)


class FakeBlob(blob_pb2_grpc.BlobServiceServicer):
    async def StartUpload(self, request: Any, context: Any) -> Any:
        status = blob_pb2.UploadStatus(upload_id="u1", repository=request.repository, offset=0)
        return blob_pb2.StartUploadResponse(status=status, min_chunk_size=5 * 1024 * 1024)

    async def GetUploadStatus(self, request: Any, context: Any) -> Any:
        return blob_pb2.GetUploadStatusResponse(
            status=blob_pb2.UploadStatus(upload_id=request.upload_id, offset=SESSION_OFFSET)
        )

    async def AppendUpload(self, request_iterator: Any, context: Any) -> Any:
        received = 0
        first = None
        async for message in request_iterator:
            if first is None:
                first = message
                if message.expected_offset != SESSION_OFFSET:
                    raise RegistryError(
                        ErrorKind.RANGE_INVALID, "chunk out of order", {"offset": SESSION_OFFSET}
                    )
            received += len(message.data)
        return blob_pb2.AppendUploadResponse(
            status=blob_pb2.UploadStatus(upload_id=first.upload_id, offset=SESSION_OFFSET + received)
        )

    async def ReadBlob(self, request: Any, context: Any) -> Any:
        end = request.offset + request.length if request.length else len(BLOB)
        yield blob_pb2.ReadBlobResponse(data=BLOB[request.offset : end])


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handling alone
        yield


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    sock = _free_socket()
    config = uvicorn.Config(create_app(settings), http="httptools", lifespan="on", log_level="warning")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    run = Path(tmp_path_factory.mktemp("planes"))
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    metadata_pb2_grpc.add_MetadataServiceServicer_to_server(FakeMetadata(), server)
    blob_pb2_grpc.add_BlobServiceServicer_to_server(FakeBlob(), server)
    server.add_insecure_port(f"unix:{run}/planes.sock")
    await server.start()
    settings = Settings(
        gateway={
            "metadata_target": f"unix:{run}/planes.sock",
            "blob_target": f"unix:{run}/planes.sock",
            "max_manifest_bytes": 1024,
            "default_page_size": 2,
        }
    )
    try:
        async with running_gateway(settings) as http:
            yield http
    finally:
        await server.stop(None)


def error_code(response: httpx.Response) -> str:
    return orjson.loads(response.content)["errors"][0]["code"]


async def test_plane_errors_keep_their_code_and_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/a/manifests/absent")
    assert response.status_code == 404
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert orjson.loads(response.content) == {
        "errors": [{"code": "MANIFEST_UNKNOWN", "message": "no manifest absent", "detail": {"tag": "absent"}}]
    }


async def test_head_errors_have_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head(f"/v2/a/blobs/{OTHER}")
    assert response.status_code == 404
    assert response.content == b""


async def test_manifest_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/a/manifests/present")
    assert response.status_code == 200
    assert response.content == b"{}"
    assert response.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert response.headers["docker-content-digest"] == DIGEST
    assert response.headers["etag"] == f'"{DIGEST}"'
    cached = await client.get("/v2/a/manifests/present", headers={"if-none-match": f'"{DIGEST}"'})
    assert cached.status_code == 304 and cached.content == b""


async def test_out_of_order_chunk_is_416_with_the_session_state(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v2/a/b/blobs/uploads/u1", content=b"xyz", headers={"content-range": "0-2"}
    )
    assert response.status_code == 416
    assert error_code(response) == "BLOB_UPLOAD_INVALID"
    assert response.headers["range"] == f"0-{SESSION_OFFSET - 1}"
    assert response.headers["location"] == "/v2/a/b/blobs/uploads/u1"
    assert response.headers["docker-upload-uuid"] == "u1"


async def test_malformed_content_range_is_416_with_the_session_state(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v2/a/blobs/uploads/u1", content=b"xyz", headers={"content-range": "bytes=5-7"}
    )
    assert response.status_code == 416
    assert response.headers["range"] == f"0-{SESSION_OFFSET - 1}"


async def test_content_range_and_length_must_agree(client: httpx.AsyncClient) -> None:
    response = await client.patch("/v2/a/blobs/uploads/u1", content=b"xyz", headers={"content-range": "5-9"})
    assert response.status_code == 400
    assert error_code(response) == "SIZE_INVALID"


async def test_streamed_patch_appends_at_the_session_offset(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"defg"

    response = await client.patch("/v2/a/blobs/uploads/u1", content=body())
    assert response.status_code == 202
    assert response.headers["range"] == f"0-{SESSION_OFFSET + 7 - 1}"
    assert response.headers["location"] == "/v2/a/blobs/uploads/u1"


@pytest.mark.parametrize("upload_id", ["%2E%2E", "a%20b", "-x", "x" * 200])
async def test_invalid_upload_id_is_unknown(client: httpx.AsyncClient, upload_id: str) -> None:
    response = await client.get(f"/v2/a/blobs/uploads/{upload_id}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


async def test_closing_put_needs_a_digest(client: httpx.AsyncClient) -> None:
    response = await client.put("/v2/a/blobs/uploads/u1")
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_start_upload_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/a/b/blobs/uploads/")
    assert response.status_code == 202
    assert response.headers["location"] == "/v2/a/b/blobs/uploads/u1"
    assert response.headers["range"] == "0-0"
    assert response.headers["docker-upload-uuid"] == "u1"
    assert response.headers["content-length"] == "0"
    assert response.headers["oci-chunk-min-length"] == str(5 * 1024 * 1024)


async def test_trusted_proxy_gets_absolute_locations(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/a/blobs/uploads/",
        headers={"x-forwarded-proto": "https", "x-forwarded-host": "registry.example.org"},
    )
    assert response.headers["location"] == "https://registry.example.org/v2/a/blobs/uploads/u1"


async def test_blob_ranges(client: httpx.AsyncClient) -> None:
    partial = await client.get(f"/v2/a/blobs/{DIGEST}", headers={"range": "bytes=2-4"})
    assert partial.status_code == 206
    assert partial.content == BLOB[2:5]
    assert partial.headers["content-range"] == f"bytes 2-4/{len(BLOB)}"
    outside = await client.get(f"/v2/a/blobs/{DIGEST}", headers={"range": "bytes=10-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(BLOB)}"
    whole = await client.get(f"/v2/a/blobs/{DIGEST}")
    assert whole.status_code == 200 and whole.content == BLOB
    assert whole.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_manifest_is_413(client: httpx.AsyncClient, chunked: bool) -> None:
    payload = b"{" + b" " * 2000 + b"}"

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100):
            yield payload[start : start + 100]

    response = await client.put(
        "/v2/a/manifests/v1",
        content=body() if chunked else payload,
        headers={"content-type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.status_code == 413
    assert error_code(response) == "MANIFEST_INVALID"


async def test_manifest_put_headers(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v2/a/manifests/v1",
        content=b"{}",
        headers={"content-type": "application/vnd.oci.image.manifest.v1+json; charset=utf-8"},
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/a/manifests/{DIGEST}"
    assert response.headers["oci-subject"] == OTHER


async def test_tags_link_header(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/a/tags/list")
    assert orjson.loads(response.content) == {"name": "a", "tags": ["a", "b"]}
    assert response.headers["link"] == '</v2/a/tags/list?n=2&last=b>; rel="next"'
    empty = await client.get("/v2/a/tags/list?n=0")
    assert orjson.loads(empty.content)["tags"] == [] and "link" not in empty.headers
    missing = await client.get("/v2/missing/tags/list")
    assert missing.status_code == 404 and error_code(missing) == "NAME_UNKNOWN"


async def test_referrers_never_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v2/nowhere/referrers/{DIGEST}?artifactType=application/x")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    assert response.headers["oci-filters-applied"] == "artifactType"
    assert orjson.loads(response.content) == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }
    bad = await client.get("/v2/nowhere/referrers/sha256:zz")
    assert bad.status_code == 400 and error_code(bad) == "DIGEST_INVALID"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/Upper/tags/list", 400, "NAME_INVALID"),
        # A reference that can never exist is unknown to reads and deletes (404, as the spec's
        # pull section answers what is not in the repository); a push under it is invalid (400).
        ("GET", "/v2/a/manifests/-bad-tag", 404, "MANIFEST_UNKNOWN"),
        ("DELETE", "/v2/a/manifests/-bad-tag", 404, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/a/manifests/-bad-tag", 400, "TAG_INVALID"),
        ("GET", "/v2/a/manifests/sha256:short", 404, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/a/manifests/sha256:short", 400, "DIGEST_INVALID"),
        ("GET", "/v2/a/blobs/md5:abc", 404, "BLOB_UNKNOWN"),
        ("DELETE", "/v2/a/blobs/md5:abc", 400, "DIGEST_INVALID"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=Bad..Name", 400, "NAME_INVALID"),
        ("POST", "/v2/a/blobs/uploads/?mount=nope", 400, "DIGEST_INVALID"),
        ("GET", "/v2/_catalog?n=x", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/nope", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/only-a-name", 404, "NAME_UNKNOWN"),
        ("POST", "/v2/a/manifests/latest", 405, "UNSUPPORTED"),
        ("PUT", "/v2/", 405, "UNSUPPORTED"),
    ],
)
async def test_bad_requests(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert error_code(response) == code
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_version_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/")
    assert response.status_code == 200 and orjson.loads(response.content) == {}
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_planes_down_is_503(tmp_path: Path) -> None:
    settings = Settings(
        gateway={
            "metadata_target": f"unix:{tmp_path}/none-m.sock",
            "blob_target": f"unix:{tmp_path}/none-b.sock",
            "grpc": {"timeout_seconds": 5, "max_attempts": 2},
        }
    )
    async with running_gateway(settings) as http:
        for method, path in [
            ("GET", "/v2/a/manifests/latest"),
            ("POST", "/v2/a/blobs/uploads/"),
            ("GET", "/v2/_catalog"),
        ]:
            response = await http.request(method, path)
            assert response.status_code == 503
            assert error_code(response) == "UNAVAILABLE"
            assert b"Traceback" not in response.content
