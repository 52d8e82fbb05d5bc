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

A small HTTP/1.1 server of its own serves them (httptools parses, as under the gateway): GET and
HEAD of signed blob URLs, answered with the file through `loop.sendfile` (sendfile(2), or reads
and writes under TLS), single byte ranges (`Range`, `If-Range`; another unit or an invalid value are ignored, as the
gateway ignores them; several ranges, which the gateway answers itself in parts and so never
redirects here, are ignored too) and the conditional requests of RFC
9110 (`If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`) against the blob's
ETag (its digest: the same on every replica) and modification time; other methods get 405.
A blob still being fetched from a source (the pull-through cache: services/blob/fetch.py, with
`fetches` on) is served as it lands: its URL is the blob's own, and a GET that finds no file yet
but a fetch of that digest under way (services/blob/fetch_progress.py) gets `200` with the size
the source announced and the bytes of the fetch's file as they are written, the last ones only
once the blob is verified and committed; when the fetch fails, the connection is cut short of
the Content-Length, so a client never holds a complete-looking wrong body. Range and conditional
headers are not applied to such a GET (the whole blob, 200).

On a backend without local files (S3), the server serves fetches only (`files` None): a fetch's
bytes come from its spool file (services/blob/fetch_spool.py), the end released once they hash to
the digest, and a GET that finds no fetch under way (it ended, or the URL is of a stored blob) is
answered `307` to storage's own presigned URL (`stored`), where reads of stored blobs go anyway.
Such a server answers on the event loop (it opens no file by name).

It replaced aiohttp, whose import alone cost the blob plane ~0.2 s of every start and ~9 MiB
resident. Its connections are guarded as the gateway's are (gateway/connections.py): a head that
takes longer than `header_timeout_seconds` from its first byte gets 408 and the connection is
closed; a connection with no request under way (just opened, or after a response, or whose head is
still arriving) is closed after `keep_alive_timeout_seconds`; and the connections per client
address are capped (services/common/connections.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httptools

from services.blob.backends import keys
from services.blob.fetch_progress import FetchesInProgress, FetchProgress, Outcome
from services.common.connections import ClientConnections, RefusedConnection, peer_address, plain_response
from services.common.metrics import parse_listen
from services.common.ranges import Unsatisfiable, etag_matches, parse_range
from services.common.settings import DirectReadSettings

if TYPE_CHECKING:
    from services.blob.core import PresignsReads

log = logging.getLogger("lading.blob.direct")

_EXPIRY = re.compile(r"[0-9]{1,12}")
# A reader of a fetch under way looks at its file again at least this often (besides each time
# the fetch reports more bytes), so the bytes written last go out before the commit.
_TAIL_POLL_SECONDS = 0.02


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



_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 307: "Temporary Redirect",
            400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 412: "Precondition Failed",
            416: "Range Not Satisfiable", 500: "Internal Server Error"}


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool


@dataclass(frozen=True)
class _Answer:
    """A response's status, headers and what follows them: a text body, or a range of an open
    file (which the sender closes)."""

    status: int
    headers: dict[str, str]
    text: bytes = b""
    # With `fetch`: the reader's own handle on the fetch's file, if it has one from the start.
    file: BinaryIO | None = None
    offset: int = 0
    count: int = 0
    # A fetch under way whose bytes follow (`count` of them, from `blob_path` once committed).
    fetch: FetchProgress | None = None
    blob_path: Path | None = None


def _refused(status: int, reason: str) -> _Answer:
    return _Answer(status, {"Content-Type": "text/plain; charset=utf-8"},
                   f"{reason}; ask the registry for the blob again\n".encode())


