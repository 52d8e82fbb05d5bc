"""A tiny HTTP receiver for event notifications on 127.0.0.1, in a thread (tests only).

Records every POST (headers + parsed JSON body). `status` is what it answers (e.g. 500 to make
deliveries fail; a 3xx carries `location` as its Location header). Every attempt's path and
headers are in `requests`, whatever the answer. `stop()` closes the socket (connection refused);
`start()` again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.stack import free_port


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 200
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.attempts = 0
        self.location = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.attempts += 1
                    receiver.requests.append((self.path, headers))
                    status = receiver.status
                    if status < 300:
                        receiver.posts.append((headers, json.loads(body)))
                self.send_response(status)
                if 300 <= status < 400 and receiver.location:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        # serve_forever checks for shutdown() between selects: at its default 0.5 s poll every stop
        # (each test's teardown) waited up to half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for _, body in self.posts for event in body["events"]]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The events received once there are at least `count` (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events
            if len(events) >= count:
                return events
            time.sleep(0.02)
        raise AssertionError(f"expected {count} events, got {len(self.events)}: {self.events}")
