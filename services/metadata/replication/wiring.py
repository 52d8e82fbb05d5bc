"""Builds the replicators of `[[replication.rules]]` (services/metadata/main.py)."""

from __future__ import annotations

import grpc

from services.common.settings import ReplicationSettings
from services.metadata.replication.replicator import ENDPOINT_PREFIX, Replicator, with_replication_endpoints
from services.metadata.store.base import MetadataStore

__all__ = ["build_replicators", "with_replication_endpoints"]


def build_replicators(settings: ReplicationSettings, store: MetadataStore, blob_channel: grpc.aio.Channel | None,
                      *, parse_inline_max_bytes: int) -> dict[str, Replicator]:
    """Event endpoint name → its replicator (empty without rules: nothing is loaded)."""
    return {f"{ENDPOINT_PREFIX}{rule.name}": Replicator(rule, store, blob_channel,
                                                        parse_inline_max_bytes=parse_inline_max_bytes)
            for rule in settings.rules}
