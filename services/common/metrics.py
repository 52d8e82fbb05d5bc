"""Prometheus metrics of one process: a registry of its own, gauge callbacks, the gRPC server
interceptor, and a tiny asyncio HTTP server for `GET /metrics` (the gRPC services).

Each composition root builds one `Metrics` and passes it down; nothing here is module-global,
so several services can share one interpreter in tests.

Gauge callbacks (`register_gauge_callback`) let other components publish values that live
elsewhere (the database pool, GC and outbox queue sizes) without touching the hot path: the
callbacks run only when `/metrics` is scraped, on the event loop, and may be async.

Label cardinality is bounded by construction: gRPC labels are the service's own method names
and status code names, HTTP labels are route templates (never raw paths).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

# prometheus_client is loaded by the first `Metrics`: a process that serves no metrics never
# builds one, and never pays for it (~20 ms and ~2 MiB).
if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("lading.metrics")

# A callback returns one value, or {label values: value} when registered with labels.
GaugeValue = float | int | Mapping[tuple[str, ...], float | int]
GaugeCallback = Callable[[], GaugeValue | Awaitable[GaugeValue]]

# A scrape waits at most this long for one gauge callback (a slow database must not hang it).
CALLBACK_TIMEOUT_SECONDS = 2.0

# Seconds: from sub-millisecond cache hits to long blob streams.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class _GaugeCallback:
    name: str
    documentation: str
    labels: tuple[str, ...]
    fn: GaugeCallback
    last: GaugeValue | None = None


class _CallbackCollector:
    """Yields the values the callbacks returned at the last `refresh` (prometheus_client calls
    `collect` synchronously, so async callbacks are awaited beforehand)."""

    def __init__(self) -> None:
        self.callbacks: dict[str, _GaugeCallback] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        for callback in list(self.callbacks.values()):
            if callback.last is None:
                continue
            family = GaugeMetricFamily(callback.name, callback.documentation, labels=callback.labels or None)
            if callback.labels:
                for label_values, value in dict(callback.last).items():  # type: ignore[arg-type]
                    family.add_metric(list(label_values), float(value))
            else:
                family.add_metric([], float(callback.last))  # type: ignore[arg-type]
            yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class Metrics:
    """The metrics of one process (`process` is "gateway", "metadata" or "blob")."""

    def __init__(self, process: str) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector

        self.process = process
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self._callbacks = _CallbackCollector()
        self.registry.register(self._callbacks)  # type: ignore[arg-type]

    def register_gauge_callback(
        self, name: str, documentation: str, fn: GaugeCallback, *, labels: Sequence[str] = ()
    ) -> None:
        """Publishes gauge `name`, whose value `fn()` (sync or async) gives at each scrape.

        Without `labels`, `fn` returns a number; with them, `{(label values...): number}`.
        Registering a name again replaces the callback. A callback that raises or takes longer
        than CALLBACK_TIMEOUT_SECONDS leaves its gauge out of that scrape (and is logged).
        """
        self._callbacks.callbacks[name] = _GaugeCallback(name, documentation, tuple(labels), fn)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        from prometheus_client import Counter

        return Counter(name, documentation, labelnames=labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        from prometheus_client import Gauge

        return Gauge(name, documentation, labelnames=labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        from prometheus_client import Histogram

        return Histogram(name, documentation, labelnames=labels, buckets=buckets, registry=self.registry)

    async def refresh(self) -> None:
        """Runs every gauge callback (concurrently, each bounded by CALLBACK_TIMEOUT_SECONDS)."""
        callbacks = list(self._callbacks.callbacks.values())
        if callbacks:
            await asyncio.gather(*(self._refresh_one(callback) for callback in callbacks))

    async def _refresh_one(self, callback: _GaugeCallback) -> None:
        try:
            value = callback.fn()
            if inspect.isawaitable(value):
                async with asyncio.timeout(CALLBACK_TIMEOUT_SECONDS):
                    value = await value
            callback.last = value  # type: ignore[assignment]
        except Exception:  # noqa: BLE001 - one broken gauge must not break the scrape
            callback.last = None
            log.warning("gauge callback %s failed; it is left out of this scrape", callback.name, exc_info=True)

    async def render(self) -> tuple[bytes, str]:
        """The text exposition (after refreshing the callbacks) and its content type."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        await self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# --- gRPC server side -------------------------------------------------------------------------


