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
If-Range and HEAD per RFC 9110.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from aiohttp import web

from services.blob.backends import keys
from services.common.metrics import parse_listen
from services.common.settings import DirectReadSettings

log = logging.getLogger("lading.blob.direct")


class LocalFiles(Protocol):
    """A backend whose objects are local files (the filesystem backend)."""

    def local_path(self, key: str) -> Path:
        """Where `key` is (or would be) stored. Raises ValueError for an invalid key."""
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
        try:
            until = int(expires)
        except ValueError:
            return "the URL has no valid expiry"
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


def _refused(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=f"{reason}; ask the registry for the blob again\n")


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
        site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        scheme = "https" if context is not None else "http"
        self.urls.base_url = self.settings.public_url.rstrip("/") or f"{scheme}://:{self.port}"
        log.info("direct blob reads on %s://%s:%d (URLs: %s)", scheme, host, self.port, self.urls.base_url)
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
