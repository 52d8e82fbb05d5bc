"""The blob plane's direct-read server (services/blob/direct_reads.py) over real files and HTTP.

A signed URL gets the exact bytes (GET, HEAD, Range) of exactly the blob it names, until it
expires; anything altered, expired or not a blob gets 403/404 with a reason; the server only
starts over a backend with local files.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from services.blob.backends import keys
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.core import BlobStore
from services.blob.direct_reads import DirectReadServer, SignedBlobUrls, signing_secret
from services.blob.fetch_spool import FetchSpool
from services.blob.main import BackendConfigError, build_direct_reads, build_store
from services.common.digests import Digest
from services.common.settings import BlobSettings, DirectReadSettings
from tests.support.clock import FakeClock
from tests.support.connections import MARGIN, hold, read_until_closed, request, still_open

SECRET = b"direct-read-test-secret"


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def _store_blob(backend: FilesystemBackend, data: bytes) -> str:
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    await backend.put(keys.blob_key(digest), _one(data))
    return keys.blob_key(digest)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[FilesystemBackend]:
    fs = FilesystemBackend(tmp_path / "blobs")
    yield fs
    await fs.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
async def server(backend: FilesystemBackend, clock: FakeClock) -> AsyncIterator[DirectReadServer]:
    urls = SignedBlobUrls(SECRET, 300, clock=clock)
    started = await DirectReadServer(DirectReadSettings(enabled=True, listen="127.0.0.1:0"), urls, backend).start()
    yield started
    await started.close()


@pytest.fixture
async def http(server: DirectReadServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def _on_loopback(url: str) -> str:
    """The server leaves the host out (`http://:PORT/...`) for the gateway to fill in."""
    assert url.startswith("http://:"), url
    return url.replace("http://:", "http://127.0.0.1:", 1)


async def test_a_signed_url_serves_the_exact_bytes(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    key = await _store_blob(backend, data)
    url = _on_loopback(await server.urls.presigned_get_url(key))

    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["docker-content-digest"] == str(keys.digest_of_blob_key(key))
    assert response.headers["accept-ranges"] == "bytes"

    head = await http.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(data)


@pytest.mark.parametrize(("header", "start", "end"), [("bytes=10-19", 10, 19), ("bytes=-7", 993, 999), ("bytes=990-", 990, 999)])
async def test_ranges_are_answered_with_206(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient, header: str, start: int, end: int
) -> None:
    data = os.urandom(1000)
    url = _on_loopback(await server.urls.presigned_get_url(await _store_blob(backend, data)))
    response = await http.get(url, headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/1000"
    assert response.content == data[start : end + 1]
    unsatisfiable = await http.get(url, headers={"Range": "bytes=1000-"})
    assert unsatisfiable.status_code == 416


async def test_ranges_conditions_and_their_order_follow_rfc_9110(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient
) -> None:
    data = os.urandom(1000)
    key = await _store_blob(backend, data)
    url = _on_loopback(await server.urls.presigned_get_url(key))
    full = await http.get(url)
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert etag == f'"{keys.digest_of_blob_key(key)}"'  # the digest: the same on every replica

    async def get(**headers: str) -> httpx.Response:
        return await http.get(url, headers=headers)

    assert (await get(range="bytes=995-5000")).headers["content-range"] == "bytes 995-999/1000"
    for unsatisfiable in ("bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=99999999999999999999999-"):
        refused = await get(range=unsatisfiable)
        assert (refused.status_code, refused.headers["content-range"]) == (416, "bytes */1000"), unsatisfiable
    # What the gateway ignores before it redirects here is ignored here too (RFC 9110 section
    # 14.2: another unit MUST be ignored; several ranges or an invalid one MAY be): the whole
    # blob, not a 416 for a request the gateway found fine.
    for ignored in ("bytes=0-1,5-6", "bytes=0-1,2000-3000", "bytes=9-3", "lines=1-2", "bytes=", "bytes=-", "0-9"):
        whole = await get(range=ignored)
        assert (whole.status_code, whole.content, whole.headers.get("content-range")) == (200, data, None), ignored
    # If-Range: the range applies only to this very blob.
    assert (await get(range="bytes=0-9", **{"if-range": etag})).status_code == 206
    other = await get(range="bytes=0-9", **{"if-range": '"sha256:' + "0" * 64 + '"'})
    assert (other.status_code, other.content) == (200, data)
    assert (await get(range="bytes=0-9", **{"if-range": modified})).status_code == 206
    # Conditional requests.
    assert (await get(**{"if-none-match": etag})).status_code == 304
    assert (await get(**{"if-none-match": f"W/{etag}"})).status_code == 304
    assert (await get(**{"if-none-match": '"other"'})).status_code == 200
    assert (await get(**{"if-modified-since": modified})).status_code == 304
    assert (await get(**{"if-match": '"other"'})).status_code == 412
    assert (await get(**{"if-match": etag}, range="bytes=0-0")).status_code == 206
    assert (await get(**{"if-unmodified-since": "Thu, 01 Jan 1970 00:00:01 GMT"})).status_code == 412
    head = await http.head(url, headers={"Range": "bytes=0-9"})
    assert (head.status_code, head.content, head.headers["content-length"]) == (206, b"", "10")


async def test_requests_on_one_connection_are_answered_in_order(
    server: DirectReadServer, backend: FilesystemBackend
) -> None:
    first, second = os.urandom(300_000), os.urandom(5)
    urls = [_on_loopback(await server.urls.presigned_get_url(await _store_blob(backend, data)))
            for data in (first, second)]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # Pipelined: both requests in one write, the second asking to close afterwards.
    paths = [url.split(str(server.port), 1)[1] for url in urls]
    writer.write(f"GET {paths[0]} HTTP/1.1\r\nHost: x\r\n\r\n"
                 f"GET {paths[1]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await read_until_closed(reader, time.monotonic() + 10)
    writer.close()
    head_one, rest = answer.split(b"\r\n\r\n", 1)
    assert head_one.startswith(b"HTTP/1.1 200 ") and rest[: len(first)] == first
    head_two, body_two = rest[len(first):].split(b"\r\n\r\n", 1)
    assert head_two.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head_two and body_two == second


async def test_a_client_leaving_mid_transfer_leaves_the_server_serving(
    server: DirectReadServer, backend: FilesystemBackend
) -> None:
    data = os.urandom(16 * 1024 * 1024)  # more than the socket buffers hold
    url = _on_loopback(await server.urls.presigned_get_url(await _store_blob(backend, data)))
    path = url.split(str(server.port), 1)[1]
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await reader.read(65536)
        writer.transport.abort()  # gone, with most of the blob unsent
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(url)).content == data
    deadline = time.monotonic() + 5
    while server.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the server's state
        await asyncio.sleep(0.05)
    assert server.connections == set(), "a connection whose client left is still held"


async def test_altered_urls_are_refused(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient
) -> None:
    key = await _store_blob(backend, b"first blob")
    other = await _store_blob(backend, b"second blob")
    url = _on_loopback(await server.urls.presigned_get_url(key))
    path, query = url.split("?", 1)

    # Another blob under this URL's signature.
    swapped = await http.get(path.replace(key, other) + "?" + query)
    assert swapped.status_code == 403
    assert "signature does not match" in swapped.text
    # A later expiry under the same signature.
    expires = query.split("&")[0].split("=")[1]
    extended = await http.get(url.replace(f"expires={expires}", f"expires={int(expires) + 3600}"))
    assert extended.status_code == 403
    unsigned = await http.get(path)
    assert unsigned.status_code == 403
    assert "ask the registry for the blob again" in unsigned.text
    # Signed by a registry with another secret.
    stranger = SignedBlobUrls(b"another secret", 300)
    stranger.base_url = "http://127.0.0.1:1"
    foreign = await stranger.presigned_get_url(key)
    assert (await http.get(path + "?" + foreign.split("?", 1)[1])).status_code == 403
    # The genuine URL still works.
    assert (await http.get(url)).content == b"first blob"


async def test_urls_expire(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    url = _on_loopback(await server.urls.presigned_get_url(await _store_blob(backend, b"short-lived")))
    clock.now += 299
    assert (await http.get(url)).status_code == 200
    clock.now += 2
    expired = await http.get(url)
    assert expired.status_code == 403
    assert "expired" in expired.text


async def test_only_stored_blobs_are_served(
    server: DirectReadServer, backend: FilesystemBackend, http: httpx.AsyncClient
) -> None:
    key = await _store_blob(backend, b"collected soon")
    url = _on_loopback(await server.urls.presigned_get_url(key))
    await backend.delete(key)  # garbage collection after the URL was handed out
    assert (await http.get(url)).status_code == 404

    base = url.split("/blobs/", 1)[0]
    for path in ("/blobs/sha256/zz/not-a-digest", "/uploads/x/data", "/blobs/../registry.db", "/"):
        assert (await http.get(base + path)).status_code in (403, 404), path
    assert (await http.post(url, content=b"x")).status_code == 405
    assert (await http.delete(url)).status_code == 405


async def test_urls_signed_with_a_shared_secret_verify_on_every_replica(clock: FakeClock) -> None:
    one, two = SignedBlobUrls(SECRET, 60, clock=clock), SignedBlobUrls(SECRET, 60, clock=clock)
    one.base_url = two.base_url = "https://blobs.example.com"
    url = await one.presigned_get_url("blobs/sha256/ab/" + "ab" * 32)
    assert url.startswith("https://blobs.example.com/blobs/sha256/ab/")
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    assert two.verify("blobs/sha256/ab/" + "ab" * 32, query["expires"], query["signature"]) is None
    # An empty setting means a random key per process: URLs from one process fail on another.
    random_a = signing_secret(DirectReadSettings())
    random_b = signing_secret(DirectReadSettings())
    assert random_a != random_b and len(random_a) == 32
    assert signing_secret(DirectReadSettings(secret="shared")) == b"shared"


async def test_public_url_is_the_base_of_every_url(backend: FilesystemBackend) -> None:
    settings = DirectReadSettings(enabled=True, listen="127.0.0.1:0", public_url="https://blobs.example.com/")
    server = await DirectReadServer(settings, SignedBlobUrls(SECRET, 60), backend).start()
    try:
        url = await server.urls.presigned_get_url(await _store_blob(backend, b"x"))
        assert url.startswith("https://blobs.example.com/blobs/sha256/")
        assert server.port > 0
    finally:
        await server.close()


async def test_the_store_redirects_to_direct_reads_only_when_they_are_on(tmp_path: Path) -> None:
    settings = BlobSettings(backend="filesystem")
    settings.filesystem.root = tmp_path / "blobs"
    backend = FilesystemBackend(settings.filesystem.root)
    try:
        assert build_direct_reads(settings, backend) is None
        assert not build_store(settings, backend).redirects_reads

        settings.direct_reads = DirectReadSettings(enabled=True, listen="127.0.0.1:0")
        direct = build_direct_reads(settings, backend)
        assert direct is not None
        store: BlobStore = build_store(settings, backend, direct.urls)
        assert store.redirects_reads
        await direct.start()
        try:
            data = b"redirected blob"
            key = await _store_blob(backend, data)
            digest = str(keys.digest_of_blob_key(key))
            url = await store.read_redirect(digest)
            assert url is not None
            async with httpx.AsyncClient() as http:
                assert (await http.get(_on_loopback(url))).content == data
        finally:
            await direct.close()
    finally:
        await backend.close()


def test_direct_reads_need_local_files() -> None:
    from services.blob.backends.memory import MemoryBackend

    settings = BlobSettings(backend="memory", direct_reads=DirectReadSettings(enabled=True))
    with pytest.raises(BackendConfigError, match="LADING_BLOB__DIRECT_READS__ENABLED"):
        build_direct_reads(settings, MemoryBackend())


def test_direct_reads_on_s3_serve_fetches_only_and_need_the_spool_and_presigned_reads() -> None:
    """On S3 (no local files) the server serves cold fetches from their spool files and sends
    later readers to S3's URLs; ordinary reads keep S3's presigned URLs. Without the spool or
    presigned reads it refuses, naming what is missing. No I/O: building touches no bucket."""
    from services.blob.main import build_backend

    settings = BlobSettings(backend="s3", direct_reads=DirectReadSettings(enabled=True, listen="127.0.0.1:0"))
    settings.s3.bucket = "lading"
    backend = build_backend(settings)
    direct = build_direct_reads(settings, backend)
    assert direct is not None and direct.files is None and direct.stored is not None
    assert build_store(settings, backend).redirects_reads  # S3's own presigned URLs
    settings.s3.redirect_reads = False
    with pytest.raises(BackendConfigError, match="blob.s3.redirect_reads"):
        build_direct_reads(settings, backend)
    settings.s3.redirect_reads = True
    settings.fetch_spool.budget_bytes = 0
    with pytest.raises(BackendConfigError, match="blob.fetch_spool.budget_bytes"):
        build_direct_reads(settings, backend)


# --- connection guards (issue 11, item 11) and the start-up line (item 19) --------------------------


async def _guarded_server(backend: FilesystemBackend, **guards: float) -> DirectReadServer:
    settings = DirectReadSettings(enabled=True, listen="127.0.0.1:0", **guards)
    return await DirectReadServer(settings, SignedBlobUrls(SECRET, 300), backend).start()


async def test_a_half_sent_head_gets_408_once_its_time_is_up(backend: FilesystemBackend) -> None:
    # A long keep-alive timeout: the header timeout is what must end it.
    server = await _guarded_server(backend, header_timeout_seconds=1.5, keep_alive_timeout_seconds=60)
    try:
        reader, writer = await hold(server.port, "127.0.0.2", b"GET /blobs/x HTTP/1.1\r\nHo")
        started = time.monotonic()
        for _ in range(3):  # a byte now and then, never ending the head
            assert await still_open(reader, 0.3)
            writer.write(b"s")
        answer = await read_until_closed(reader, started + 1.5 + MARGIN)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        writer.close()
        # A whole request is still served meanwhile and after.
        assert (await request(server.port, "127.0.0.3", "/blobs/nope")).startswith(b"HTTP/1.1 404 ")
    finally:
        await server.close()


async def test_an_idle_connection_is_closed(backend: FilesystemBackend) -> None:
    server = await _guarded_server(backend, keep_alive_timeout_seconds=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        assert await still_open(reader, 0.5)
        assert await read_until_closed(reader, started + 1.0 + MARGIN) == b""
        writer.close()
    finally:
        await server.close()


async def test_connections_per_client_address_are_capped(backend: FilesystemBackend) -> None:
    server = await _guarded_server(backend, max_connections_per_client=2, header_timeout_seconds=60,
                                   keep_alive_timeout_seconds=60)
    try:
        held = [await hold(server.port, "127.0.0.2") for _ in range(2)]
        over = await request(server.port, "127.0.0.2", "/blobs/nope")
        assert over.startswith(b"HTTP/1.1 429 "), over
        assert (await request(server.port, "127.0.0.3", "/blobs/nope")).startswith(b"HTTP/1.1 404 ")
        for _, writer in held:
            writer.close()
    finally:
        await server.close()


async def test_the_start_up_line_names_where_it_listens(
    backend: FilesystemBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="lading.blob.direct"):
        server = await _guarded_server(backend)
    await server.close()
    (line,) = [r.getMessage() for r in caplog.records if "direct blob reads" in r.getMessage()]
    assert f"http://127.0.0.1:{server.port}" in line
    assert "://:" not in line, line  # a URL without a host says nothing a user can use


# --- the event loop never frees a spool file --------------------------------------------------------


class _RecordsWhereClosed:
    """A reader's real handle on a file, noting the thread that closed it."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.closed_in: int | None = None

    def close(self) -> None:
        self.closed_in = threading.get_ident()
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


