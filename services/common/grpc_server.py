"""Server bootstrap shared by both services: error mapping, health, TLS, graceful shutdown.

With `tls` enabled the listener speaks TLS (optionally mutual TLS; services/common/tls.py);
otherwise it is plaintext. Either way every call passes the access check (services/common/access.py:
who the caller is, and whether the method's role in services/common/rpc_roles.py is theirs); a unix
socket is bound with mode 0600 whatever the umask, so only this user (and root) can connect to it.
An optional second listener (`health_listen`, plaintext) serves grpc.health.v1 alone, for probes
that cannot speak TLS.

Shutdown order (SIGTERM or SIGINT; or the host's `PlaneControl.stop` when the plane shares its
process with other work, as the metadata plane does under `lading serve`, services/supervisor.py):
  1. health flips to NOT_SERVING, so load balancers and probes stop sending new calls, and the
     caller's `on_draining` ends long-lived streams (their callers subscribe elsewhere);
  2. `server.stop(grace)` lets in-flight calls finish for up to `grace` seconds;
  3. the caller's `on_shutdown` closes the service's resources (database pool, thread pool).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.access import AccessInterceptor, build_access_policy
from services.common.errors import ErrorKind, RegistryError
from services.common.paths import unix_socket_path
from services.common.plane_control import PlaneControl
from services.common.settings import GrpcAccessSettings, GrpcTlsSettings
from services.common.tls import server_credentials

log = logging.getLogger("lading.grpc")

MiB = 1024 * 1024

# Manifests travel whole (≤ 4 MiB plus framing); blob data travels in ≤ 1 MiB messages.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 16 * MiB),
    ("grpc.max_receive_message_length", 16 * MiB),
    # A fixed flow-control window big enough that blob streams do not stall on loopback and LANs
    # (2 MiB covers the bandwidth-delay product of 10 Gbit/s at 1 ms). BDP probing is off because
    # it grows each stream's window far past this, so 16 concurrent 256 MiB streams held 300-650
    # MiB of bytes inside gRPC (tests/memory measures the bound). 4 MiB -> 2 MiB: the blob
    # plane's peak under 16 concurrent pushes went 204-218 -> 167-171 MiB (`make bench-quick`,
    # two alternated pairs), push and pull rates within the run-to-run noise.
    ("grpc.http2.lookahead_bytes", 2 * MiB),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, RegistryError):
        error = exc
    else:
        log.exception("unhandled error in %s", getattr(context, "_rpc_method", "rpc"), exc_info=exc)
        error = RegistryError(ErrorKind.INTERNAL, "internal server error; the service logs say more")
    status = rpc_status.to_status(error.to_rpc_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request_or_iterator, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status here
            await _abort(context, exc)

    return wrapped


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    return wrapped


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns RegistryError (and any unexpected exception) into a rich gRPC status, once, for all."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler


class GrpcService:
    """One gRPC server with access control, health checking and a written shutdown order.

    `interceptors` (outermost first) wrap every call before the access check and the error
    mapping do. Servicers are added to `server` (`add_XServicer_to_server` functions);
    `serve_forever` binds, marks the named services SERVING once `ready()` succeeds, and runs
    until SIGTERM/SIGINT or `request_stop()` (with a `control`: until `control.stop` is set; the
    signals are then left to the host). `plane` ("metadata", "blob") names the settings in
    messages. Certificate and token files are read here, so bad TLS or access settings raise
    `TlsConfigError` / `AccessConfigError` before anything binds.
    """

    def __init__(
        self,
        *,
        listen: str,
        service_names: Iterable[str],
        grace_seconds: float,
        access: GrpcAccessSettings,
        plane: str,
        tls: GrpcTlsSettings | None = None,
        health_listen: str = "",
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        inner_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.listen = listen
        self.health_listen = health_listen
        self.service_names = list(service_names)
        self.grace_seconds = grace_seconds
        self._credentials = (
            server_credentials(tls, section=f"{plane}.tls") if tls is not None and tls.enabled else None
        )
        self.access = build_access_policy(access, listen=listen, tls=tls, plane=plane)
        # `interceptors` (tracing, metrics) run outside the access check and the error mapping, so
        # they see the final status, refusals included. `inner_interceptors` run after both: only
        # for callers let in, and their RegistryErrors are mapped like a servicer's (regions'
        # write forwarding, services/metadata/regions.py).
        self.server = grpc.aio.server(
            interceptors=[*interceptors, AccessInterceptor(self.access), ErrorMappingInterceptor(),
                          *inner_interceptors],
            options=CHANNEL_OPTIONS,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Health alone, in plaintext, for probes (no interceptor: nothing else is served there).
        self.health_server: grpc.aio.Server | None = None
        if health_listen:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self._stop = asyncio.Event()
        self.bound_port: int | None = None
        self.health_port: int | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def _set_status(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def serve_forever(
        self,
        *,
        ready: Callable[[], Awaitable[None]],
        on_shutdown: Callable[[], Awaitable[None]],
        on_draining: Callable[[], Awaitable[None]] | None = None,
        control: PlaneControl | None = None,
    ) -> None:
        if control is not None:
            self._stop = control.stop
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.bound_port = self._bind()
        await self.server.start()
        if self.health_server is not None:
            self.health_port = self.health_server.add_insecure_port(self.health_listen)
            await self.health_server.start()
        if control is None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.request_stop)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            await ready()
            await self._set_status(health_pb2.HealthCheckResponse.SERVING)
            log.info("serving %s on %s", ", ".join(self.service_names), self.listen)
            if control is not None:
                control.serving.set()
            await self._stop.wait()
        finally:
            # 1. probes flip first; 2. in-flight calls drain; 3. resources close.
            await self.health.enter_graceful_shutdown()
            if on_draining is not None:
                await on_draining()
            await self.server.stop(self.grace_seconds)
            if self.health_server is not None:
                await self.health_server.stop(0)
            await on_shutdown()
            log.info("stopped %s", ", ".join(self.service_names))

    def _bind(self) -> int:
        """Binds `listen`. A unix socket is created with mode 0600 (the umask is narrowed around
        the bind, so it never exists with wider permissions): its peers are trusted by
        `grpc_access.trust_unix_socket_peers`, so only this user (and root) may connect."""
        if unix_socket_path(self.listen) is None:
            return self._add_port()
        previous = os.umask(0o177)
        try:
            return self._add_port()
        finally:
            os.umask(previous)

    def _add_port(self) -> int:
        if self._credentials is not None:
            return self.server.add_secure_port(self.listen, self._credentials)
        return self.server.add_insecure_port(self.listen)
