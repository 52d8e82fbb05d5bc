"""Access control by client certificate: real metadata and blob processes over mutual TLS (the
planes of tests/tls/test_grpc_tls.py, which map CN=gateway, CN=operator or the URI
spiffe://lading.test/operator, and CN=metadata-plane to the three roles), called with the
certificate of each role and with one no role lists."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc, admin_pb2, admin_pb2_grpc

from services.common.tls import channel_credentials, channel_options
from tests.tls.pki import KeyPair
from tests.tls.test_grpc_tls import Certs, Planes, certs, client_tls, planes  # noqa: F401 - fixtures

DIGEST = "sha256:" + "0" * 64


def channel(target: str, certs: Certs, pair: KeyPair) -> grpc.aio.Channel:  # noqa: F811 - the fixture's name
    tls = client_tls(certs, cert_file=pair.cert, key_file=pair.key)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=channel_options(tls))


async def refusal(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


async def test_account_mutations_need_the_operator_certificate(planes: Planes, certs: Certs) -> None:  # noqa: F811
    create = accounts_pb2.CreateUserRequest(name="root2", password="a long password", is_admin=True)
    for who, pair, says in (
        ("gateway", certs.client, "this caller (certificate CN=gateway) has the gateway role"),
        ("stranger", certs.stranger, "this caller (certificate CN=stranger) has no role"),
        ("metadata plane", certs.metadata_client, "has the metadata role"),
    ):
        async with channel(planes.metadata_target, certs, pair) as chan:
            error = await refusal(accounts_pb2_grpc.AccountServiceStub(chan).CreateUser(create, timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, who
        assert "AccountService/CreateUser needs the operator role" in error.details(), who
        assert says in error.details(), who
        assert "grpc_access.operator.certificate_names" in error.details(), who
    # The operator, known by its CN or by a URI name alone, may; and so the admin exists only now.
    async with channel(planes.metadata_target, certs, certs.operator_by_uri) as chan:
        stub = accounts_pb2_grpc.AccountServiceStub(chan)
        names = [a.name for a in (await stub.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=10)).accounts]
        assert "root2" not in names
        await stub.CreateUser(create, timeout=10)
    async with channel(planes.metadata_target, certs, certs.operator) as chan:
        admin = admin_pb2_grpc.AdminServiceStub(chan)
        assert (await admin.GetMaintenance(admin_pb2.GetMaintenanceRequest(), timeout=10)).on is False


async def test_the_gateway_may_check_logins_but_not_run_the_collector(planes: Planes, certs: Certs) -> None:  # noqa: F811
    async with channel(planes.metadata_target, certs, certs.client) as chan:
        accounts = accounts_pb2_grpc.AccountServiceStub(chan)
        reply = await accounts.Authorize(accounts_pb2.AuthorizeRequest(account=""), timeout=10)
        assert list(reply.granted) == []
        admin = admin_pb2_grpc.AdminServiceStub(chan)
        assert (await admin.GetMaintenance(admin_pb2.GetMaintenanceRequest(), timeout=10)).on is False
        error = await refusal(admin.GcMarkBlobs(admin_pb2.GcMarkBlobsRequest(), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "GcMarkBlobs needs the operator role" in error.details()


async def test_blob_gc_calls_belong_to_the_metadata_plane_and_operators(planes: Planes, certs: Certs) -> None:  # noqa: F811
    async with channel(planes.blob_target, certs, certs.client) as chan:
        error = await refusal(blob_pb2_grpc.BlobServiceStub(chan).DeleteBlob(
            blob_pb2.DeleteBlobRequest(digest=DIGEST), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "DeleteBlob needs the metadata or operator role" in error.details()
    async with channel(planes.blob_target, certs, certs.metadata_client) as chan:
        blobs = blob_pb2_grpc.BlobServiceStub(chan)
        assert (await blobs.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=DIGEST), timeout=10)).deleted is False
        await blobs.ListBlobs(blob_pb2.ListBlobsRequest(page_size=1), timeout=10)
        error = await refusal(blobs.StartUpload(blob_pb2.StartUploadRequest(repository="x/y"), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "StartUpload needs the gateway role" in error.details()
    async with channel(planes.blob_target, certs, certs.stranger) as chan:
        error = await refusal(blob_pb2_grpc.BlobServiceStub(chan).StatBlob(
            blob_pb2.StatBlobRequest(digest=DIGEST), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_stays_open_and_the_probe_port_serves_nothing_else(planes: Planes, certs: Certs) -> None:  # noqa: F811
    # Any certificate of the CA may ask for health on the TLS port...
    async with channel(planes.metadata_target, certs, certs.stranger) as chan:
        reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # ...and a probe without TLS on metadata.health_listen, where no other service answers.
    async with grpc.aio.insecure_channel(planes.metadata_health_target) as chan:
        reply = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(service="lading.metadata.v1.MetadataService"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        error = await refusal(accounts_pb2_grpc.AccountServiceStub(chan).CreateUser(
            accounts_pb2.CreateUserRequest(name="evil", password="a long password", is_admin=True), timeout=10))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    # The TLS port itself still refuses plaintext.
    async with grpc.aio.insecure_channel(planes.metadata_target) as chan:
        error = await refusal(health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
