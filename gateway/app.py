"""The gateway's ASGI app: `create_app(settings)` builds it; its lifespan owns the gRPC channels.

Middleware (outermost first): the tracing span of each request (only when tracing is configured),
request metrics, `/metrics` on the public port when asked for, and log fields
(gateway.observability), the API-version header on every
response, then trusted X-Forwarded-* handling, then the request-body read timeout
(gateway.bodies). All pure ASGI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway.auth.setup import build_auth
from gateway.bodies import BodyReadTimeoutMiddleware
from gateway.cache_feed import CacheFeed
from gateway.channels import BLOB_READS, BLOB_SERVICE, METADATA_READS, METADATA_SERVICE, open_channel
from gateway.clients import BlobClient, MetadataClient
from gateway.console.wiring import build_console
from gateway.context import Gateway
from gateway.maintenance import MaintenanceGate
from gateway.manifest_cache import ManifestCache
from gateway.middleware import ApiVersionMiddleware, ForwardedHeadersMiddleware, TrustedProxies
from gateway.observability import ObservabilityMiddleware
from gateway.readiness import Drain, PlaneCheck, Readiness
from gateway.routes import STATE_KEY, build_routes
from services.common import start_up
from services.common.metrics import Metrics, MetricsHttpServer
from services.common.settings import Settings
from services.common.telemetry import Telemetry, setup_tracing

log = logging.getLogger("lading.gateway")

# Deadline of each plane's health check behind /readyz: probes want a quick answer, not a hang.
READINESS_TIMEOUT_SECONDS = 1.0


def create_app(settings: Settings, *, drain: Drain | None = None, telemetry: Telemetry | None = None,
               freeze_start_up: bool = False) -> Starlette:
    """The gateway app for `settings`. Nothing connects until the lifespan starts.

    `drain` is the flag the server sets when it starts shutting down (then /readyz answers 503);
    the app gets one of its own when none is given. `telemetry` (tracing) is built from
    `settings.observability` when not given; the lifespan's end flushes it. The lifespan also
    serves the metrics on `observability.gateway_metrics_listen` when set (off the public port).
    `freeze_start_up`: the process is the gateway's (not a test's), so once the lifespan has wired
    everything, before the server accepts, its objects are frozen out of garbage collection
    (services/common/start_up.py).
    """
    config = settings.gateway
    observability = settings.observability
    drain = drain or Drain()
    telemetry = telemetry if telemetry is not None else setup_tracing(settings.observability, "gateway")
    interceptors = telemetry.client_interceptors()
    metrics = Metrics("gateway") if observability.gateway_metrics or observability.gateway_metrics_listen else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # First, so that an address it cannot bind stops the gateway before anything else opens.
        metrics_server = None
        if metrics is not None and observability.gateway_metrics_listen:
            metrics_server = await MetricsHttpServer(
                metrics, observability.gateway_metrics_listen, reuse_port=config.workers > 1
            ).start()
        # Channels connect lazily: the gateway starts even if a plane is not up yet and answers
        # 503 until it is.
        metadata_channel = open_channel(
            config.metadata_target, METADATA_SERVICE, METADATA_READS, config.grpc, interceptors
        )
        blob_channel = open_channel(config.blob_target, BLOB_SERVICE, BLOB_READS, config.grpc, interceptors)
        gateway = Gateway(
            settings=config,
            metadata=MetadataClient(metadata_channel, timeout=config.grpc.timeout_seconds),
            blob=BlobClient(
                blob_channel,
                timeout=config.grpc.timeout_seconds,
                stream_timeout=config.grpc.stream_timeout_seconds,
            ),
            readiness=Readiness(
                [
                    PlaneCheck("metadata", metadata_channel, METADATA_SERVICE),
                    PlaneCheck("blob", blob_channel, BLOB_SERVICE),
                ],
                timeout_seconds=min(READINESS_TIMEOUT_SECONDS, config.grpc.timeout_seconds),
                drain=drain,
            ),
            auth=build_auth(settings.auth, metadata_channel, timeout=config.grpc.timeout_seconds, metrics=metrics),
            manifests=ManifestCache(
                ttl_seconds=settings.gateway.manifest_cache_ttl_seconds,
                max_bytes=settings.gateway.manifest_cache_bytes,
                max_entry_bytes=settings.gateway.manifest_cache_max_entry_bytes,
            ),
            maintenance=MaintenanceGate(metadata_channel, ttl_seconds=config.maintenance_check_seconds),
        )
        # Change streams get a channel of their own: their subscription attempts while the metadata
        # plane starts must not put the data calls' connections into reconnection backoff.
        feed_channel = open_channel(config.metadata_target, METADATA_SERVICE, METADATA_READS, config.grpc,
                                    interceptors, own_connections=True)
        gateway = dataclasses.replace(gateway, changes=feed_channel)
        cache_feed = None
        if gateway.manifests is not None and gateway.manifests.enabled and config.cache_feed.enabled:
            cache_feed = CacheFeed(feed_channel, config.cache_feed, gateway.manifests, metrics=metrics)
            cache_feed.start()  # drops what other gateways changed (gateway/cache_feed.py)
        if settings.console.enabled:
            gateway = dataclasses.replace(gateway, console=build_console(settings, metadata_channel, gateway.auth))
        if gateway.auth is not None:
            gateway.auth.start()  # follows account revocations (gateway/auth/change_feed.py)
        if freeze_start_up:
            start_up.freeze_start_up("gateway")
        try:
            yield {STATE_KEY: gateway}
        finally:
            try:
                # Bounded as a whole: each close has its own bound, and a stop must not wait for
                # ever on a plane or client that is gone (gateway/main.py has the last word).
                async with asyncio.timeout(config.shutdown_cleanup_seconds):
                    if metrics_server is not None:
                        await metrics_server.close()
                    if gateway.auth is not None:
                        await gateway.auth.close()
                    if cache_feed is not None:
                        await cache_feed.close()
                    await feed_channel.close()
                    await blob_channel.close()
                    await metadata_channel.close()
            except TimeoutError:
                log.warning("closing the gateway's streams and channels took over %g s; stopping without them",
                            config.shutdown_cleanup_seconds)
            finally:
                telemetry.shutdown()

    routes = build_routes()
    middleware: list[Middleware] = []
    tracing = telemetry.asgi_middleware()
    if tracing is not None:
        middleware.append(Middleware(tracing[0], **tracing[1]))
    if metrics is not None or tracing is not None or observability.log_format == "json":
        middleware.append(Middleware(
            ObservabilityMiddleware, routes=routes, metrics=metrics, serve_metrics=observability.gateway_metrics
        ))
    return Starlette(
        routes=routes,
        middleware=[
            *middleware,
            Middleware(ApiVersionMiddleware),
            Middleware(ForwardedHeadersMiddleware, trusted=TrustedProxies(config.trusted_proxies)),
            Middleware(BodyReadTimeoutMiddleware, timeout_seconds=config.body_read_timeout_seconds),
        ],
        lifespan=lifespan,
    )
