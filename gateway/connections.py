"""Connection guards of the gateway's HTTP server, in uvicorn's httptools protocol.

uvicorn bounds neither the time a client takes to send a request's head nor the connections one
client holds: a client trickling one header byte every few seconds, or opening hundreds of
connections and sending half a head on each, keeps them all open for ever. `GatewayHttpProtocol`
(the head-size limit of gateway.limits, plus these guards) closes them on time:

- idle: a connection with no request under way (just opened, or after a response) is closed
  silently after `keep_alive_timeout_seconds` (uvicorn's keep-alive timer, which uvicorn itself
  only starts after a first response);
- head: from the first byte of a request to the end of its headers a client has
  `header_timeout_seconds`; then it gets `408 Request Timeout` and the connection is closed (only
  after the response under way, when a pipelined head is the slow one);
- per client: an address already holding `max_connections_per_client` open connections gets
  `429 TOOMANYREQUESTS` at once on one more (see services/common/connections.py). Addresses in
  `trusted_proxies` are not capped: a proxy speaks for many clients, and limits them itself.

Each guard is a timer handle or a counter per connection: 500 idle connections cost the event
loop nothing until a timer fires. The limits reach the protocol on the server's config
(`GatewayServerConfig`); with `workers > 1` uvicorn builds that config itself, and each worker
process reads them from its settings, once, as it reads the app's (`gateway.main`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from gateway.errors import error_body
from gateway.limits import HeadLimitedHttpToolsProtocol
from gateway.middleware import API_VERSION_HEADER, TrustedProxies
from services.common.connections import ClientConnections, RefusedConnection, peer_address, plain_response
from services.common.errors import ErrorKind, RegistryError
from services.common.settings import GatewaySettings, load_settings


@dataclass
class ConnectionLimits:
    """The guards' settings, and the open connections per client of this process."""

    header_timeout_seconds: float
    keep_alive_timeout_seconds: float
    clients: ClientConnections = field(default_factory=lambda: ClientConnections(0))

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        proxies = TrustedProxies(settings.trusted_proxies)
        return cls(
            header_timeout_seconds=settings.header_timeout_seconds,
            keep_alive_timeout_seconds=settings.keep_alive_timeout_seconds,
            clients=ClientConnections(settings.max_connections_per_client, exempt=proxies.__contains__),
        )


class GatewayServerConfig(uvicorn.Config):
    """uvicorn's Config carrying the gateway's `ConnectionLimits` to its protocol instances."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.connection_limits: ConnectionLimits | None = limits


def limits_of(config: uvicorn.Config) -> ConnectionLimits:
    """The server's ConnectionLimits: carried by a GatewayServerConfig, else (a uvicorn worker
    process, whose config uvicorn built) read from the settings once and kept on the config."""
    limits: ConnectionLimits | None = getattr(config, "connection_limits", None)
    if limits is None:
        limits = ConnectionLimits.from_settings(load_settings().gateway)
        config.connection_limits = limits  # type: ignore[attr-defined]
    return limits


def too_many_connections_response(limit: int) -> bytes:
    """The whole 429 answer to a connection over its address's cap (it closes the connection)."""
    kind = ErrorKind.TOOMANYREQUESTS
    body = error_body(
        RegistryError(
            kind,
            f"this client address already holds {limit} open connections to the registry; "
            "close some (or reuse them) and retry",
            {"max_connections_per_client": limit},
        )
    )
    name, value = API_VERSION_HEADER
    return b"".join(
        [
            f"HTTP/1.1 {kind.http_status} Too Many Requests\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            name + b": " + value + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def head_timeout_response(seconds: float) -> bytes:
    return plain_response(
        408, "Request Timeout", f"the request line and headers did not arrive within {seconds:g} s\n"
    )


class GatewayHttpProtocol(HeadLimitedHttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits_of(config)
        self._address: str | None = None
        self._counted = False
        self._refusal: RefusedConnection | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self._limits
        self._address = peer_address(transport)
        if not limits.clients.admit(self._address):
            # Never handed to uvicorn: no request of it reaches the app.
            self._refusal = RefusedConnection(
                transport,
                too_many_connections_response(limits.clients.limit),
                linger_seconds=limits.keep_alive_timeout_seconds,
                loop=self.loop,
            )
            return
        self._counted = True
        super().connection_made(transport)
        # uvicorn starts its keep-alive timer only after a response; a connection that never
        # sends a byte is idle from the start. The first byte cancels it (uvicorn's data_received).
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refusal is not None:
            self._refusal.connection_lost()
            return
        self._stop_head_timer()
        if self._counted:
            self._counted = False
            self._limits.clients.release(self._address)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._refusal is not None:
            return self._refusal.eof_received()
        return super().eof_received()  # type: ignore[func-returns-value]

    def pause_writing(self) -> None:
        if self._refusal is None:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self._refusal is None:
            super().resume_writing()

    # -- requests ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            self._refusal.data_received(data)
            return
        limits = self._limits
        if (
            limits.header_timeout_seconds > 0
            and self._in_head
            and self._head_timer is None
            and not self.transport.is_closing()
        ):
            # The first byte of a request head: the whole head must follow in time.
            self._head_timer = self.loop.call_later(limits.header_timeout_seconds, self._head_timed_out)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        self.flow.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(head_timeout_response(self._limits.header_timeout_seconds))
            self.transport.close()
        else:
            # A pipelined head is the slow one: finish the response under way, then close.
            self.cycle.keep_alive = False
