"""Direct reads: blob GETs answered by the blob plane from its own files, through signed URLs.

The gateway still decides who may read what (the blob is linked to the repository, the Range
fits); then, instead of streaming the bytes through gRPC and Python, it answers `307` with a URL
of this server, which sends the file with sendfile(2). It is the filesystem's counterpart of an
S3 presigned URL: `<base>/<blob key>?expires=<unix seconds>&signature=<hex>`, the signature an
HMAC-SHA256 of the key and expiry under `blob.direct_reads.secret`, so the URL names one blob,
for a limited time, and needs no registry credentials.

`<base>` is `public_url` when set. Otherwise it carries no host (`http://:PORT`): the blob plane
cannot know the name a client used, so the gateway puts in the host the client addressed (see
`gateway/resources/blobs.py`).

aiohttp serves the requests: its FileResponse sends files with sendfile and answers Range,
If-Range and HEAD per RFC 9110. Its connections are guarded as the gateway's are
(gateway/connections.py): `GuardedRequestHandler` answers a head that takes longer than
`header_timeout_seconds` from its first byte with 408 and closes the connection, and caps the
connections per client address (services/common/connections.py); aiohttp's own keep-alive timer,
set to `keep_alive_timeout_seconds`, closes connections without a request under way, and also one
whose head is still arriving when it runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from services.blob.backends import keys
from services.common.connections import ClientConnections, RefusedConnection, peer_address, plain_response
from services.common.metrics import parse_listen
from services.common.settings import DirectReadSettings

log = logging.getLogger("lading.blob.direct")

_EXPIRY = re.compile(r"[0-9]{1,12}")


class LocalFiles(Protocol):
    """A backend whose objects are local files (the filesystem backend)."""

    def local_path(self, key: str) -> Path:
        """Where `key` is (or would be) stored. Raises InvalidKey for an invalid key."""
        ...


class SignedBlobUrls:
    """Signs and checks direct-read URLs (implements `core.PresignsReads`)."""

    def __init__(
        self, secret: bytes, lifetime_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not secret:
            raise ValueError("a signing secret is required")
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self.base_url = ""

    def _signature(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    async def presigned_get_url(self, key: str, expires: float | None = None) -> str:
        if not self.base_url:
            raise RuntimeError("the direct-read server has not started")
        lifetime = self.lifetime_seconds if expires is None else expires
        until = int(self._clock() + lifetime)
        return f"{self.base_url}/{quote(key)}?expires={until}&signature={self._signature(key, until)}"

    def verify(self, key: str, expires: str, signature: str) -> str | None:
        """None when the URL is genuine and unexpired; else why not (for the client)."""
        if not _EXPIRY.fullmatch(expires):
            return "the URL has no valid expiry"
        until = int(expires)
        if not hmac.compare_digest(self._signature(key, until), signature):
            return "the URL's signature does not match (was it altered, or signed by another registry?)"
        if self._clock() > until:
            return "the URL has expired"
        return None


def signing_secret(settings: DirectReadSettings) -> bytes:
    configured = settings.secret.get_secret_value()
    if configured:
        return configured.encode()
    log.info("blob.direct_reads.secret is empty: signing with a random key (valid for this process only)")
    return secrets.token_bytes(32)


def _ssl_context(settings: DirectReadSettings) -> ssl.SSLContext | None:
    if settings.cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _refused(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=f"{reason}; ask the registry for the blob again\n")


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with the header timeout and the per-client cap (see the module
    docstring). Whether a head is awaited is read from aiohttp's own waiter for the next request,
    the state its keep-alive timer checks too."""

    def __init__(self, manager: web.Server, *, clients: ClientConnections, settings: DirectReadSettings,
                 **options: Any) -> None:
        super().__init__(manager, keepalive_timeout=settings.keep_alive_timeout_seconds, **options)
        self._clients = clients
        self._header_timeout = settings.header_timeout_seconds
        self._linger = settings.keep_alive_timeout_seconds
        self._address: str | None = None
        self._counted = False
        self._refusal: RefusedConnection | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._address = peer_address(transport)
        if not self._clients.admit(self._address):
            limit = self._clients.limit
            self._refusal = RefusedConnection(
                transport,  # type: ignore[arg-type]
                plain_response(429, "Too Many Requests",
                               f"this client address already holds {limit} open connections; close some and retry\n"),
                linger_seconds=self._linger,
                loop=asyncio.get_running_loop(),
            )
            return
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refusal is not None:
            self._refusal.connection_lost()
            return
        self._stop_head_timer()
        if self._counted:
            self._counted = False
            self._clients.release(self._address)
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refusal is not None:
            self._refusal.eof_received()
            return
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            self._refusal.data_received(data)
            return
        if self._header_timeout > 0 and self._head_timer is None and self._awaiting_request():
            # The first byte of a request head: the whole head must follow in time.
            self._head_timer = asyncio.get_running_loop().call_later(self._header_timeout, self._head_timed_out)
        super().data_received(data)
        if not self._awaiting_request():
            self._stop_head_timer()

    def _awaiting_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self._awaiting_request():
            return
        transport.write(plain_response(
            408, "Request Timeout",
            f"the request line and headers did not arrive within {self._header_timeout:g} s\n",
        ))
        self.force_close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections get `GuardedRequestHandler`s (aiohttp's TCPSite, otherwise)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, settings: DirectReadSettings,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._settings = settings
        # Per process: every connection of this site counts against its client's cap.
        self._clients = ClientConnections(settings.max_connections_per_client)

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def handler() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, clients=self._clients, settings=self._settings, loop=loop,
                                         access_log=None)

        self._server = await loop.create_server(
            handler, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog, reuse_address=True
        )


class DirectReadServer:
    """The HTTP server behind `SignedBlobUrls`: GET and HEAD of signed blob URLs, nothing else."""

    def __init__(self, settings: DirectReadSettings, urls: SignedBlobUrls, files: LocalFiles) -> None:
        self.settings = settings
        self.urls = urls
        self.files = files
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> DirectReadServer:
        app = web.Application()
        app.router.add_get("/blobs/{path:.+}", self._get)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = parse_listen(self.settings.listen)
        context = _ssl_context(self.settings)
        site = GuardedSite(runner, host, port, settings=self.settings, ssl_context=context)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        scheme = "https" if context is not None else "http"
        public = self.settings.public_url.rstrip("/")
        self.urls.base_url = public or f"{scheme}://:{self.port}"
        log.info("direct blob reads on %s (URLs: %s)", _url(scheme, host, self.port),
                 public or f"the host each client used for the registry, port {self.port}")
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get(self, request: web.Request) -> web.StreamResponse:
        key = "blobs/" + request.match_info["path"]
        digest = keys.digest_of_blob_key(key)
        if digest is None:
            return _refused(404, "not a blob URL")
        query = request.rel_url.query
        why = self.urls.verify(key, query.get("expires", ""), query.get("signature", ""))
        if why is not None:
            return _refused(403, why)
        # A blob deleted by garbage collection since the URL was signed: FileResponse answers 404.
        path = self.files.local_path(key)
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": str(digest)}
        return web.FileResponse(path, headers=headers)
