"""gRPC channels from the gateway to the planes.

Each channel uses the shared CHANNEL_OPTIONS plus a service config that
- spreads calls over every address a `dns:///` target resolves to (`lb_policy`, `round_robin` by
  default), so new replicas take load without restarting gateways;
- retries idempotent reads (and only those) on UNAVAILABLE, up to `max_attempts` in all.
With `settings.tls.enabled` the channel speaks TLS (a CA bundle, optionally a client certificate
for mutual TLS; services/common/tls.py); otherwise plaintext (unix sockets, a mesh that encrypts).
The gateway's identity on the planes (the `gateway` role, services/common/access.py) is its client
certificate, or the bearer token in `settings.token_file`, sent with every call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from services.common.bearer import token_file_interceptors
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import GrpcClientSettings
from services.common.tls import channel_credentials
from services.common.tls import channel_options as tls_channel_options

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
        # gRPC's default reconnect backoff grows to 120 s: a replica that comes back after an
        # outage would sit idle that long. Replicas restart in seconds, so retry sooner.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", settings.max_reconnect_backoff_ms),
        ("grpc.service_config", json.dumps(service_config(service, reads, settings))),
    ]
    return options + tls_channel_options(settings.tls)


def open_channel(
    target: str,
    service: str,
    reads: Iterable[str],
    settings: GrpcClientSettings,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    *,
    own_connections: bool = False,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` (gRPC target syntax: host:port, dns:///, unix:): TLS when
    `settings.tls.enabled`, else plaintext; `interceptors` (tracing) wrap every call, then the
    bearer token of `settings.token_file` is added to it. Raises TlsConfigError for unusable TLS
    settings, AccessConfigError for an unreadable or empty token file.

    `own_connections`: connections of its own, not shared with other channels to the same target
    (gRPC shares them by default): a long-lived stream that subscribes before the plane is up
    (the change feed) then never pushes the data calls' channel into its reconnection backoff."""
    options = channel_options(service, reads, settings)
    if own_connections:
        options.append(("grpc.use_local_subchannel_pool", 1))
    chain = [*interceptors, *token_file_interceptors(settings.token_file, "gateway.grpc.token_file")] or None
    if settings.tls.enabled:
        credentials = channel_credentials(settings.tls, section="gateway.grpc.tls")
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=chain)
    return grpc.aio.insecure_channel(target, options=options, interceptors=chain)
