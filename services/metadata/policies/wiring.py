"""Builds the PolicyService of the metadata process from Settings (used by main.py)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from lading.metadata.v1 import policies_pb2_grpc

from services.common.metrics import Metrics
from services.common.settings import Settings
from services.metadata.changes.repositories import RepositoryChanges
from services.metadata.core import MetadataCore
from services.metadata.events.outbox import EventOutbox
from services.metadata.gc.store import GcStore
from services.metadata.policies.core import PolicyCore
from services.metadata.policies.pruning import RecordPruner
from services.metadata.policies.retention import Retention
from services.metadata.policies.servicer import PolicyServicer
from services.metadata.policies.signatures import ReadBlob, SignatureGate
from services.metadata.policies.store import PolicyStore
from services.metadata.policies.vulnerabilities import VulnerabilityGate
from services.metadata.store.engine import Database

POLICY_SERVICE_NAME = "lading.metadata.v1.PolicyService"


@dataclass
class PolicyParts:
    store: PolicyStore
    servicer: PolicyServicer
    retention: Retention | None = None
    # Deletes audit and tag history rows past their retention (main.py starts it outside replica regions).
    pruner: RecordPruner | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        policies_pb2_grpc.add_PolicyServiceServicer_to_server(self.servicer, server)

    def register_metrics(self, metrics: Metrics) -> None:
        """Per-quota gauges, read from the (small) quotas table at each scrape."""
        async def quotas_by(field: str) -> dict[tuple[str, ...], float]:
            return {(q.name,): float(getattr(q, field)) for q in await self.store.list_quotas()}

        metrics.register_gauge_callback("lading_quota_used_bytes", "bytes of distinct blobs counted in each quota",
                                        lambda: quotas_by("used_bytes"), labels=("quota",))
        metrics.register_gauge_callback("lading_quota_limit_bytes", "each quota's limit in bytes",
                                        lambda: quotas_by("limit_bytes"), labels=("quota",))
        pruner = self.pruner
        if pruner is not None and pruner.enabled:
            metrics.register_gauge_callback(
                "lading_pruned_records_total", "audit log and tag history rows deleted past their retention",
                lambda: {("audit",): float(pruner.audit_rows_deleted),
                         ("tag_history",): float(pruner.history_rows_deleted)}, labels=("table",))


def blob_reader(channel: grpc.aio.Channel) -> ReadBlob:
    """A blob's bytes over BlobService.ReadBlob (small blobs: cosign signature payloads)."""
    from lading.blob.v1 import blob_pb2, blob_pb2_grpc

    from services.common.errors import from_rpc_error

    stub = blob_pb2_grpc.BlobServiceStub(channel)

    async def read(digest: str) -> bytes:
        chunks = []
        try:
            async for message in stub.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest, length=1 << 20), timeout=10):
                chunks.append(message.data)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return b"".join(chunks)

    return read


def build_policies(settings: Settings, database: Database, metadata: MetadataCore, *, gc: GcStore | None = None,
                   events: EventOutbox | None = None, read_blob: ReadBlob | None = None,
                   changes: RepositoryChanges | None = None) -> PolicyParts:
    """`gc`: holds what retention deletes for GC's review delay; `events`: its delete events;
    `read_blob`: cosign signature payloads, for signature policies with keys; `changes`: the
    change feed, so gateway caches drop what retention deleted."""
    store = PolicyStore(database)
    retention = Retention(store, gc, events, changes)
    # Signature and vulnerability policies apply to pulls through the MetadataCore (services/metadata/core.py).
    cache = settings.governance.policy_cache_seconds
    signatures = SignatureGate(store.read, store.rows, read_blob, cache_seconds=cache)
    vulnerabilities = VulnerabilityGate(store.read, store.rows, read_blob, cache_seconds=cache)
    metadata.pull_gates = [signatures, vulnerabilities]
    core = PolicyCore(store, metadata, override_seconds=settings.governance.override_seconds, retention=retention,
                      signatures=signatures, vulnerabilities=vulnerabilities)
    return PolicyParts(store, PolicyServicer(core), retention, RecordPruner(database, settings.governance))
