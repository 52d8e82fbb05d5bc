"""gRPC channels from the gateway to the planes.

Each channel uses the shared CHANNEL_OPTIONS plus a service config that
- spreads calls over every address a `dns:///` target resolves to (`lb_policy`, `round_robin` by
  default), so new replicas take load without restarting gateways;
- retries idempotent reads (and only those) on UNAVAILABLE, up to `max_attempts` in all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc

from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import GrpcClientSettings

METADATA_SERVICE = "lading.metadata.v1.MetadataService"
BLOB_SERVICE = "lading.blob.v1.BlobService"

# Reads that may safely run twice. Writes are not retried by the channel: they carry identities
# (upload id + offset, manifest digest) so that a client may retry them itself.
METADATA_READS = ("StatBlob", "GetManifest", "ListTags", "ListRepositories", "ListReferrers")
BLOB_READS = ("StatBlob", "ReadBlob", "GetUploadStatus")

# gRPC caps retry attempts at 5 whatever the config says.
_GRPC_MAX_ATTEMPTS = 5


def service_config(service: str, reads: Iterable[str], settings: GrpcClientSettings) -> dict[str, Any]:
    """The JSON service config for one plane's channel (see gRPC's service_config.md)."""
    config: dict[str, Any] = {"loadBalancingConfig": [{settings.lb_policy: {}}]}
    attempts = min(settings.max_attempts, _GRPC_MAX_ATTEMPTS)
    if attempts >= 2:
        config["methodConfig"] = [
            {
                "name": [{"service": service, "method": method} for method in reads],
                "retryPolicy": {
                    "maxAttempts": attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return config


def channel_options(
    service: str, reads: Iterable[str], settings: GrpcClientSettings
) -> list[tuple[str, Any]]:
    keepalive_ms = settings.keepalive_seconds * 1000
    options = [(key, value) for key, value in CHANNEL_OPTIONS if key != "grpc.keepalive_time_ms"]
    options += [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config(service, reads, settings))),
    ]
    return options


def open_channel(
    target: str, service: str, reads: Iterable[str], settings: GrpcClientSettings
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to `target` (gRPC target syntax: host:port, dns:///, unix:)."""
    return grpc.aio.insecure_channel(target, options=channel_options(service, reads, settings))
