"""Blob bodies from an upstream registry, read with urllib3 in worker threads.

Every other upstream call (manifests, tags, the token endpoint) goes through httpx on the event
loop (services/common/upstream.py). Blob bodies do not: httpx's read path (anyio's stream, h11's
receive buffer, httpcore) copies each read two or three times in Python on the event loop, which
cost the blob plane ~0.15 s of CPU per 64 MiB fetched; urllib3's blocking 1 MiB reads run in a
thread, release the GIL while they wait and copy once (measured in docs/benchmarks.md).

Same behaviour as the httpx client: redirects are followed (a CDN for blobs), and urllib3 drops
`Authorization` on a redirect to another host; the CA bundle, the timeout (to connect, and between
two reads) and the `HTTP(S)_PROXY` / `NO_PROXY` environment apply; nothing is retried here (the
client's pull is). A body shorter than its Content-Length raises (urllib3 enforces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Bytes per read (a 64 MiB body is 64 reads; each one crosses to the event loop unless the chunks
# are fed to their consumer in the reading thread: services/common/thread_chunks.py).
READ_BYTES = 1024 * 1024
_MAX_REDIRECTS = 5


class BodyError(Exception):
    """The request failed or its body broke off; the message names what (never a header)."""


class UpstreamBodies:
    """GETs of blob bodies from one registry: at most `concurrency` at once (one thread each)."""

    def __init__(self, *, ca_file: Path | None, timeout_seconds: float, concurrency: int,
                 user_agent: str) -> None:
        import urllib3  # with the plane's upstreams only (the minio SDK depends on it too)

        self._urllib3 = urllib3
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
        self._options: dict[str, Any] = {
            "maxsize": concurrency,
            "ssl_context": context,
            "timeout": urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
            "retries": urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=_MAX_REDIRECTS,
                                     raise_on_redirect=True),
            "headers": {"user-agent": user_agent},
        }
        self._direct = urllib3.PoolManager(**self._options)
        self._proxied: dict[str, Any] = {}
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="lading-upstream-body")

    def _manager(self, url: str) -> Any:
        """The connection pool for `url`: through the environment's proxy for its scheme, unless
        NO_PROXY exempts its host (what httpx does with trust_env)."""
        parts = urlsplit(url)
        proxy = urllib.request.getproxies_environment().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or ""):
            return self._direct
        manager = self._proxied.get(proxy)
        if manager is None:
            manager = self._proxied[proxy] = self._urllib3.ProxyManager(proxy, **self._options)
        return manager

    async def open(self, url: str, headers: dict[str, str]) -> Any:
        """The response (a urllib3 HTTPResponse) to GET `url`, its body not read yet; whatever its
        status. BodyError when no answer came."""
        return await self._run(self._open, url, headers)

    def _open(self, url: str, headers: dict[str, str]) -> Any:
        return self._manager(url).request("GET", url, headers=headers, preload_content=False,
                                          decode_content=True)

    def read_blocking(self, response: Any) -> bytes:
        """The body's next bytes (b"" at its end), read in the calling thread: one of this
        object's (`run`). BodyError when it broke off."""
        try:
            return response.read(READ_BYTES)
        except (self._urllib3.exceptions.HTTPError, OSError) as error:
            raise BodyError(_described(error)) from None

    async def run(self, call: Any, *args: Any) -> Any:
        """`call(*args)` in one of this object's threads (at most `concurrency` run at once)."""
        return await asyncio.wrap_future(self._threads.submit(call, *args))

    def close(self, response: Any, *, complete: bool) -> None:
        """Ends `response`: its connection goes back to the pool when the body was read to its end,
        and is closed otherwise (a connection with unread bytes cannot carry another request). A
        read still running in a thread (its reader went away) is woken: closing a socket alone
        would leave it blocked until the read timeout."""
        if complete:
            response.release_conn()
            return
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        response.close()

    async def _run(self, call: Any, *args: Any) -> Any:
        future = self._threads.submit(call, *args)
        try:
            return await asyncio.wrap_future(future)
        except (self._urllib3.exceptions.HTTPError, OSError) as error:
            raise BodyError(_described(error)) from None

    def shutdown(self) -> None:
        self._direct.clear()
        for manager in self._proxied.values():
            manager.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _described(error: BaseException) -> str:
    # urllib3's texts name the host and URL path at most (never request headers); the innermost
    # reason is the useful part (connection refused, read timed out, incomplete read).
    reason = getattr(error, "reason", None)
    text = f"{type(error).__name__}: {reason if reason is not None else error}"
    return text[:200]
