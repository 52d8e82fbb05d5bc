"""The gateway's ASGI app: `create_app(settings)` builds it; its lifespan owns the gRPC channels.

Middleware (outermost first): the API-version header on every response, then trusted
X-Forwarded-* handling, then the request-body read timeout (gateway.bodies). All pure ASGI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway.auth.setup import build_auth
from gateway.bodies import BodyReadTimeoutMiddleware
from gateway.channels import BLOB_READS, BLOB_SERVICE, METADATA_READS, METADATA_SERVICE, open_channel
from gateway.clients import BlobClient, MetadataClient
from gateway.context import Gateway
from gateway.manifest_cache import ManifestCache
from gateway.middleware import ApiVersionMiddleware, ForwardedHeadersMiddleware, TrustedProxies
from gateway.readiness import Drain, PlaneCheck, Readiness
from gateway.routes import STATE_KEY, build_routes
from services.common.settings import Settings

# Deadline of each plane's health check behind /readyz: probes want a quick answer, not a hang.
READINESS_TIMEOUT_SECONDS = 1.0


def create_app(settings: Settings, *, drain: Drain | None = None) -> Starlette:
    """The gateway app for `settings`. Nothing connects until the lifespan starts.

    `drain` is the flag the server sets when it starts shutting down (then /readyz answers 503);
    the app gets one of its own when none is given.
    """
    config = settings.gateway
    drain = drain or Drain()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Channels connect lazily: the gateway starts even if a plane is not up yet and answers
        # 503 until it is.
        metadata_channel = open_channel(config.metadata_target, METADATA_SERVICE, METADATA_READS, config.grpc)
        blob_channel = open_channel(config.blob_target, BLOB_SERVICE, BLOB_READS, config.grpc)
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
            auth=build_auth(settings.auth, metadata_channel, timeout=config.grpc.timeout_seconds),
            manifests=ManifestCache(
                ttl_seconds=settings.gateway.manifest_cache_ttl_seconds,
                max_bytes=settings.gateway.manifest_cache_bytes,
                max_entry_bytes=settings.gateway.manifest_cache_max_entry_bytes,
            ),
        )
        try:
            yield {STATE_KEY: gateway}
        finally:
            await blob_channel.close()
            await metadata_channel.close()

    return Starlette(
        routes=build_routes(),
        middleware=[
            Middleware(ApiVersionMiddleware),
            Middleware(ForwardedHeadersMiddleware, trusted=TrustedProxies(config.trusted_proxies)),
            Middleware(BodyReadTimeoutMiddleware, timeout_seconds=config.body_read_timeout_seconds),
        ],
        lifespan=lifespan,
    )