def _http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def _date_of(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class _Connection(asyncio.Protocol):
    """One client connection: parses requests (httptools), answers them in order, and guards the
    connection (see the module docstring)."""

    def __init__(self, server: DirectReadServer) -> None:
        self._server = server
        self._settings = server.settings
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None
        self._counted = False
        self._refusal: RefusedConnection | None = None
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._requests: deque[_Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing = False

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._address = peer_address(transport)
        clients = self._server.clients
        if not clients.admit(self._address):
            self._refusal = RefusedConnection(
                transport,  # type: ignore[arg-type]
                plain_response(429, "Too Many Requests", f"this client address already holds {clients.limit} "
                               "open connections; close some and retry\n"),
                linger_seconds=self._settings.keep_alive_timeout_seconds,
                loop=self._loop,
            )
            return
        self._counted = True
        self._server.connections.add(self)
        self._start_idle_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refusal is not None:
            self._refusal.connection_lost()
            return
        self._closing = True
        self._cancel_timers()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        if self._counted:
            self._counted = False
            self._server.clients.release(self._address)
        self._server.connections.discard(self)

    def eof_received(self) -> bool | None:
        if self._refusal is not None:
            return self._refusal.eof_received()
        if self._worker is None or self._worker.done():
            self.close()
            return False
        if self._transport is not None and self._transport.get_extra_info("sslcontext") is not None:
            # Over TLS asyncio closes the transport whatever this returns (and warns on True).
            return False
        return True  # half-closed: answer what was asked, then close

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            self._refusal.data_received(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_and_close(400, "upgrades are not served here\n")
        except httptools.HttpParserError:
            self._answer_and_close(400, "malformed request\n")

    def close(self) -> None:
        self._closing = True
        self._cancel_timers()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = {}
        if self._settings.header_timeout_seconds > 0 and self._head_timer is None:
            # The first byte of a request head: the whole head must follow in time.
            self._head_timer = self._loop.call_later(self._settings.header_timeout_seconds, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._cancel_idle_timer()
        request = _Request(self._parser.get_method().decode("ascii", "replace"), self._url.decode("latin-1"),
                           self._headers, self._parser.should_keep_alive())
        self._requests.append(request)
        if self._transport is not None:
            self._transport.pause_reading()  # one request at a time; the rest waits in the socket
        if self._worker is None or self._worker.done():
            self._worker = self._loop.create_task(self._answer_all())

    # -- answering ------------------------------------------------------------------------------

    async def _answer_all(self) -> None:
        transport = self._transport
        assert transport is not None
        while self._requests and not self._closing:
            request = self._requests.popleft()
            try:
                answer = await self._server.respond(request)
            except Exception:  # noqa: BLE001 - one bad request must not take the server down
                log.exception("direct read of %s failed", request.target)
                answer = _Answer(500, {"Content-Type": "text/plain; charset=utf-8"}, b"internal error\n")
            keep_alive = request.keep_alive and answer.status < 500
            try:
                await self._send(transport, request, answer, keep_alive)
            except (ConnectionError, OSError):
                self.close()
                return
            if not keep_alive:
                self.close()
                return
        if not self._closing:
            self._start_idle_timer()
            transport.resume_reading()

    async def _send(self, transport: asyncio.Transport, request: _Request, answer: _Answer, keep_alive: bool) -> None:
        try:
            await self._send_open(transport, request, answer, keep_alive)
        finally:
            if answer.file is not None:
                _close_off_loop(answer.file)

    async def _send_open(self, transport: asyncio.Transport, request: _Request, answer: _Answer,
                         keep_alive: bool) -> None:
        length = answer.count if answer.file is not None or answer.fetch is not None else len(answer.text)
        head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
                *(f"{name}: {value}" for name, value in answer.headers.items()),
                f"Content-Length: {length}", f"Date: {_http_date(time.time())}"]
        if not keep_alive:
            head.append("Connection: close")
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if request.method == "HEAD" or answer.status == 304:
            return
        if answer.fetch is not None:
            await self._send_fetched(transport, answer.fetch, answer.blob_path, answer.file)
            return
        if answer.file is None:
            transport.write(answer.text)
            return
        if answer.count:
            await self._loop.sendfile(transport, answer.file, answer.offset, answer.count)

    async def _send_fetched(self, transport: asyncio.Transport, fetch: FetchProgress, blob_path: Path | None,
                            opened: BinaryIO | None) -> None:
        """Sends the bytes of a fetch under way as they land (from `opened`, else the file at
        `fetch.path`), the last `fetch.hold` only once it committed or was verified; cuts the
        connection (ConnectionAbortedError) when it failed before."""
        sent, size = 0, fetch.size
        file = opened
        try:
            while sent < size:
                changed = fetch.changed()
                released = fetch.released
                if not released and fetch.outcome is Outcome.FAILED:
                    transport.abort()
                    raise ConnectionAbortedError(f"the fetch of {fetch.digest} failed")
                if file is None:
                    # By name: in a thread, as `answer` opens stored blobs.
                    file = await asyncio.to_thread(_open_fetched, fetch.path, blob_path,
                                                   committed=fetch.outcome is Outcome.COMMITTED)
                if file is not None:
                    limit = size if released else size - fetch.hold
                    available = min(os.fstat(file.fileno()).st_size, limit)
                    if available > sent:
                        await self._loop.sendfile(transport, file, sent, available - sent)
                        sent = available
                        continue
                if released:
                    # Committed or verified with fewer bytes than announced (cannot happen: both
                    # check the size); never leave the client waiting.
                    transport.abort()
                    raise ConnectionAbortedError(f"the fetched {fetch.digest} is shorter than announced")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TAIL_POLL_SECONDS):
                        await changed.wait()
        finally:
            if file is not None and file is not opened:
                _close_off_loop(file)  # `opened` is the answer's: the sender closes it

    def _answer_and_close(self, status: int, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(plain_response(status, _REASONS.get(status, "Error"), text))
        self.close()

    # -- guards ---------------------------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self._loop.call_later(self._settings.keep_alive_timeout_seconds, self.close)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._worker is not None and not self._worker.done():
            return  # the slow head waits behind a response; the idle timer covers it after
        seconds = self._settings.header_timeout_seconds
        self._answer_and_close(408, f"the request line and headers did not arrive within {seconds:g} s\n")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_idle_timer()


class DirectReadServer:
    """The HTTP server behind `SignedBlobUrls`: GET and HEAD of signed blob URLs, nothing else.
    `files`: where the blobs' files are; None on a backend without local files (S3), where the
    server serves fetches only and sends other GETs to `stored`'s presigned URLs."""

    def __init__(self, settings: DirectReadSettings, urls: SignedBlobUrls, files: LocalFiles | None, *,
                 stored: PresignsReads | None = None) -> None:
        if files is None and stored is None:
            raise ValueError("a direct-read server without local files needs storage that presigns reads")
        self.settings = settings
        self.urls = urls
        self.files = files
        self.stored = stored
        # Fetches under way that GETs of their blob's URL follow (services/blob/fetch_progress.py).
        self.fetches = FetchesInProgress()
        self.port = 0
        # Per process: every connection counts against its client's cap.
        self.clients = ClientConnections(settings.max_connections_per_client)
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> DirectReadServer:
        host, port = parse_listen(self.settings.listen)
        context = _ssl_context(self.settings)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=context,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if context is not None else "http"
        public = self.settings.public_url.rstrip("/")
        self.urls.base_url = public or f"{scheme}://:{self.port}"
        log.info("direct blob reads on %s (URLs: %s)", _url(scheme, host, self.port),
                 public or f"the host each client used for the registry, port {self.port}")
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def respond(self, request: _Request) -> _Answer:
        """What to answer `request` (see `answer`, and the module docstring without `files`)."""
        if self.files is not None:
            # In a thread: it stats and opens the blob's file.
            return await asyncio.to_thread(self.answer, request)
        checked = self._checked(request)
        if isinstance(checked, _Answer):
            return checked
        key, digest = checked
        fetch = self.fetches.get(digest)
        # On the event loop, as the fetch closes its file: a fetch found here still holds it.
        file = fetch.reopen() if fetch is not None else None
        if fetch is not None and file is not None:
            return _Answer(200, _fetch_headers(digest), count=fetch.size, fetch=fetch, file=file)
        assert self.stored is not None
        # Over (or never one here): storage has the blob if anyone does, and says so itself.
        url = await self.stored.presigned_get_url(key)
        return _Answer(307, {"Location": url, "Docker-Content-Digest": digest})

    def _checked(self, request: _Request) -> tuple[str, str] | _Answer:
        """(blob key, digest) of a genuine signed GET or HEAD, else the refusal."""
        if request.method not in ("GET", "HEAD"):
            answer = _refused(405, f"{request.method} is not served here, only GET and HEAD")
            answer.headers["Allow"] = "GET, HEAD"
            return answer
        parts = urlsplit(request.target)
        if not parts.path.startswith("/blobs/"):
            return _refused(404, "not a blob URL")
        key = "blobs/" + unquote(parts.path[len("/blobs/"):])
        digest = keys.digest_of_blob_key(key)
        if digest is None:
            return _refused(404, "not a blob URL")
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        why = self.urls.verify(key, query.get("expires", ""), query.get("signature", ""))
        if why is not None:
            return _refused(403, why)
        return key, str(digest)

    def answer(self, request: _Request) -> _Answer:
        """What to answer `request` from local files; opens the blob's file when its bytes are to
        be sent (blocking: call it in a thread)."""
        assert self.files is not None
        checked = self._checked(request)
        if isinstance(checked, _Answer):
            return checked
        key, digest = checked
        try:
            file = open(self.files.local_path(key), "rb")  # noqa: SIM115 - closed by the sender
        except (OSError, ValueError):
            fetch = self.fetches.get(str(digest))
            if fetch is not None:
                # Still arriving from a source: sent as it lands.
                return _Answer(200, _fetch_headers(digest), count=fetch.size, fetch=fetch,
                               blob_path=self.files.local_path(key))
            # A blob deleted by garbage collection since the URL was signed.
            return _refused(404, "the blob is not stored here (any more)")
        try:
            stat = os.fstat(file.fileno())
            answer = _file_answer(request.headers, file, stat.st_size, stat.st_mtime, digest)
        except BaseException:
            file.close()
            raise
        if answer.file is None:
            file.close()
        return answer


def _close_off_loop(file: BinaryIO) -> None:
    """Closes a file this server sent, in a worker thread. A reader's handle on a fetch's spool
    file (services/blob/fetch_spool.py, unlinked from the start) is often the file's last
    descriptor once the fetch is over, and closing that frees the file's blocks: on ext4 ~12 ms
    per 64 MiB, ~0.4 s for 2 GiB, far too long for the event loop. (A blob's own file can be in
    the same state when garbage collection deleted it while it was sent.)"""
    try:
        asyncio.get_running_loop().run_in_executor(None, _close_quietly, file)
    except RuntimeError:  # no loop or no pool any more (shutting down): closed here then
        _close_quietly(file)


def _close_quietly(file: BinaryIO) -> None:
    with contextlib.suppress(OSError):
        file.close()


def _fetch_headers(digest: str) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest, "ETag": f'"{digest}"'}


def _open_fetched(staged: Path | None, blob: Path | None, *, committed: bool) -> BinaryIO | None:
    """The file of a fetch under way: its session's while it runs (None before its first bytes),
    the blob's once committed (the session's file was renamed there)."""
    for path in (staged, blob) if committed else (staged,):
        if path is None:
            continue
        try:
            return open(path, "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            continue
    return None


def _file_answer(headers: dict[str, str], file: BinaryIO, size: int, mtime: float, digest: str) -> _Answer:
    """The answer for a file under RFC 9110's conditional and range rules (the order of 13.2.2)."""
    etag = f'"{digest}"'
    modified = int(mtime)
    base = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest, "ETag": etag,
            "Last-Modified": _http_date(modified), "Accept-Ranges": "bytes"}
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False):
            return _Answer(412, {"ETag": etag})
    else:
        since = _date_of(headers.get("if-unmodified-since"))
        if since is not None and modified > since:
            return _Answer(412, {"ETag": etag})
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, weak=True):
            return _Answer(304, {"ETag": etag, "Last-Modified": base["Last-Modified"]})
    else:
        since = _date_of(headers.get("if-modified-since"))
        if since is not None and modified <= since:
            return _Answer(304, {"ETag": etag, "Last-Modified": base["Last-Modified"]})
    # Ranges the gateway ignores are ignored here too (one parser: services/common/ranges.py),
    # since the gateway redirected the client here before it saw the file.
    wanted = headers.get("range")
    byte_range = parse_range(wanted) if wanted is not None else None
    if byte_range is not None and _if_range_holds(headers.get("if-range"), etag, modified):
        try:
            first, last = byte_range.within(size)
        except Unsatisfiable:
            return _Answer(416, {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        return _Answer(206, {**base, "Content-Range": f"bytes {first}-{last}/{size}"},
                       file=file, offset=first, count=last - first + 1)
    return _Answer(200, base, file=file, offset=0, count=size)


def _if_range_holds(if_range: str | None, etag: str, modified: int) -> bool:
    """Whether a Range applies: no If-Range, or one naming this blob (its ETag, or a date no
    earlier than its modification)."""
    if if_range is None:
        return True
    if if_range.strip().startswith(('"', "W/")):
        return if_range.strip() == etag
    since = _date_of(if_range)
    return since is not None and modified <= since
