"""A TCP relay the tests control, to cut a link between two regions (issue 15: the replica
region partitioned from the primary).

`Relay(upstream)` listens on a free 127.0.0.1 port and copies bytes both ways between each
accepted connection and a new connection to `upstream` (a (host, port) pair, or the path of a unix
socket: a plane that listens on a unix socket is then reachable over TCP through the relay only).
`cut()` is a partition as a client sees it when a link goes down hard: every open connection is
reset (RST, SO_LINGER 0) and new ones are refused (nothing listens on the port). `blackhole()` is
the quieter and nastier kind: packets vanish, so nothing is reset or refused; connections (open and
new) just stop carrying bytes, and only the clients' own deadlines notice. `mend()` ends either:
the connections a blackhole held are reset (as the peers' timeouts would eventually) and the relay
listens and forwards again, on the same port. `Partition` cuts and mends several relays at once (every link between two
regions). Everything runs on one asyncio loop in a daemon thread of the test process; `stop()`
ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.stack import free_port

_CHUNK = 256 * 1024
_TIMEOUT_SECONDS = 10.0


class Relay:
    def __init__(self, upstream: tuple[str, int] | Path, *, name: str = "relay") -> None:
        self.upstream = upstream
        self.name = name
        self.port = free_port()
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{name}", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._blackholed = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_TIMEOUT_SECONDS)

    def start(self) -> Relay:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._call(self._cut())

    def blackhole(self) -> None:
        """Bytes on every connection, open or new, are dropped from now on; nothing is reset."""
        self._blackholed = True

    def mend(self) -> None:
        """Listen again (same port); new connections reach the upstream. After a blackhole, the
        connections it held are reset first."""
        if self._blackholed:
            self._call(self._cut())
            self._blackholed = False
        self._call(self._listen())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._cut())
            self._call(self._finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_TIMEOUT_SECONDS)
        self._loop.close()

    async def _finish(self) -> None:
        """Every connection's task ended (they were reset by `_cut`)."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._blackholed:  # accepted, never answered: what a peer beyond a dead link looks like
            self._open.add(writer)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                while await reader.read(_CHUNK):
                    pass
            self._open.discard(writer)
            return
        try:
            if isinstance(self.upstream, Path):
                up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)  # the upstream is down: as it would look without the relay
            return
        pair = (writer, up_writer)
        self._open.update(pair)
        try:
            await asyncio.gather(_pump(reader, up_writer, self), _pump(up_reader, writer, self))
        except asyncio.CancelledError:
            pass  # stop(): the relay ends
        finally:
            for end in pair:
                self._open.discard(end)
                with contextlib.suppress(Exception):
                    end.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, relay: Relay) -> None:
    try:
        while data := await reader.read(_CHUNK):
            if relay._blackholed:
                continue  # dropped
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (not a FIN): the peer sees the link die, not an orderly goodbye."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Partition:
    """Every link between two regions, through relays: `cut()` and `mend()` act on all of them."""

    def __init__(self, relays: Sequence[Relay]) -> None:
        self.relays = list(relays)

    def cut(self) -> None:
        for relay in self.relays:
            relay.cut()

    def blackhole(self) -> None:
        for relay in self.relays:
            relay.blackhole()

    def mend(self) -> None:
        for relay in self.relays:
            relay.mend()


@contextlib.contextmanager
def relays(**upstreams: tuple[str, int] | Path) -> Iterator[dict[str, Relay]]:
    """Started relays by name, stopped at the end."""
    started: dict[str, Relay] = {}
    try:
        for name, upstream in upstreams.items():
            started[name] = Relay(upstream, name=name).start()
        yield started
    finally:
        for relay in started.values():
            relay.stop()
