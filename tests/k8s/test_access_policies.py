"""The production overlay's access control between planes: mutual TLS everywhere with a role per
certificate (the settings each plane would really start with), certificates that cert-manager's
example issues under the names the overlay mounts and maps, and NetworkPolicies that let only
gateway → metadata/blob, metadata → blob and the migration Job → PostgreSQL through (checked by
evaluating the rendered policies, as a network plugin would)."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any

import pytest

from services.common.access import AccessConfigError, build_access_policy
from services.common.settings import Settings
from tests.k8s.render import K8S, Obj, container_env, load_file, named, of_kind, pod_spec, render
from tests.k8s.test_manifests import _secret_behind_file

GRPC_PORTS = {"metadata": 50051, "blob": 50052}
NAMESPACE = "lading"
CERT_MANAGER = K8S / "examples" / "cert-manager.yaml"


@pytest.fixture(scope="module")
def production() -> list[Obj]:
    return render(K8S / "overlays" / "production")


def _deployment(objects: list[Obj], plane: str) -> Obj:
    return named(objects, "Deployment", f"lading-{plane}")


def _env(objects: list[Obj], plane: str) -> dict[str, Any]:
    (container,) = pod_spec(_deployment(objects, plane))["containers"]
    return container_env(objects, container)


def _settings(env: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container with `env` starts with (values from Secrets stubbed)."""
    for name in [n for n in os.environ if n.startswith("LADING_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("LADING_"):
            value = "secret" if isinstance(value, dict) else value.replace("$(POD_NAMESPACE)", NAMESPACE)
            monkeypatch.setenv(name, value)
    return Settings()


# --- mutual TLS and roles -------------------------------------------------------------------------


@pytest.mark.parametrize("plane", sorted(GRPC_PORTS))
def test_production_planes_require_client_certificates_and_map_them_to_roles(
    production: list[Obj], plane: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _deployment(production, plane)
    (container,) = pod_spec(deployment)["containers"]
    env = _env(production, plane)
    settings = _settings(env, monkeypatch)
    tls = getattr(settings, plane).tls
    assert tls.enabled and tls.require_client_cert, plane
    secret = f"lading-{plane}-grpc-tls"
    for field, key in (("cert_file", "tls.crt"), ("key_file", "tls.key"), ("ca_file", "ca.crt")):
        assert _secret_behind_file(deployment, container, str(getattr(tls, field))) == (secret, key)
    callers = {"metadata": {"gateway", "operator"}, "blob": {"gateway", "operator", "metadata"}}[plane]
    access = settings.grpc_access
    assert {role for role in ("gateway", "operator", "metadata") if getattr(access, role).certificate_names} == callers
    assert not access.allow_unauthenticated
    # The plane's own start-up check passes (it reads no file for certificate names).
    policy = build_access_policy(access, listen=getattr(settings, plane).listen, tls=tls, plane=plane)
    assert not policy.allow_unauthenticated and policy.certificate_roles


def test_production_callers_present_their_certificates(production: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = _deployment(production, "gateway")
    (container,) = pod_spec(gateway)["containers"]
    settings = _settings(_env(production, "gateway"), monkeypatch)
    client = settings.gateway.grpc.tls
    assert client.enabled
    assert _secret_behind_file(gateway, container, str(client.cert_file)) == ("lading-gateway-grpc-tls", "tls.crt")
    assert _secret_behind_file(gateway, container, str(client.ca_file)) == ("lading-gateway-grpc-tls", "ca.crt")

    metadata = _deployment(production, "metadata")
    (container,) = pod_spec(metadata)["containers"]
    settings = _settings(_env(production, "metadata"), monkeypatch)
    assert settings.gc.blob_target == f"dns:///lading-blob-headless.{NAMESPACE}.svc.cluster.local:{GRPC_PORTS['blob']}"
    assert settings.gc.blob_tls.enabled
    assert _secret_behind_file(metadata, container, str(settings.gc.blob_tls.key_file)) == (
        "lading-metadata-grpc-tls", "tls.key")


def test_the_base_alone_would_not_accept_anyone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base listens on 0.0.0.0 without credentials: its planes refuse to start until an
    overlay says who may call them (it is not a deployment on its own)."""
    base = render(K8S / "base")
    for plane in GRPC_PORTS:
        settings = _settings(_env(base, plane), monkeypatch)
        with pytest.raises(AccessConfigError, match="no caller could be identified"):
            build_access_policy(settings.grpc_access, listen=getattr(settings, plane).listen,
                                tls=getattr(settings, plane).tls, plane=plane)


def test_cert_manager_example_issues_what_the_overlay_mounts_and_maps(
    production: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    certificates = {c["spec"]["secretName"]: c["spec"] for c in load_file(CERT_MANAGER) if c["kind"] == "Certificate"}
    mounted = {v["secret"]["secretName"] for d in of_kind(production, "Deployment")
               for v in pod_spec(d).get("volumes", []) if "secret" in v}
    assert {name for name in mounted if name.endswith("-grpc-tls")} <= set(certificates)
    # Each role's certificate carries the name the planes map to that role.
    names: dict[str, set[str]] = {}
    for plane in GRPC_PORTS:
        access = _settings(_env(production, plane), monkeypatch).grpc_access
        for role in ("gateway", "operator", "metadata"):
            names.setdefault(role, set()).update(getattr(access, role).certificate_names)
    for role, secret in (("gateway", "lading-gateway-grpc-tls"), ("metadata", "lading-metadata-grpc-tls"),
                         ("operator", "lading-operator-grpc-tls")):
        assert names[role] == {certificates[secret]["commonName"]}, role
        assert "client auth" in certificates[secret]["usages"], role
    # Servers' certificates name the hosts their callers dial.
    gateway_env = _settings(_env(production, "gateway"), monkeypatch).gateway
    metadata_env = _settings(_env(production, "metadata"), monkeypatch).gc
    for plane, target in (("metadata", gateway_env.metadata_target), ("blob", gateway_env.blob_target),
                          ("blob", metadata_env.blob_target)):
        host = target.removeprefix("dns:///").rsplit(":", 1)[0]
        spec = certificates[f"lading-{plane}-grpc-tls"]
        assert host in spec["dnsNames"] and "server auth" in spec["usages"], (plane, host)
    for spec in certificates.values():
        assert spec["issuerRef"]["name"] in {"lading-grpc-ca", "lading-selfsigned"}


# --- network policies -----------------------------------------------------------------------------

# Endpoints as (labels, namespace, address): pods of the overlay, another pod of the cluster, and
# hosts outside it (a PostgreSQL server, an S3 endpoint).
Endpoint = tuple[dict[str, str], str, str]


def _pod(component: str) -> Endpoint:
    return {"app.kubernetes.io/name": "lading", "app.kubernetes.io/component": component}, NAMESPACE, "10.1.0.1"


STRANGER: Endpoint = ({"app": "something-else"}, NAMESPACE, "10.1.0.9")
OUTSIDE: Endpoint = ({}, "", "203.0.113.7")


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the evaluator only knows matchLabels: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: Mapping[str, Any], endpoint: Endpoint) -> bool:
    labels, namespace, address = endpoint
    if "ipBlock" in peer:
        return ipaddress.ip_address(address) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if not namespace:
        return False  # outside the cluster: only ipBlocks (or "anywhere") match
    if "namespaceSelector" in peer:
        namespace_ok = _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        namespace_ok = namespace == NAMESPACE
    return namespace_ok and _matches(peer.get("podSelector", {}), labels)


def _rule_allows(rule: Mapping[str, Any], side: str, endpoint: Endpoint, port: int) -> bool:
    peers = rule.get(side)
    ports = rule.get("ports")
    port_ok = ports is None or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
    return port_ok and (peers is None or any(_peer_matches(peer, endpoint) for peer in peers))


def _allowed(policies: list[Obj], source: Endpoint, target: Endpoint, port: int) -> bool:
    """Whether a TCP connection from `source` to `target`:`port` gets through: the source's egress
    and the target's ingress must both allow it (a side no policy selects is open)."""

    def direction_allows(endpoint: Endpoint, kind: str, side: str, peer: Endpoint) -> bool:
        labels, namespace, _ = endpoint
        if namespace != NAMESPACE:
            return True  # not ours to police
        selecting = [p for p in policies if _matches(p["spec"]["podSelector"], labels)
                     and kind.capitalize() in p["spec"].get("policyTypes", [])]
        if not selecting:
            return True
        return any(_rule_allows(rule, side, peer, port) for p in selecting for rule in p["spec"].get(kind, []))

    return direction_allows(source, "egress", "to", target) and direction_allows(target, "ingress", "from", source)


def test_network_policies_let_only_the_planned_connections_through(production: list[Obj]) -> None:
    policies = of_kind(production, "NetworkPolicy")
    assert policies
    gateway, metadata, blob, migrate = (_pod(c) for c in ("gateway", "metadata", "blob", "migrate"))
    metadata_port, blob_port = GRPC_PORTS["metadata"], GRPC_PORTS["blob"]
    expected = {
        # who → whom, port: allowed
        ("gateway", "metadata", metadata_port): True,
        ("gateway", "blob", blob_port): True,
        ("metadata", "blob", blob_port): True,
        ("metadata", "postgres", 5432): True,
        ("migrate", "postgres", 5432): True,
        ("blob", "s3", 443): True,
        ("outside", "gateway", 5000): True,
        ("stranger", "metadata", metadata_port): False,
        ("stranger", "blob", blob_port): False,
        ("outside", "metadata", metadata_port): False,
        ("blob", "metadata", metadata_port): False,
        ("migrate", "metadata", metadata_port): False,
        ("migrate", "blob", blob_port): False,
        ("metadata", "gateway", 5000): False,
        ("gateway", "metadata", 50061): False,  # the health port is the kubelet's (always allowed)
        ("gateway", "postgres", 5432): False,
        ("blob", "postgres", 5432): False,
        ("gateway", "s3", 443): False,
        ("metadata", "s3", 443): False,
        ("migrate", "s3", 443): False,
    }
    endpoints = {"gateway": gateway, "metadata": metadata, "blob": blob, "migrate": migrate,
                 "stranger": STRANGER, "outside": OUTSIDE, "postgres": OUTSIDE, "s3": OUTSIDE}
    wrong = {case: want for case, want in expected.items()
             if _allowed(policies, endpoints[case[0]], endpoints[case[1]], case[2]) != want}
    assert not wrong, f"connections the policies get wrong (expected): {json.dumps([list(k) for k in wrong])}"


def test_every_pod_is_isolated_and_may_resolve_names(production: list[Obj]) -> None:
    policies = of_kind(production, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
            and not p["spec"].get("egress")]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    dns = {"k8s-app": "kube-dns"}, "kube-system", "10.96.0.10"
    for component in ("gateway", "metadata", "blob", "migrate"):
        labels = _pod(component)
        selected = [p for p in policies if p["spec"]["podSelector"] and _matches(p["spec"]["podSelector"], labels[0])]
        assert selected, f"no NetworkPolicy names the {component} pods"
        egress_rules = [r for p in policies if _matches(p["spec"]["podSelector"], labels[0])
                        for r in p["spec"].get("egress", [])]
        assert any(_rule_allows(r, "to", dns, 53) for r in egress_rules), component
    # Every workload's pods are selected by name, so a relabelled Deployment cannot slip out.
    for workload in of_kind(production, "Deployment") + of_kind(production, "Job"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(p["spec"]["podSelector"] and _matches(p["spec"]["podSelector"], labels) for p in policies), (
            workload["metadata"]["name"])
