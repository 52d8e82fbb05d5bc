"""What every resource handler receives besides the request: settings and the plane clients."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clients import BlobClient, MetadataClient
from services.common.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class Gateway:
    """Built once per process by the app's lifespan; shared (read-only) by all requests."""

    settings: GatewaySettings
    metadata: MetadataClient
    blob: BlobClient