class GrpcMetrics:
    """gRPC server metrics: calls by method and status code, and their latency."""

    def __init__(self, metrics: Metrics) -> None:
        self.handled = metrics.counter(
            "lading_grpc_server_handled_total", "gRPC calls completed, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
        )
        self.latency = metrics.histogram(
            "lading_grpc_server_handling_seconds", "gRPC call duration, by method",
            ["grpc_service", "grpc_method"],
        )


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    try:
        return grpc.StatusCode(code).name  # type: ignore[call-arg]
    except Exception:  # noqa: BLE001 - an int code from cygrpc
        return str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and final status and times it. Place it OUTSIDE the
    error-mapping interceptor so that mapped errors are counted with their real code.

    `on_ok` maps a method name ("StartUpload") to a function called after each successful call
    (the blob service counts active uploads this way)."""

    def __init__(self, grpc_metrics: GrpcMetrics, on_ok: Mapping[str, Callable[[], None]] | None = None) -> None:
        self.metrics = grpc_metrics
        self.on_ok = dict(on_ok or {})
        # {method path: wrapped handler}: wrapped once per method, not per call. Valid because the
        # handlers behind us (servicers, the error mapping) are stateless per method.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(handler_call_details.method, handler)
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _wrap(self, path: str, handler: Any) -> Any:
        service, _, method = path.lstrip("/").rpartition("/")
        latency = self.metrics.latency.labels(service, method)
        on_ok = self.on_ok.get(method)

        def finish(context: grpc.aio.ServicerContext, started: float, code: str | None) -> None:
            code = code or _code_name(context)
            latency.observe(time.perf_counter() - started)
            self.metrics.handled.labels(service, method, code).inc()
            if code == "OK" and on_ok is not None:
                on_ok()

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, code = time.perf_counter(), None
                try:
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    code = "UNKNOWN"
                    raise
                finally:
                    finish(context, started, code)

            return wrapped

        def streaming(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started, code = time.perf_counter(), None
                try:
                    async for item in behavior(request, context):
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    code = "CANCELLED"
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    code = "UNKNOWN"
                    raise
                finally:
                    finish(context, started, code)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler


# --- database pool ----------------------------------------------------------------------------


def pool_usage(pools: Mapping[str, Any]) -> Callable[[], dict[tuple[str, ...], float]]:
    """A gauge callback giving `{(pool, state): connections}` for SQLAlchemy pools (`state` is
    "checked_out", "idle" or "size"); pools without these counters (SQLite's static pools) are
    left out."""

    def read() -> dict[tuple[str, ...], float]:
        values: dict[tuple[str, ...], float] = {}
        for name, pool in pools.items():
            for state, method in (("checked_out", "checkedout"), ("idle", "checkedin"), ("size", "size")):
                reader = getattr(pool, method, None)
                if reader is not None:
                    values[(name, state)] = float(reader())
        return values

    return read


# --- HTTP endpoint of the gRPC services ----------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) → (host, port). Raises ValueError naming the format."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} must be host:port, e.g. 127.0.0.1:9101")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsHttpServer:
    """`GET /metrics` (and nothing else) on `listen`, served on the running event loop, so that
    gauge callbacks can await. One request per connection; anything else gets 404/405."""

    def __init__(self, metrics: Metrics, listen: str, *, reuse_port: bool = False) -> None:
        self.metrics = metrics
        self.host, self.port = parse_listen(listen)
        # Several processes (the gateway's uvicorn workers) may share `listen`; each scrape is
        # then answered by one of them, with its own counts.
        self.reuse_port = reuse_port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> MetricsHttpServer:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_port=self.reuse_port or None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = target.split("?", 1)[0]
            if path != "/metrics":
                status, body, content_type = "404 Not Found", b"not found; try /metrics\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, content_type = "405 Method Not Allowed", b"GET only\n", "text/plain"
            else:
                body, content_type = await self.metrics.render()
                status = "200 OK"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
