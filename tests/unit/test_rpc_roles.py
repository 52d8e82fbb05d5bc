"""The method → role table (services/common/rpc_roles.py) covers every RPC the planes serve, and
the access policy decides by it: a new RPC without a line in the table fails here, and is refused
to everyone until it has one."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.access import AccessConfigError, AccessPolicy, build_access_policy
from services.common.protogen import PROTO_ROOT, proto_sources
from services.common.rpc_roles import OPEN, ROLES, SERVICE_ROLES, method_roles
from services.common.settings import GrpcAccessSettings, GrpcTlsSettings, RoleCredentials


def generated_services() -> dict[str, list[str]]:
    """Every service in the generated descriptors under protos/ (plus grpc.health.v1) → its methods."""
    modules = [health_pb2]
    for source in proto_sources():
        relative = source.relative_to(PROTO_ROOT)
        modules.append(importlib.import_module(".".join(relative.with_suffix("").parts) + "_pb2"))
    services = {}
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = [method.name for method in service.methods]
    return services


def test_every_rpc_of_every_service_has_roles() -> None:
    services = generated_services()
    assert {"lading.metadata.v1.AccountService", "lading.blob.v1.BlobService", "grpc.health.v1.Health"} <= set(services)
    missing = [f"{service}/{method}" for service, methods in services.items() for method in methods
               if method not in SERVICE_ROLES.get(service, {})]
    assert not missing, f"add these RPCs to services/common/rpc_roles.py with the roles that may call them: {missing}"


def test_the_table_names_only_real_rpcs_and_roles() -> None:
    services = generated_services()
    stale = [f"{service}/{method}" for service, methods in SERVICE_ROLES.items() for method in methods
             if method not in services.get(service, [])]
    assert not stale, f"no such RPC: {stale}"
    for service, methods in SERVICE_ROLES.items():
        for method, roles in methods.items():
            assert roles <= set(ROLES), f"{service}/{method}: unknown role in {roles}"
            # Only health is open to callers without any identity.
            assert roles or service == "grpc.health.v1.Health", f"{service}/{method} needs a role"
    assert all(roles == OPEN for roles in SERVICE_ROLES["grpc.health.v1.Health"].values())


def caller(policy: AccessPolicy, *, token: str | None = None, peer: str = "ipv4:10.0.0.9:4000",
           certificate: dict[str, list[bytes]] | None = None):  # type: ignore[no-untyped-def]
    context = SimpleNamespace(peer=lambda: peer, auth_context=lambda: certificate or {})
    metadata = [("authorization", f"Bearer {token}")] if token else []
    return policy.identify(context, metadata)  # type: ignore[arg-type]


def test_an_rpc_missing_from_the_table_is_refused_to_everyone() -> None:
    policy = AccessPolicy(methods=method_roles(), allow_unauthenticated=True)
    everyone = caller(policy, peer="unix:")
    decision = policy.refusal("/lading.metadata.v1.AccountService/MakeEveryoneAdmin", everyone)
    assert decision is not None and decision[0] == grpc.StatusCode.PERMISSION_DENIED
    assert "in no role's list" in decision[1]


def test_tokens_and_certificate_names_grant_their_roles(tmp_path: Path) -> None:
    gateway_token, operator_token = "g" * 40, "o" * 40
    (tmp_path / "gateway").write_text(f"{gateway_token}\n")
    # Two operator tokens during a rotation.
    (tmp_path / "operator").write_text(f"{'p' * 40}\n\n{operator_token}\n")
    settings = GrpcAccessSettings(
        gateway=RoleCredentials(token_file=tmp_path / "gateway", certificate_names=["lading-gateway"]),
        operator=RoleCredentials(token_file=tmp_path / "operator", certificate_names=["spiffe://x/ops"]),
    )
    mutual = GrpcTlsSettings(enabled=True, require_client_cert=True)
    policy = build_access_policy(settings, listen="0.0.0.0:50051", tls=mutual, plane="metadata")
    create = "/lading.metadata.v1.AccountService/CreateUser"
    assert policy.refusal(create, caller(policy, token=operator_token)) is None
    assert policy.refusal(create, caller(policy, token="p" * 40)) is None
    refused = policy.refusal(create, caller(policy, token=gateway_token))
    assert refused is not None and refused[0] == grpc.StatusCode.PERMISSION_DENIED
    refused = policy.refusal(create, caller(policy, token="q" * 40))
    assert refused is not None and refused[0] == grpc.StatusCode.UNAUTHENTICATED
    by_uri = {"x509_subject": [b"CN=laptop"], "x509_common_name": [b"laptop"],
              "x509_subject_alternative_name": [b"spiffe://x/ops"]}
    assert policy.refusal(create, caller(policy, certificate=by_uri)) is None
    by_cn = {"x509_subject": [b"CN=lading-gateway"], "x509_common_name": [b"lading-gateway"]}
    assert caller(policy, certificate=by_cn).roles == {"gateway"}
    # A unix socket peer is trusted by default.
    assert policy.refusal(create, caller(policy, peer="unix:")) is None


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "127.0.0.1:50051", "[::]:50051", "dns:///x:1"])
def test_tcp_without_any_identity_is_refused_at_start(listen: str) -> None:
    with pytest.raises(AccessConfigError, match="allow_unauthenticated"):
        build_access_policy(GrpcAccessSettings(), listen=listen, tls=None, plane="metadata")
    assert build_access_policy(GrpcAccessSettings(allow_unauthenticated=True), listen=listen, tls=None,
                               plane="metadata").allow_unauthenticated


def test_a_unix_socket_is_trusted_unless_told_otherwise() -> None:
    policy = build_access_policy(GrpcAccessSettings(), listen="unix:/run/x.sock", tls=None, plane="blob")
    assert policy.all_peers_trusted
    with pytest.raises(AccessConfigError, match="a unix socket whose peers are not trusted"):
        build_access_policy(GrpcAccessSettings(trust_unix_socket_peers=False), listen="unix:/run/x.sock",
                            tls=None, plane="blob")