async def test_a_readers_last_handle_on_a_spool_file_is_closed_off_the_event_loop(tmp_path: Path) -> None:
    """A reader of a fetch served from its spool file (S3 backend) keeps its own handle, which
    is the unlinked file's last descriptor when the fetch ends first; closing that frees the
    file's blocks (tens of ms per 64 MiB on ext4), so the server closes it in a worker thread."""
    data = os.urandom(3 * 1024 * 1024)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    urls = SignedBlobUrls(SECRET, 300)
    server = await DirectReadServer(DirectReadSettings(enabled=True, listen="127.0.0.1:0"), urls, None,
                                    stored=urls).start()
    spooled = await FetchSpool(tmp_path / "spool", 64 * 1024 * 1024).open(hashlib.sha256())
    handles: list[_RecordsWhereClosed] = []

    def reopen() -> BinaryIO | None:
        file = spooled.reopen()
        if file is not None:
            handles.append(_RecordsWhereClosed(file))
        return handles[-1] if file is not None else None  # type: ignore[return-value]

    try:
        await spooled.put(data)
        await spooled.finish()
        with server.fetches.running(str(digest), len(data), reopen=reopen) as progress:
            url = _on_loopback(await urls.presigned_get_url(keys.blob_key(digest)))
            async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as response:
                assert response.status_code == 200
                received = bytearray()
                chunks = response.aiter_bytes()
                while len(received) < len(data) - progress.hold:  # all but the held-back end
                    received += await anext(chunks)
                spooled.close()  # the fetch is over: the reader's handle is the file's last
                progress.verified()
                async for chunk in chunks:
                    received += chunk
                assert bytes(received) == data
        (handle,) = handles
        deadline = time.monotonic() + 10
        while handle.closed_in is None:
            assert time.monotonic() < deadline, "the reader's handle was never closed"
            await asyncio.sleep(0.01)
        assert handle.closed_in != threading.get_ident(), "closed on the event loop"
    finally:
        spooled.close()
        await server.close()
