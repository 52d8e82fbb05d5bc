"""Server bootstrap shared by both services: error mapping, health, TLS, graceful shutdown.

With `tls` enabled the listener speaks TLS (optionally mutual TLS; services/common/tls.py);
otherwise it is plaintext, meant for unix sockets and trusted networks.

Shutdown order (SIGTERM or SIGINT):
  1. health flips to NOT_SERVING, so load balancers and probes stop sending new calls, and the
     caller's `on_draining` ends long-lived streams (their callers subscribe elsewhere);
  2. `server.stop(grace)` lets in-flight calls finish for up to `grace` seconds;
  3. the caller's `on_shutdown` closes the service's resources (database pool, thread pool).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import GrpcTlsSettings
from services.common.tls import server_credentials

log = logging.getLogger("lading.grpc")

MiB = 1024 * 1024

# Manifests travel whole (≤ 4 MiB plus framing); blob data travels in ≤ 1 MiB messages.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 16 * MiB),
    ("grpc.max_receive_message_length", 16 * MiB),
    # A fixed flow-control window big enough that blob streams do not stall on loopback and LANs.
    # BDP probing is off because it grows each stream's window far past this, so 16 concurrent
    # 256 MiB streams held 300-650 MiB of bytes inside gRPC (tests/memory measures the bound).
    ("grpc.http2.lookahead_bytes", 4 * MiB),
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
    """One gRPC server with health checking and a written shutdown order.

    `interceptors` (outermost first) wrap every call before the error mapping does.
    `register` adds servicers (`add_XServicer_to_server` functions); `serve_forever` binds,
    marks the named services SERVING once `ready()` succeeds, and runs until SIGTERM/SIGINT or
    `request_stop()`. With `tls` enabled, its certificate files are read here, so bad TLS
    settings raise `TlsConfigError` before anything binds.
    """

    def __init__(
        self,
        *,
        listen: str,
        service_names: Iterable[str],
        grace_seconds: float,
        tls: GrpcTlsSettings | None = None,
        tls_section: str = "tls",
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.listen = listen
        self.service_names = list(service_names)
        self.grace_seconds = grace_seconds
        self._credentials = (
            server_credentials(tls, section=tls_section) if tls is not None and tls.enabled else None
        )
        # `interceptors` (tracing, metrics) run outside the error mapping, so they see the final status.
        self.server = grpc.aio.server(
            interceptors=[*interceptors, ErrorMappingInterceptor()], options=CHANNEL_OPTIONS
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._stop = asyncio.Event()
        self.bound_port: int | None = None

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
    ) -> None:
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._credentials is not None:
            self.bound_port = self.server.add_secure_port(self.listen, self._credentials)
        else:
            self.bound_port = self.server.add_insecure_port(self.listen)
        await self.server.start()
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
            await self._stop.wait()
        finally:
            # 1. probes flip first; 2. in-flight calls drain; 3. resources close.
            await self.health.enter_graceful_shutdown()
            if on_draining is not None:
                await on_draining()
            await self.server.stop(self.grace_seconds)
            await on_shutdown()
            log.info("stopped %s", ", ".join(self.service_names))
