"""Builds the PolicyService of the metadata process from Settings (used by main.py)."""

from __future__ import annotations

import grpc
from lading.metadata.v1 import policies_pb2_grpc

from services.common.settings import Settings
from services.metadata.core import MetadataCore
from services.metadata.policies.core import PolicyCore
from services.metadata.policies.servicer import PolicyServicer
from services.metadata.policies.store import PolicyStore
from services.metadata.store.engine import Database

POLICY_SERVICE_NAME = "lading.metadata.v1.PolicyService"


def build_policies(settings: Settings, database: Database, metadata: MetadataCore) -> PolicyServicer:
    core = PolicyCore(PolicyStore(database), metadata, override_seconds=settings.governance.override_seconds)
    return PolicyServicer(core)


def add_to_server(servicer: PolicyServicer, server: grpc.aio.Server) -> None:
    policies_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
