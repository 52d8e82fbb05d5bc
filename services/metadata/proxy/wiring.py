"""Builds the metadata plane's pull-through cache from settings (services/metadata/main.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from services.common.settings import ProxySettings
from services.common.upstream import Upstreams
from services.metadata.core import MetadataCore
from services.metadata.proxy.cache import ProxyCache
from services.metadata.proxy.mirror import MirrorLoop
from services.metadata.proxy.servicer import SERVICE_NAME, ProxyServicer, add_to_server
from services.metadata.store.base import MetadataStore
from services.metadata.store.engine import Database

PROXY_SERVICE_NAME = SERVICE_NAME


def build_upstreams(settings: ProxySettings, *, metrics: Any = None, tracer: Any = None) -> Upstreams | None:
    """The configured upstreams, or None (no HTTP client is loaded then)."""
    return Upstreams.build(settings, metrics=metrics, tracer=tracer)


@dataclass
class ProxyWiring:
    cache: ProxyCache | None
    upstreams: Upstreams | None
    mirrors: MirrorLoop | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        add_to_server(ProxyServicer(self.cache), server)

    def start(self) -> None:
        if self.mirrors is not None:
            self.mirrors.start()

    async def close(self) -> None:
        if self.mirrors is not None:
            await self.mirrors.close()
        if self.upstreams is not None:
            await self.upstreams.aclose()


def build_proxy(upstreams: Upstreams | None, settings: ProxySettings, *, core: MetadataCore,
                store: MetadataStore, database: Database, blob_channel: grpc.aio.Channel | None = None
                ) -> ProxyWiring:
    """`blob_channel`: the metadata plane's channel to the blob plane (gc.blob_target), which
    `[[proxy.mirrors]]` fetch blobs through."""
    if upstreams is None:
        return ProxyWiring(None, None)
    cache = ProxyCache(upstreams, settings, core, store, database)
    mirrors = MirrorLoop(cache, settings.mirrors, blob_channel) if settings.mirrors else None
    return ProxyWiring(cache, upstreams, mirrors)
