"""Limits against abuse that live outside the body code (gateway.bodies has the body ones).

The request-head size limit, enforced where the bytes arrive: in uvicorn's httptools protocol.

httptools (llhttp) buffers a request line and headers of any size before the app sees them, so a
limit checked in ASGI middleware would come after the memory is spent. `HeadLimitedHttpToolsProtocol`
counts the bytes received while a request's head is incomplete and answers
`431 Request Header Fields Too Large` (ErrorKind.HEADERS_TOO_LARGE, with the OCI error body) as
soon as they exceed the limit, then closes the connection; a head that completes within one read
is measured exactly (request target + header lines) before the app is called.

The limit travels in uvicorn's `h11_max_incomplete_event_size` (the same meaning for the h11
protocol: bytes of an incomplete head), so the class stays importable by name for `workers > 1`.
Counting is per read: a head may overshoot the limit by at most one read (≤ 64 KiB) before the 431.

Bytes that are not HTTP at all still get uvicorn's `400`, but are logged at debug level, once per
connection, instead of uvicorn's warning: skopeo and podman with TLS verification off first try a
TLS handshake on the plain-HTTP port, on every call, and that is no news to an operator.
"""

from __future__ import annotations

import logging
from typing import Any

import httptools
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.auth.gate import PRINCIPAL_KEY
from gateway.errors import error_body
from gateway.middleware import API_VERSION_HEADER
from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.gateway.http")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
# A TLS record of type handshake (a ClientHello) starts with these bytes.
_TLS_HANDSHAKE = b"\x16\x03"
# Per header line, ": " and CRLF besides the name and value.
_LINE_OVERHEAD = 4


def head_too_large_response(limit: int) -> bytes:
    """The whole HTTP/1.1 431 response (it closes the connection)."""
    kind = ErrorKind.HEADERS_TOO_LARGE
    body = error_body(
        RegistryError(
            kind,
            f"the request line and headers exceed {limit} bytes; send fewer or shorter headers",
            {"limit": limit},
        )
    )
    name, value = API_VERSION_HEADER
    return b"".join(
        [
            f"HTTP/1.1 {kind.http_status} Request Header Fields Too Large\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            name + b": " + value + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on request-head bytes (see the module docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = True
        self._head_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        self._parse(data)
        if not self._refused and self._in_head and self._head_bytes > self._max_head:
            self._refuse()
        if self._refused and not self.transport.is_closing():
            self._answer_431()

    def _parse(self, data: bytes) -> None:
        """uvicorn's `data_received`, except for the log line of a request that is not HTTP."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._log_not_http(data, error)
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _log_not_http(self, data: bytes, error: Exception) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if data.startswith(_TLS_HANDSHAKE):
            log.debug("%s started a TLS handshake on this plain-HTTP port (a client probing for HTTPS); "
                      "answered 400", client)
        else:
            log.debug("%s sent bytes that are not an HTTP/1.1 request (%s); answered 400", client, error)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + _LINE_OVERHEAD for name, value in self.headers)
        if size > self._max_head:
            self._refuse()
            return  # no ASGI task: the app never sees this request
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head = True  # what follows is the next request's head

    def _refuse(self) -> None:
        self._refused = True
        self.flow.pause_reading()

    def _answer_431(self) -> None:
        # A response of an earlier pipelined request may still be in flight; interleaving a 431
        # with it would corrupt both, so only an idle connection gets one.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(head_too_large_response(self._max_head))
        self.transport.close()



def upload_owner(scope: Scope) -> str:
    """Whose budget of open upload sessions (`blob.max_upload_sessions_per_owner`) a new session
    counts against: `account:<name>` when auth identified the caller, else `ip:<peer address>`.

    The peer is the TCP peer: behind a proxy, anonymous clients share the proxy's budget (turn
    auth on, or raise the limit, when many anonymous clients push through one proxy).
    """
    principal = scope.get(PRINCIPAL_KEY)
    account = getattr(principal, "account", "")
    if account:
        return f"account:{account}"
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"
