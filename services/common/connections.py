"""Guards for the HTTP servers that face clients (the gateway, the blob plane's direct-read server):
a cap on the connections one client address holds open, and a clean way to turn one away.

Each server enforces its timeouts (request head, idle keep-alive) in its own protocol class
(gateway/connections.py, services/blob/direct_reads.py); what they share lives here:
- `ClientConnections` counts open connections per client address, in one process, and admits a
  new one only while its address is under the cap;
- `RefusedConnection` answers a connection over the cap at once (a complete response with
  `Connection: close`), half-closes it, and discards whatever the client still sends until the
  client closes or `linger_seconds` pass. Closing with an unread request in the socket would reset
  the connection, and a reset can destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ClientConnections:
    """Open connections per client address (one process), capped at `limit` (0: no cap).

    `exempt(address)` True: never capped (a trusted proxy speaks for many clients). Connections
    without an address (unix sockets) are never capped either.
    """

    def __init__(self, limit: int, exempt: Callable[[str], bool] = lambda _address: False) -> None:
        self.limit = limit
        self._exempt = exempt
        self._open: dict[str, int] = {}

    def admit(self, address: str | None) -> bool:
        """Counts a new connection from `address` and returns True, or returns False (and counts
        nothing) when the address already holds `limit` connections."""
        if self.limit <= 0 or address is None or self._exempt(address):
            return True
        held = self._open.get(address, 0)
        if held >= self.limit:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str | None) -> None:
        """Forgets one connection `admit` counted for `address` (a no-op for uncounted ones)."""
        if address is None:
            return
        held = self._open.get(address, 0)
        if held <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] = held - 1

    def held(self, address: str) -> int:
        return self._open.get(address, 0)


def peer_address(transport: asyncio.BaseTransport) -> str | None:
    """The client's IP address, or None for a peer without one (a unix socket)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


class RefusedConnection:
    """See the module docstring. The owning protocol forwards `data_received`, `eof_received` and
    `connection_lost` here and does nothing else with the connection."""

    def __init__(
        self,
        transport: asyncio.Transport,
        response: bytes,
        *,
        linger_seconds: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer: asyncio.TimerHandle | None = loop.call_later(linger_seconds, transport.close)

    def data_received(self, data: bytes) -> None:
        """Discarded: the answer is already on its way."""

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def plain_response(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 response with a short text body that closes the connection."""
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body
