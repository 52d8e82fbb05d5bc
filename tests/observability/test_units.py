"""In-process checks of the observability pieces: JSON log lines, gauge callbacks, the metrics
HTTP endpoint, the traced blob backend, and that disabled tracing installs nothing."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from services.blob.backends.base import BlobBackend
from services.blob.backends.instrumented import InstrumentedBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.core import PresignsReads
from services.common.logs import JsonFormatter, bind_log_fields, log_context, reset_log_fields
from services.common.metrics import Metrics, MetricsHttpServer, parse_listen
from services.common.settings import ObservabilitySettings
from services.common.telemetry import Telemetry, setup_tracing, traces_url


def _json_lines(emit) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("lading.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_span_ids_and_bound_fields() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    state = {"path_params": {}}

    def emit(logger: logging.Logger) -> None:
        logger.info("outside")
        token = bind_log_fields(lambda: {"repository": state["path_params"].get("name"), "empty": ""})
        try:
            state["path_params"] = {"name": "library/alpine"}  # filled in after binding: read lazily
            with tracer.start_as_current_span("request") as span, log_context(digest="sha256:ab", account=None):
                logger.warning("inside %s", "a span")
                emit.span = span  # type: ignore[attr-defined]
        finally:
            reset_log_fields(token)
        logger.info("after")

    outside, inside, after = _json_lines(emit)
    assert "trace_id" not in outside and "repository" not in outside
    context = emit.span.get_span_context()  # type: ignore[attr-defined]
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["message"] == "inside a span" and inside["level"] == "warning"
    assert inside["repository"] == "library/alpine" and inside["digest"] == "sha256:ab"
    assert "account" not in inside and "empty" not in inside
    assert "repository" not in after and "digest" not in after


def test_gauge_callbacks_sync_async_and_failing() -> None:
    metrics = Metrics("test")

    async def queue_sizes() -> dict[tuple[str, ...], float]:
        return {("review",): 3, ("dead",): 1}

    def broken() -> float:
        raise RuntimeError("database gone")

    metrics.register_gauge_callback("lading_test_pool", "pool", lambda: 7)
    metrics.register_gauge_callback("lading_test_queue", "queue", queue_sizes, labels=("queue",))
    metrics.register_gauge_callback("lading_test_broken", "broken", broken)
    text, content_type = asyncio.run(metrics.render())
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["lading_test_pool"].samples[0].value == 7
    assert {s.labels["queue"]: s.value for s in families["lading_test_queue"].samples} == {"review": 3, "dead": 1}
    assert "lading_test_broken" not in families
    assert "process_cpu_seconds" in families


def test_metrics_http_server_serves_only_metrics() -> None:
    async def scenario() -> None:
        metrics = Metrics("test")
        metrics.counter("lading_test_things_total", "things").inc(2)
        server = await MetricsHttpServer(metrics, "127.0.0.1:0").start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                ok = await client.get("/metrics")
                assert ok.status_code == 200
                families = {f.name: f for f in text_string_to_metric_families(ok.text)}
                assert families["lading_test_things"].samples[0].value == 2
                assert (await client.get("/other")).status_code == 404
                assert (await client.post("/metrics")).status_code == 405
        finally:
            await server.close()

    asyncio.run(scenario())


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("[::1]:9101") == ("::1", 9101)
    assert parse_listen(":9101") == ("0.0.0.0", 9101)
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("9101x")


def test_tracing_off_installs_nothing() -> None:
    telemetry = setup_tracing(ObservabilitySettings(), "gateway")
    backend = MemoryBackend()
    assert not telemetry.enabled
    assert telemetry.server_interceptors() == [] and telemetry.client_interceptors() == []
    assert telemetry.asgi_middleware() is None
    # The blob plane then gives its backend wrapper no tracer: it starts no span.
    assert InstrumentedBackend(backend, name="memory")._quiet


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces/") == "http://collector:4318/v1/traces"


def test_traced_backend_spans_and_keeps_capabilities() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    backend = InstrumentedBackend(MemoryBackend(), name="memory", tracer=Telemetry(provider).tracer("t"))

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"hello"

    async def scenario() -> bytes:
        await backend.put("a/b", chunks())
        stream = await backend.get("a/b")
        data = b"".join([chunk async for chunk in stream])
        await backend.delete("a/b")
        return data

    assert asyncio.run(scenario()) == b"hello"
    assert isinstance(backend, BlobBackend)
    assert not isinstance(backend, PresignsReads)  # the memory backend cannot presign; nor can its wrapper
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["blob.backend.put", "blob.backend.get", "blob.backend.delete"]
    assert spans[0].attributes["lading.blob.key"] == "a/b"
    assert spans[0].attributes["lading.blob.backend"] == "memory"
