"""Composition root of the gateway process: settings → app → uvicorn (uvloop + httptools).

X-Forwarded-* handling is the app's own (gateway.middleware, driven by
`settings.gateway.trusted_proxies`), so uvicorn's proxy-header rewriting is switched off.

Shutdown order on SIGTERM/SIGINT (one worker):
  1. /readyz answers 503 (the Drain flag), so load balancers stop sending new requests;
  2. after `shutdown_drain_seconds`, uvicorn stops accepting connections and closes idle ones;
  3. in-flight requests get `shutdown_grace_seconds` to finish, then are cancelled;
  4. the lifespan closes the change streams and gRPC channels (within `shutdown_cleanup_seconds`)
     and flushes the traces;
  5. a process still running drain + grace + cleanup after the signal exits at once with status 1,
     its threads' stacks on stderr: a peer that is gone or silent (the metadata plane, killed
     with its supervisor; an OTLP collector that takes the spans and never answers) cannot hold
     it for ever.
A second SIGINT skips the waits. With `workers > 1` uvicorn's supervisor runs the workers, with
bounded waits (gateway.workers): steps 2-4 hold in each worker (the grace period included), step 1
happens as the worker stops accepting, and step 5 is the supervisor's: a worker still running
drain + grace + cleanup after it was told to stop is killed (SIGKILL, logged) and the gateway
exits with status 1. A worker retired by a SIGHUP restart gets the same bound; a stop signal during
that restart ends it and begins the stop at once. A supervisor that dies without its stop (SIGKILL,
OOM) takes its workers with it: each gets SIGTERM from the kernel and runs steps 2-4, and one
still running drain + grace + cleanup after the supervisor's death exits at once (status 1).

HTTPS (`settings.gateway.tls.cert_file` set): one worker serves from a `CertificateReloader`'s
SSLContext and reloads the files in place on SIGHUP and when they change (checked every
`tls.reload_check_seconds`), without dropping a connection. With `workers > 1`, uvicorn's
supervisor answers SIGHUP by restarting the workers one by one, which re-reads the files; file
changes alone are not noticed there.

Listening: on `host:port`, or, with `listen_fds`, on sockets already bound and listening that the
process inherited (`lading serve` hands its gateway the registry port this way; see
services/serve_listeners.py). With `start_gate_fd` it accepts only once that pipe delivers a byte
(`lading serve` opens it when the other planes are SERVING), and exits if the pipe closes first.

Limits: the request head is bounded by `max_header_bytes` in the HTTP protocol itself
(gateway.limits); request bodies by `body_read_timeout_seconds` (gateway.bodies); the time to send
a head, idle connections and connections per client address by the protocol's guards
(gateway.connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.connections import ConnectionLimits, GatewayServerConfig
from gateway.readiness import Drain
from gateway.tls import CertificateReloader
from services.common.allocator import tune_allocator
from services.common.logs import configure_logging
from services.common.settings import Settings, load_settings
from services.common.stop_deadline import arm_stop_deadline


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips readiness before it stops accepting, and reloads its TLS
    certificate on SIGHUP or file change (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain: Drain,
        drain_seconds: float,
        certificates: CertificateReloader | None = None,
        reload_check_seconds: float = 0.0,
        exit_within_seconds: float | None = None,
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_seconds = drain_seconds
        self._exit_at: float | None = None
        # The hard deadline of a stop (drain + grace + cleanup), counted from the first signal.
        self._exit_within_seconds = exit_within_seconds
        self._stop_requested_at: float | None = None
        self._watchdog: threading.Thread | None = None
        self._certificates = certificates
        self._reload_check_seconds = reload_check_seconds
        self._next_check = 0.0
        self._reload_requested = False

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self._certificates is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._request_reload)

    def _request_reload(self) -> None:
        self._reload_requested = True

    async def _check_certificates(self, certificates: CertificateReloader) -> None:
        """Reloads on request (SIGHUP) or, every `reload_check_seconds`, if the files changed."""
        now = time.monotonic()
        due = self._reload_check_seconds > 0 and now >= self._next_check
        if not (self._reload_requested or due):
            return
        if due:
            self._next_check = now + self._reload_check_seconds
        requested, self._reload_requested = self._reload_requested, False
        if requested or await asyncio.to_thread(certificates.changed):
            # In the loop's thread, not a worker: handshakes read this context concurrently.
            certificates.reload()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: only flags and a timestamp here.
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._drain.start()
        if self._drain_seconds > 0 and self._exit_at is None:
            self._exit_at = time.monotonic() + self._drain_seconds
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            return
        if sig == signal.SIGINT or self._exit_at is None:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_requested_at is not None:
            self._arm_watchdog()
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        if self._certificates is not None:
            await self._check_certificates(self._certificates)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self._arm_watchdog()
        await super().shutdown(sockets)

    def _arm_watchdog(self) -> None:
        """Once a stop began: a thread that ends the process if it is still running at the
        deadline, whatever the event loop is stuck on (the trace flush blocks it while the
        exporter waits on its collector, up to 10 s per batch)."""
        if self._watchdog is not None or self._exit_within_seconds is None:
            return
        self._watchdog = arm_stop_deadline(self._exit_within_seconds, process="gateway",
                                           bound="shutdown drain + grace + cleanup", started=self._stop_requested_at)


def app_from_environment() -> Starlette:
    """App factory for uvicorn worker processes (`workers > 1`): settings from LADING_* again, and
    the worker's logging set up from them as `run` sets up the single process's. uvicorn gives a
    worker no handler (`log_config` is None), so a worker wrote no line below WARNING, and those
    without our format."""
    settings = load_settings()
    _configure_logging(settings)
    return create_app(settings, freeze_start_up=True)


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.gateway.log_level, "gateway", settings.observability.log_format)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    config = settings.gateway
    return {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        # httptools with a bound on request-head bytes, carried in h11's setting of that meaning,
        # and the connection guards (gateway.connections).
        "http": "gateway.connections:GatewayHttpProtocol",
        "h11_max_incomplete_event_size": config.max_header_bytes,
        "lifespan": "on",
        "proxy_headers": False,
        "log_config": None,
        "log_level": config.log_level,
        # An access line per request costs a visible share of throughput; on at debug level.
        "access_log": config.log_level.lower() == "debug",
        "server_header": False,
        # Idle connections (just opened, or between requests) close after this (gateway.connections).
        "timeout_keep_alive": config.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": config.shutdown_grace_seconds,
    }


def wait_for_start_gate(fd: int | None) -> bool:
    """Blocks until the start gate (an inherited pipe, `gateway.start_gate_fd`) delivers a byte:
    True. False when it closed first (whoever held it gave up on this start). No gate: True."""
    if fd is None:
        return True
    with os.fdopen(fd, "rb", buffering=0) as gate:
        return gate.read(1) != b""


def run(settings: Settings) -> None:
    """Serves the gateway until SIGINT/SIGTERM, then shuts down in the order written above."""
    config = settings.gateway
    _configure_logging(settings)
    options = uvicorn_options(settings)
    tls = config.tls
    inherited = [socket.socket(fileno=fd) for fd in config.listen_fds] or None
    # The bound of a stop, from the signal to the exit (see the module docstring, step 5).
    stop_within_seconds = config.stop_bound_seconds
    if config.workers > 1:
        if not wait_for_start_gate(config.start_gate_fd):
            return
        if tls.cert_file is not None:
            options.update(ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file)
        # What uvicorn.run does for workers, with a bounded stop, workers that end with their
        # supervisor (gateway.workers) and our inherited sockets when there are some.
        from gateway.workers import BoundedMultiprocess, WorkerConfig

        multi = WorkerConfig("gateway.main:app_from_environment", factory=True, workers=config.workers,
                             stop_within_seconds=stop_within_seconds, **options)
        supervisor = BoundedMultiprocess(multi, sockets=inherited or [multi.bind_socket()],
                                         stop_within_seconds=stop_within_seconds)
        supervisor.run()
        if supervisor.killed:
            raise SystemExit(1)  # as the single process's watchdog exits
        return
    certificates = CertificateReloader(tls.cert_file, tls.key_file) if tls.cert_file is not None else None
    if certificates is not None:
        options["ssl_context_factory"] = lambda _config, _default: certificates.context
    drain = Drain()
    server = DrainingServer(
        GatewayServerConfig(
            create_app(settings, drain=drain, freeze_start_up=True),
            limits=ConnectionLimits.from_settings(config), **options,
        ),
        drain=drain,
        drain_seconds=config.shutdown_drain_seconds,
        certificates=certificates,
        reload_check_seconds=tls.reload_check_seconds,
        exit_within_seconds=stop_within_seconds,
    )
    if not wait_for_start_gate(config.start_gate_fd):
        return
    server.run(sockets=inherited)


def main() -> None:
    # Blob bodies stream through here in ~1 MiB buffers: keep them off mmap (services/common/allocator.py).
    tune_allocator()
    run(load_settings())
