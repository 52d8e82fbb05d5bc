"""What every resource handler receives besides the request: settings and the plane clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from gateway.clients import BlobClient, MetadataClient
from gateway.maintenance import MaintenanceGate
from gateway.manifest_cache import ManifestCache
from gateway.readiness import Readiness
from services.common.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.auth.gate import AuthGate
    from gateway.console.context import Console


@dataclass(frozen=True, slots=True)
class Gateway:
    """Built once per process by the app's lifespan; shared (read-only) by all requests."""

    settings: GatewaySettings
    metadata: MetadataClient
    blob: BlobClient
    # Checks both planes for /readyz; None in tests that build a Gateway by hand.
    readiness: Readiness | None = None
    # Access control; None when auth is off (the default).
    auth: AuthGate | None = None
    # Recent manifest GET/HEAD answers (gateway.manifest_cache); None disables caching.
    manifests: ManifestCache | None = None
    # Read-only maintenance mode for uploads (gateway.maintenance); None: never checked.
    maintenance: MaintenanceGate | None = None
    # The web console under /ui/ (gateway.console); None when `console.enabled` is false.
    console: Console | None = None
    # A metadata-plane channel with connections of its own for ChangeService streams (the cache
    # feed, `GET /lading/v1/watch`); None in tests that build a Gateway by hand.
    changes: grpc.aio.Channel | None = None
