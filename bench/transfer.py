"""The lean byte-moving client: `http.client` on one keep-alive connection per thread (and, for pull
rows, `aiohttp_pulls`: an aiohttp client, as asyncio programs pull).

Bodies go out with one `sendall` of a memoryview (no copies) and come back with `readinto` a
reused 1 MiB buffer (nothing kept, nothing hashed), so the client costs little CPU next to the
registry; `Client` users measure their own CPU with `time.process_time()`. Redirects (Lading and
Distribution on S3 answer blob GETs with 307 to a presigned URL) are followed on a connection to
the new host.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# Imported here, not in the timed pull: its import takes a few hundred ms.
import aiohttp

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    received: int  # bytes of body read (== len(body) unless the body was discarded)


class Client:
    """HTTP/1.1 to one registry (`http://host:port`), one connection, not thread-safe."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._timeout = timeout
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._buffer = bytearray(MiB)

    def close(self) -> None:
        self._conn.close()

    def request(self, method: str, target: str, body: bytes | memoryview | None = None,
                headers: dict[str, str] | None = None, *, keep_body: bool = True,
                expect: tuple[int, ...] = (200, 201, 202, 204),
                observe: Callable[[memoryview], object] | None = None) -> Reply:
        """One request on the kept-alive connection (re-opened once if the server closed it).

        `target` is a path or an absolute URL (another host gets a one-off connection: redirects).
        Raises RuntimeError when the status is not in `expect`."""
        conn = self._conn
        path = target
        if target.startswith("http://") or target.startswith("https://"):
            parts = urlsplit(target)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            if (parts.hostname, parts.port or 80) != (self._host, self._port):
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=self._timeout)
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        for attempt in (1, 2):
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt == 2:
                    raise
                conn.close()
        reply = self._read(response, keep_body=keep_body or response.status >= 300, observe=observe)
        if conn is not self._conn:
            conn.close()
        if response.status in (307, 302) and method in ("GET", "HEAD"):
            return self.request(method, response.headers["Location"], headers=headers, keep_body=keep_body,
                                expect=expect, observe=observe)
        if response.status not in expect:
            raise RuntimeError(f"{method} {target}: HTTP {response.status} {reply.body[:300]!r}")
        return reply

    def _read(self, response: http.client.HTTPResponse, *, keep_body: bool,
              observe: Callable[[memoryview], object] | None = None) -> Reply:
        """The body, kept or discarded (`observe` then sees each piece as it arrives)."""
        if keep_body:
            body = response.read()
            return Reply(response.status, response.headers, body, len(body))
        view = memoryview(self._buffer)
        received = 0
        while n := response.readinto(view):
            received += n
            if observe is not None:
                observe(view[:n])
        return Reply(response.status, response.headers, b"", received)

    # -- registry operations ------------------------------------------------------------------

    def start_upload(self, repository: str) -> str:
        reply = self.request("POST", f"/v2/{repository}/blobs/uploads/", b"", expect=(202,))
        return reply.headers["Location"]

    def push_monolithic(self, repository: str, digest: str, data: bytes | memoryview) -> None:
        """POST a session, then one PUT carrying the whole blob (Distribution 2.8 has no
        single-POST upload, so both registries get the same two requests)."""
        location = self.start_upload(repository)
        self.request("PUT", _with_digest(location, digest), data,
                     {"Content-Type": "application/octet-stream"}, expect=(201,))

    def push_chunked(self, repository: str, digest: str, data: bytes | memoryview, chunk: int) -> None:
        """POST, PATCHes of `chunk` bytes with Content-Range, then an empty PUT ?digest=."""
        location = self.start_upload(repository)
        view = memoryview(data)
        for start in range(0, len(view), chunk):
            part = view[start:start + chunk]
            reply = self.request("PATCH", location, part, {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(part) - 1}",
            }, expect=(202,))
            location = reply.headers["Location"]
        self.request("PUT", _with_digest(location, digest), b"", expect=(201,))

    def pull(self, repository: str, digest: str) -> int:
        """GETs the blob and returns the number of bytes received (discarded as they arrive)."""
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", keep_body=False).received

    def pull_verified(self, repository: str, digest: str) -> int:
        """As `pull`, hashing the bytes as they arrive and checking them against `digest` at the
        end, as real clients (containerd, skopeo) do; RuntimeError when they do not match."""
        hasher = hashlib.sha256()
        target = f"/v2/{repository}/blobs/{digest}"
        received = self.request("GET", target, keep_body=False, observe=hasher.update).received
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise RuntimeError(f"GET {target}: the body hashes to sha256:{hasher.hexdigest()}")
        return received

    def put_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str = OCI_MANIFEST) -> None:
        self.request("PUT", f"/v2/{repository}/manifests/{reference}", manifest,
                     {"Content-Type": media_type}, expect=(201,))


def aiohttp_pulls(base_url: str, repository: str, digest: str, clients: int) -> list[int]:
    """`clients` concurrent pulls of one blob, each by an aiohttp client of its own (a
    `ClientSession`: its own connections), on one event loop as an asyncio program would run
    them. Each follows the 307 a registry may answer as aiohttp does by default: a new connection
    to the redirect's host:port. Bodies are read as they arrive and counted, not kept. Returns
    the bytes each received."""
    url = f"{base_url}/v2/{repository}/blobs/{digest}"

    async def one() -> int:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status} {(await response.read())[:300]!r}")
            received = 0
            async for chunk in response.content.iter_any():
                received += len(chunk)
            return received

    async def all_of_them() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(clients))))

    return asyncio.run(all_of_them())


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def image_manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    """An OCI image manifest for a config and layers given as (digest, size)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
    }, separators=(",", ":")).encode()
