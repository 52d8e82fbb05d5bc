"""Raw asyncio connections for tests of the servers' connection guards (half-sent heads, idle
connections, per-address caps).

Timers never fire early, so "still open before the timeout" holds under any load; "closed after
it" is polled with a deadline (the timeout plus a margin), never timed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

# A safety net for a hung test, not a timing assertion.
MARGIN = 10.0


async def read_until_closed(reader: asyncio.StreamReader, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (fails past `deadline`)."""
    received = b""
    while True:
        try:
            piece = await asyncio.wait_for(reader.read(65536), max(deadline - time.monotonic(), 0.01))
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the connection was still open at the deadline; received {received!r}")
        if not piece:
            return received
        received += piece


async def still_open(reader: asyncio.StreamReader, for_seconds: float) -> bool:
    """True when nothing arrives and the connection stays open for `for_seconds`."""
    try:
        await asyncio.wait_for(reader.read(1), for_seconds)
    except TimeoutError:
        return True
    return False


async def hold(port: int, source: str, head: bytes = b"GET / HTTP/1.1\r\n") -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    """A connection from `source` (a 127.x.y.z address) that sent `head`, a half-sent request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(head)
    await writer.drain()
    return reader, writer


async def request(port: int, source: str, target: str = "/") -> bytes:
    """One `Connection: close` GET from `source`; the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    try:
        return await read_until_closed(reader, time.monotonic() + MARGIN)
    finally:
        writer.close()
