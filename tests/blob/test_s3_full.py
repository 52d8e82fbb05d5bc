"""The S3 backend on a server out of room: what such servers send (MinIO's XMinioStorageFull
with 507, a bare 507 from SeaweedFS or a proxy, Ceph RGW's QuotaExceeded with 403) becomes
BackendFull, i.e. 507 STORAGE_FULL with what to do, not a 503 "retry shortly".

The server is a small HTTP server on 127.0.0.1 that answers every request with one response (no
real S3 server can be filled cheaply); the SDK and the backend are the real ones."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest

from services.blob.backends.base import BackendFull
from services.blob.backends.s3_factory import create_s3_backend
from services.blob.core import registry_error
from services.common.errors import ErrorKind
from services.common.settings import BlobSettings, S3BackendSettings
from tests.contracts.blob_backend_suite import chunks_of, pattern

MINIO_FULL = (
    507,
    "application/xml",
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code><Message>Storage '
    b"backend has reached its minimum free drive threshold. Please delete a few objects to proceed."
    b"</Message><Key>k</Key><BucketName>bucket</BucketName><Resource>/bucket/k</Resource>"
    b"<RequestId>1</RequestId><HostId>h</HostId></Error>",
)
BARE_507 = (507, "text/plain", b"Insufficient Storage")
RGW_QUOTA = (
    403,
    "application/xml",
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>QuotaExceeded</Code>'
    b"<BucketName>bucket</BucketName><RequestId>1</RequestId><HostId>h</HostId></Error>",
)


class _OneAnswer(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes] = BARE_507

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, content_type, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _reply

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def answering() -> Iterator[tuple[str, type[_OneAnswer]]]:
    handler = type("Answer", (_OneAnswer,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(endpoint: str) -> BlobSettings:
    return BlobSettings(
        backend="s3",
        s3=S3BackendSettings(
            endpoint=endpoint, bucket="bucket", access_key="k", secret_key="s", secure=False, path_style=True,
            connect_timeout_seconds=2.0, read_timeout_seconds=5.0, max_retries=0,
        ),
    )


@pytest.mark.parametrize("answer", [MINIO_FULL, BARE_507, RGW_QUOTA], ids=["minio", "bare-507", "rgw-quota"])
async def test_a_server_out_of_room_is_storage_full(
    answering: tuple[str, type[_OneAnswer]], answer: tuple[int, str, bytes]
) -> None:
    endpoint, handler = answering
    handler.answer = answer
    backend = create_s3_backend(settings(endpoint))
    try:
        with pytest.raises(BackendFull, match="has no room for the write") as caught:
            await asyncio.wait_for(backend.put("k", chunks_of(pattern(1000))), timeout=30)
        error = registry_error(caught.value)
        assert error.kind is ErrorKind.STORAGE_FULL and "free or add space" in error.message
    finally:
        await backend.close()

