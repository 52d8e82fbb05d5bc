"""A TCP relay in front of a real server that can hold its answers mid-stream (a stalled upstream;
tests/support/relay.py is the one that cuts links).

`HoldingRelay(port).start()` listens on a free 127.0.0.1 port and forwards every connection to
127.0.0.1:`port`, both ways, in threads. `hold_after(n)`: from then on, at most `n` more bytes of
the server's answers are forwarded (over all connections, kept-alive ones included), then the
relay stops reading from the server (held mid-body, as a slow upstream would be) until
`release()`. `peers()`: the client ports of the connections accepted so far. `requests(method,
path)`: how many such requests were sent through so far (counted as they start, unlike the
server's access log, which shows a request once it is over). `stop()` closes everything; `cut()`
too, without forwarding what is held first (the server is gone mid-answer).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.stack import free_port

_READ_BYTES = 256 * 1024


class HoldingRelay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._budget: int | None = None  # answer bytes still to forward; None: no limit
        self._condition = threading.Condition()
        self._sockets: list[socket.socket] = []
        self._peers: list[int] = []
        self._sent: list[bytearray] = []  # what each connection's client sent

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HoldingRelay:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def hold_after(self, count: int) -> None:
        with self._condition:
            self._budget = count

    def release(self) -> None:
        with self._condition:
            self._budget = None
            self._condition.notify_all()

    def held(self) -> bool:
        """True once the budget of `hold_after` is spent (answers are being held)."""
        with self._condition:
            return self._budget is not None and self._budget <= 0

    def peers(self) -> list[int]:
        with self._condition:
            return list(self._peers)

    def requests(self, method: str, path: str) -> int:
        line = f"{method} {path} HTTP/1.1\r\n".encode()
        with self._condition:
            return sum(bytes(sent).count(line) for sent in self._sent)

    def stop(self) -> None:
        self.release()
        self.cut()

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._condition:
            for sock in self._sockets:
                # shutdown first: a close alone neither wakes a thread blocked reading the
                # socket nor tells the other end.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, address = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            sent = bytearray()
            with self._condition:
                self._sockets += [client, server]
                self._peers.append(address[1])
                self._sent.append(sent)
            threading.Thread(target=self._pipe, args=(client, server, False, sent), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool, sent: bytearray | None) -> None:
        try:
            while True:
                want = _READ_BYTES
                if answers:
                    with self._condition:
                        while self._budget is not None and self._budget <= 0:
                            self._condition.wait()
                        if self._budget is not None:
                            want = min(want, self._budget)
                data = source.recv(want)
                if not data:
                    break
                with self._condition:
                    if answers and self._budget is not None:
                        self._budget -= len(data)
                    if sent is not None:
                        sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
