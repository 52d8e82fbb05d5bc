"""OpenTelemetry tracing of one process, built from `settings.observability`.

`setup_tracing(settings, process)` returns a `Telemetry`. With no `otlp_endpoint` it is disabled:
every method returns its input unchanged or an empty list, so nothing is installed and the hot
path pays nothing. Enabled, it owns a TracerProvider of its own (the global one is left alone)
exporting over OTLP/HTTP in batches, and hands out the pieces each plane wires in:

- gateway: `asgi_middleware()` (a server span per request, continuing a client's `traceparent`)
  and `client_interceptors()` for the gRPC channels (a client span per call, `traceparent`
  injected into the gRPC metadata, W3C trace context);
- services: `server_interceptors()` (a server span per call, continuing the caller's trace);
- metadata: `instrument_engines(...)` (a span per SQL statement);
- blob: `tracer("lading.blob.backend")` for the backend wrapper (services/blob/backends/
  instrumented.py: a span per storage operation, S3 requests and file I/O).

`shutdown()` flushes the spans still queued; call it when the process stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from services.common.settings import ObservabilitySettings

log = logging.getLogger("lading.telemetry")

def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (or the URL itself if it names /v1/traces)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


class Telemetry:
    """Tracing for one process; `provider` None means disabled (see the module docstring)."""

    def __init__(self, provider: Any | None = None) -> None:
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str) -> Any:
        """A tracer of this process (the no-op tracer when disabled)."""
        from opentelemetry import trace

        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(name)

    def server_interceptors(self) -> list[Any]:
        """grpc.aio server interceptors: one span per call, parented by the caller's traceparent."""
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.provider)]

    def client_interceptors(self) -> list[Any]:
        """grpc.aio client interceptors: one span per call, traceparent sent in the metadata.

        Ours, not opentelemetry-instrumentation-grpc's: its stream-unary interceptor awaits the
        response inside the interceptor, which deadlocks calls that use `call.write()` (the
        gateway's blob upload stream): grpc.aio's `write` waits for the interceptors first."""
        if self.provider is None:
            return []
        return client_tracing_interceptors(self.tracer("lading.grpc.client"))

    def asgi_middleware(self) -> tuple[type, dict[str, Any]] | None:
        """(middleware class, options) for the gateway's outermost middleware, or None."""
        if self.provider is None:
            return None
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        # receive/send spans would triple the span count of every blob chunk for no insight.
        return OpenTelemetryMiddleware, {
            "tracer_provider": self.provider, "exclude_spans": ["receive", "send"],
            "excluded_urls": "/metrics,/healthz,/readyz",
        }

    def instrument_engines(self, engines: Iterable[Any]) -> None:
        """A span per SQL statement on each SQLAlchemy engine (AsyncEngine or Engine)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.sqlalchemy import __version__
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeter

        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
        # The instrumentation also counts connections through a meter; the pool gauges of
        # services/common/metrics.py do that already, so it gets a no-op one.
        usage = NoOpMeter("lading").create_up_down_counter("db.client.connections.usage")
        for engine in engines:
            if engine is not None:
                # Instrumenting the engine itself (not create_engine) leaves other engines alone.
                EngineTracer(tracer, getattr(engine, "sync_engine", engine), usage)

    def shutdown(self) -> None:
        """Exports what is queued and stops the exporter. Idempotent."""
        if self.provider is not None:
            try:
                self.provider.shutdown()
            except Exception:  # noqa: BLE001 - a collector that is gone must not block shutdown
                log.warning("flushing traces failed", exc_info=True)
            self.provider = None


def setup_tracing(settings: ObservabilitySettings, process: str) -> Telemetry:
    """Tracing for `process` ("gateway", "metadata", "blob"): disabled unless
    `settings.otlp_endpoint` is set. No I/O here (the exporter connects when it first exports)."""
    if not settings.otlp_endpoint:
        return Telemetry()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"{settings.service_name_prefix}-{process}", "service.namespace": settings.service_name_prefix}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint), headers=dict(settings.otlp_headers),
                                timeout=settings.otlp_timeout_seconds)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000,
                                                   export_timeout_millis=settings.otlp_timeout_seconds * 1000))
    log.info("tracing: exporting spans of %s to %s", process, traces_url(settings.otlp_endpoint))
    return Telemetry(provider)


class _ClientSpans:
    """Starts a CLIENT span per call, puts its traceparent into the call's metadata, and ends it
    when the call is done (with the call's status), without waiting for the call itself."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        # Finishing tasks, kept referenced until they run (the event loop holds tasks weakly).
        self._pending: set[asyncio.Task[None]] = set()

    def start(self, details: Any) -> tuple[Any, Any]:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind

        method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
        service, _, name = method.lstrip("/").rpartition("/")
        span = self._tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = [*(details.metadata or ()), *carrier.items()]
        return span, details._replace(metadata=metadata)

    def finish_when_done(self, span: Any, call: Any) -> Any:
        async def finish() -> None:
            from opentelemetry.trace import Status, StatusCode

            try:
                code = await call.code()
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code.name != "OK":
                    span.set_status(Status(StatusCode.ERROR, code.name))
            except BaseException:  # noqa: BLE001 - cancelled calls still end their span
                span.set_status(Status(StatusCode.ERROR, "cancelled"))
            finally:
                span.end()

        task = asyncio.get_running_loop().create_task(finish())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return call

    async def run(self, continuation: Any, details: Any, request: Any) -> Any:
        span, details = self.start(details)
        try:
            call = await continuation(details, request)
        except BaseException:
            span.end()
            raise
        return self.finish_when_done(span, call)


def client_tracing_interceptors(tracer: Any) -> list[Any]:
    """One grpc.aio client interceptor per call type, sharing one `_ClientSpans` (grpc.aio files
    each interceptor under ONE call type, so a single object cannot serve all four)."""
    import grpc

    spans = _ClientSpans(tracer)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
            return await spans.run(continuation, client_call_details, request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
            return await spans.run(continuation, client_call_details, request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
            return await spans.run(continuation, client_call_details, request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
            return await spans.run(continuation, client_call_details, request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
