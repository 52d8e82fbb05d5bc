"""The gateway's request metrics, `/metrics` endpoint and per-request log fields (pure ASGI).

`ObservabilityMiddleware` sits just inside the tracing middleware (when tracing is on) and
outside everything else. Per request it:
- counts it by route TEMPLATE (`/v2/{name:path}/manifests/{reference}`, never the raw path, so
  label cardinality stays bounded), method and status, times it, and counts body bytes in/out;
- names the tracing span after the route template (`GET /v2/{name:path}/manifests/{reference}`);
- binds log fields read lazily when a line is written: `repository`, `digest` (a digest path
  parameter or a digest reference), `reference` (a tag) and `account` (when auth admitted one).
It answers `GET /metrics` itself (Prometheus text format) when given a `Metrics` and
`serve_metrics` (`observability.gateway_metrics`: off by default, since this is the public port;
the gateway serves them on `observability.gateway_metrics_listen` instead, see gateway.app).

The route is known only after Starlette's router has matched; the router writes `endpoint` into
the request's scope dict in place, and each Endpoint maps back to its route template here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.gate import PRINCIPAL_KEY
from services.common.logs import bind_log_fields, reset_log_fields
from services.common.metrics import Metrics

METRICS_PATH = "/metrics"
# Methods outside this set share the label "OTHER" (a client can send any token as a method).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class GatewayMetrics:
    """The gateway's HTTP metric families, in `metrics.registry`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        labels = ["route", "method", "status"]
        self.requests = metrics.counter("lading_http_requests_total", "HTTP requests answered", labels)
        self.duration = metrics.histogram(
            "lading_http_request_duration_seconds", "HTTP request duration until the response ended", labels
        )
        self.bytes_in = metrics.counter(
            "lading_http_request_bytes_total", "request body bytes received", ["route", "method"]
        )
        self.bytes_out = metrics.counter(
            "lading_http_response_bytes_total", "response body bytes sent", ["route", "method"]
        )
        self.in_flight = metrics.gauge("lading_http_requests_in_flight", "HTTP requests being answered")


def route_templates(routes: Iterable[BaseRoute]) -> dict[Any, str]:
    """{endpoint object: path template}; an endpoint shared by two routes keeps the first."""
    templates: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route):
            templates.setdefault(route.endpoint, route.path)
    return templates


def _request_fields(scope: Scope) -> Mapping[str, Any]:
    """Log fields of one request, read from its scope when a line is written."""
    fields: dict[str, Any] = {}
    params = scope.get("path_params") or {}
    if "name" in params:
        fields["repository"] = params["name"]
    digest = params.get("digest")
    reference = params.get("reference")
    if digest:
        fields["digest"] = digest
    elif reference:
        fields["digest" if ":" in reference else "reference"] = reference
    principal = scope.get(PRINCIPAL_KEY)
    account = getattr(principal, "account", "")
    if account:
        fields["account"] = account
    return fields


class ObservabilityMiddleware:
    """See the module docstring. `metrics` None: no metrics and no `/metrics` (log fields and
    span names still work); `serve_metrics` False: counted, but `/metrics` is left to the app
    (which answers 404)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[BaseRoute],
        metrics: Metrics | None = None,
        serve_metrics: bool = True,
    ) -> None:
        self.app = app
        self.registry = metrics if serve_metrics else None
        self.metrics = GatewayMetrics(metrics) if metrics is not None else None
        self.templates = route_templates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.registry is not None and scope["path"] == METRICS_PATH:
            await self._serve_metrics(scope, send)
            return
        token = bind_log_fields(lambda: _request_fields(scope))
        metrics = self.metrics
        if metrics is None:
            async def naming_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self._name_span(scope)
                await send(message)

            try:
                await self.app(scope, receive, naming_send)
            finally:
                reset_log_fields(token)
            return

        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it starts a response
        received = sent = 0
        route: str | None = None

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent, route
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                # Named now: the tracing middleware ends its span with the last body message.
                route = self._name_span(scope)
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            metrics.in_flight.dec()
            if route is None:
                route = self.templates.get(scope.get("endpoint"), UNMATCHED)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            code = str(status)
            metrics.requests.labels(route, method, code).inc()
            metrics.duration.labels(route, method, code).observe(time.perf_counter() - started)
            if received:
                metrics.bytes_in.labels(route, method).inc(received)
            if sent:
                metrics.bytes_out.labels(route, method).inc(sent)
            reset_log_fields(token)

    def _name_span(self, scope: Scope) -> str:
        """The request's route template (once routed); also names the current tracing span after it."""
        route = self.templates.get(scope.get("endpoint"), UNMATCHED)
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
        return route

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        assert self.registry is not None
        if scope["method"] not in ("GET", "HEAD"):
            body, content_type, status = b"GET only\n", "text/plain; charset=utf-8", 405
        else:
            body, content_type = await self.registry.render()
            status = 200
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
