"""`SlowLink`: a Unix-socket proxy that delays what the server sends to the client.

Put between a gateway and its metadata replica, it makes that gateway hear of every change on the
feed `delay` seconds late (and every answer, and every lease grant), deterministically: the race
between a client that got its 201 and a gateway's change feed is then lost every time unless
writes wait for the gateway's acknowledgement. Bytes keep their order; only their delivery waits.
`delay` can change while connections are open (it applies to bytes read from then on).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from pathlib import Path


class SlowLink:
    def __init__(self, listen: Path, target: Path, *, delay: float = 0.0) -> None:
        self.listen = listen
        self.target = target
        self.delay = delay
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> SlowLink:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.listen))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, name="slowlink-accept", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [*([self._server] if self._server else []), *sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self.listen.unlink()

    def __enter__(self) -> SlowLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._read_delayed, args=(upstream, pending), daemon=True).start()
            threading.Thread(target=self._send_delayed, args=(pending, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _read_delayed(self, source: socket.socket, pending: queue.Queue[tuple[float, bytes]]) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                pending.put((time.monotonic() + self.delay, data))
        pending.put((0.0, b""))

    @staticmethod
    def _send_delayed(pending: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        while True:
            due, data = pending.get()
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sink.sendall(data)
            except OSError:
                return
