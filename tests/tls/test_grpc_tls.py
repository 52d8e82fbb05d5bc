"""gRPC between planes over mutual TLS: real blob and metadata processes on TCP ports, the
gateway's own channels, and the connections that must be refused."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from gateway.channels import BLOB_READS, BLOB_SERVICE, open_channel
from services.common.settings import GrpcClientSettings, GrpcTlsSettings
from services.common.tls import TlsConfigError, channel_credentials, channel_options, server_credentials
from tests.support.stack import LadingProcess, free_port, lading_command, running, wait_until_http_ok
from tests.tls.pki import KeyPair, Pki

BLOB = "lading.blob.v1.BlobService"
METADATA = "lading.metadata.v1.MetadataService"
WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Certs:
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    # Signed by another CA: neither side may accept it.
    rogue_ca: KeyPair
    rogue_client: KeyPair
    rogue_server: KeyPair
    # Valid for the name "blob.internal" only (not 127.0.0.1).
    named_server: KeyPair
    # Client certificates of the other roles (the planes map CN=operator and CN=metadata-plane).
    operator: KeyPair
    metadata_client: KeyPair
    # Same CA, a name no role lists.
    stranger: KeyPair
    # An operator known by a URI subject alternative name (a SPIFFE ID), whatever its CN.
    operator_by_uri: KeyPair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    pki = Pki(tmp_path_factory.mktemp("grpc-pki"))
    ca, rogue_ca = pki.authority("planes-ca"), pki.authority("rogue-ca")
    return Certs(
        ca=ca,
        server=pki.leaf("plane", ca),
        client=pki.leaf("gateway", ca),
        rogue_ca=rogue_ca,
        rogue_client=pki.leaf("rogue-client", rogue_ca),
        rogue_server=pki.leaf("rogue-server", rogue_ca),
        named_server=pki.leaf("named", ca, san="subjectAltName=DNS:blob.internal"),
        operator=pki.leaf("operator", ca),
        metadata_client=pki.leaf("metadata-plane", ca),
        stranger=pki.leaf("stranger", ca),
        operator_by_uri=pki.leaf("ops-laptop", ca, san=f"subjectAltName=URI:{OPERATOR_URI}"),
    )


# Which client certificates (by common name or URI) hold which role on the planes below.
OPERATOR_URI = "spiffe://lading.test/operator"
ROLE_NAMES = {"gateway": ["gateway"], "operator": ["operator", OPERATOR_URI], "metadata": ["metadata-plane"]}


def server_env(section: str, server: KeyPair, ca: KeyPair) -> dict[str, str]:
    prefix = f"LADING_{section.upper()}__TLS__"
    return {
        f"{prefix}ENABLED": "true",
        f"{prefix}CERT_FILE": str(server.cert),
        f"{prefix}KEY_FILE": str(server.key),
        f"{prefix}CA_FILE": str(ca.cert),
        f"{prefix}REQUIRE_CLIENT_CERT": "true",
        **{f"LADING_GRPC_ACCESS__{role.upper()}__CERTIFICATE_NAMES": json.dumps(names)
           for role, names in ROLE_NAMES.items()},
    }


def client_tls(certs: Certs, **changes: object) -> GrpcTlsSettings:
    base = GrpcTlsSettings(enabled=True, ca_file=certs.ca.cert, cert_file=certs.client.cert, key_file=certs.client.key)
    return base.model_copy(update=changes)


def health(target: str, tls: GrpcTlsSettings | None, service: str = BLOB, timeout: float = 3.0) -> int:
    """The health status `service` reports over a channel with `tls` (None: plaintext)."""
    if tls is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, channel_credentials(tls), options=channel_options(tls))
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return reply.status


def wait_serving(process: LadingProcess, target: str, tls: GrpcTlsSettings, service: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(process.describe_failure("exited before serving"))
        try:
            if health(target, tls, service, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as error:
            last = str(error.code())
        time.sleep(0.1)
    pytest.fail(process.describe_failure(f"was not SERVING over TLS within {WAIT_SECONDS}s (last: {last})"))


@dataclass(frozen=True)
class Planes:
    blob_target: str
    metadata_target: str
    named_blob_target: str
    # The metadata plane's plaintext health-only listener (metadata.health_listen).
    metadata_health_target: str


@pytest.fixture(scope="module")
def planes(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planes]:
    workdir = tmp_path_factory.mktemp("grpc-tls")
    blob_port, metadata_port, named_port, health_port = free_port(), free_port(), free_port(), free_port()
    blob = LadingProcess(
        "blob-mtls",
        lading_command("blob"),
        log_dir=workdir,
        env={"LADING_BLOB__LISTEN": f"127.0.0.1:{blob_port}", "LADING_BLOB__BACKEND": "memory",
             **server_env("blob", certs.server, certs.ca)},
    )
    # A second blob plane whose certificate names "blob.internal" only.
    named = LadingProcess(
        "blob-named",
        lading_command("blob"),
        log_dir=workdir,
        env={"LADING_BLOB__LISTEN": f"127.0.0.1:{named_port}", "LADING_BLOB__BACKEND": "memory",
             **server_env("blob", certs.named_server, certs.ca)},
    )
    metadata = LadingProcess(
        "metadata-mtls",
        lading_command("metadata"),
        log_dir=workdir,
        env={"LADING_METADATA__LISTEN": f"127.0.0.1:{metadata_port}",
             "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'registry.db'}",
             "LADING_METADATA__HEALTH_LISTEN": f"127.0.0.1:{health_port}",
             **server_env("metadata", certs.server, certs.ca)},
    )
    with running(blob, named, metadata):
        wait_serving(blob, f"127.0.0.1:{blob_port}", client_tls(certs), BLOB)
        wait_serving(named, f"127.0.0.1:{named_port}", client_tls(certs, server_name_override="blob.internal"), BLOB)
        wait_serving(metadata, f"127.0.0.1:{metadata_port}", client_tls(certs), METADATA)
        yield Planes(f"127.0.0.1:{blob_port}", f"127.0.0.1:{metadata_port}", f"127.0.0.1:{named_port}",
                     f"127.0.0.1:{health_port}")


SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_gateway_channel_with_the_right_certificates_works(planes: Planes, certs: Certs) -> None:
    channel = open_channel(planes.blob_target, BLOB_SERVICE, BLOB_READS, GrpcClientSettings(tls=client_tls(certs)))
    async with channel:
        stub = blob_pb2_grpc.BlobServiceStub(channel)
        started = await stub.StartUpload(blob_pb2.StartUploadRequest(repository="tls/test"), timeout=5)
        status = await stub.GetUploadStatus(
            blob_pb2.GetUploadStatusRequest(upload_id=started.status.upload_id, repository="tls/test"), timeout=5
        )
    assert status.status.offset == 0
    assert status.status.upload_id == started.status.upload_id


@pytest.mark.parametrize(
    "case",
    ["no client certificate", "client certificate from another CA", "server not trusted", "plaintext"],
)
def test_refused_connections(planes: Planes, certs: Certs, case: str) -> None:
    tls: GrpcTlsSettings | None
    if case == "no client certificate":
        tls = GrpcTlsSettings(enabled=True, ca_file=certs.ca.cert)
    elif case == "client certificate from another CA":
        tls = client_tls(certs, cert_file=certs.rogue_client.cert, key_file=certs.rogue_client.key)
    elif case == "server not trusted":
        # The client trusts only the rogue CA, so the planes' real certificate fails verification.
        tls = client_tls(certs, ca_file=certs.rogue_ca.cert)
    else:
        tls = None
    for target, service in ((planes.blob_target, BLOB), (planes.metadata_target, METADATA)):
        with pytest.raises(grpc.RpcError) as refused:
            health(target, tls, service)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, (case, target)
    # The planes still answer a well-configured client afterwards.
    assert health(planes.blob_target, client_tls(certs)) == SERVING


def test_server_name_override_names_the_certificate(planes: Planes, certs: Certs) -> None:
    # The certificate names blob.internal, not 127.0.0.1: refused unless the name is overridden.
    with pytest.raises(grpc.RpcError) as refused:
        health(planes.named_blob_target, client_tls(certs))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert health(planes.named_blob_target, client_tls(certs, server_name_override="blob.internal")) == SERVING


def test_gateway_pushes_and_pulls_through_mutual_tls(planes: Planes, certs: Certs, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "LADING_GATEWAY__HOST": "127.0.0.1",
        "LADING_GATEWAY__PORT": str(port),
        "LADING_GATEWAY__METADATA_TARGET": planes.metadata_target,
        "LADING_GATEWAY__BLOB_TARGET": planes.blob_target,
        "LADING_GATEWAY__GRPC__TLS__ENABLED": "true",
        "LADING_GATEWAY__GRPC__TLS__CA_FILE": str(certs.ca.cert),
        "LADING_GATEWAY__GRPC__TLS__CERT_FILE": str(certs.client.cert),
        "LADING_GATEWAY__GRPC__TLS__KEY_FILE": str(certs.client.key),
    }
    gateway = LadingProcess("gateway-mtls", lading_command("gateway"), log_dir=tmp_path, env=env)
    with running(gateway):
        base = f"http://127.0.0.1:{port}"
        wait_until_http_ok(f"{base}/v2/", gateway)
        content = b"bytes that crossed two TLS hops"
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        pushed = httpx.post(f"{base}/v2/tls/app/blobs/uploads/", params={"digest": digest}, content=content)
        assert pushed.status_code == 201, pushed.text
        pulled = httpx.get(f"{base}/v2/tls/app/blobs/{digest}")
        assert pulled.status_code == 200
        assert pulled.content == content


def test_gateway_without_a_client_certificate_gets_503(planes: Planes, certs: Certs, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "LADING_GATEWAY__HOST": "127.0.0.1",
        "LADING_GATEWAY__PORT": str(port),
        "LADING_GATEWAY__METADATA_TARGET": planes.metadata_target,
        "LADING_GATEWAY__BLOB_TARGET": planes.blob_target,
        "LADING_GATEWAY__GRPC__TLS__ENABLED": "true",
        "LADING_GATEWAY__GRPC__TLS__CA_FILE": str(certs.ca.cert),
        "LADING_GATEWAY__GRPC__TIMEOUT_SECONDS": "3",
    }
    gateway = LadingProcess("gateway-no-client-cert", lading_command("gateway"), log_dir=tmp_path, env=env)
    with running(gateway):
        base = f"http://127.0.0.1:{port}"
        wait_until_http_ok(f"{base}/v2/", gateway)
        response = httpx.get(f"{base}/v2/tls/app/tags/list", timeout=10)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_settings_that_cannot_work_are_refused_up_front(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="key_file"):
        server_credentials(GrpcTlsSettings(enabled=True, cert_file=certs.server.cert), section="blob.tls")
    with pytest.raises(TlsConfigError, match="ca_file"):
        server_credentials(
            GrpcTlsSettings(enabled=True, cert_file=certs.server.cert, key_file=certs.server.key,
                            require_client_cert=True),
        )
    with pytest.raises(TlsConfigError, match="go together"):
        channel_credentials(GrpcTlsSettings(enabled=True, cert_file=certs.client.cert))
    with pytest.raises(TlsConfigError, match="missing.pem"):
        channel_credentials(GrpcTlsSettings(enabled=True, ca_file=tmp_path / "missing.pem"))
