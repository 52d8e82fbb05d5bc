"""Access control on planes that listen on plaintext TCP and identify callers by bearer token
(`grpc_access.<role>.token_file`), as where TLS ends in a mesh: real `lading metadata`, `lading
blob` and `lading gateway` processes, the operator commands, and raw gRPC calls with every kind
of wrong credential."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc, metadata_pb2, metadata_pb2_grpc

from services.common.bearer import token_interceptors
from tests.support.grpc_tokens import RoleTokens, write_role_tokens
from tests.support.stack import (
    LadingProcess,
    child_env,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
)
from tests.tls.test_grpc_tls import wait_serving

METADATA = "lading.metadata.v1.MetadataService"
BLOB = "lading.blob.v1.BlobService"
PASSWORD = "a password long enough\n"


@dataclass(frozen=True)
class Planes:
    metadata: str
    blob: str
    tokens: RoleTokens
    workdir: Path


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planes]:
    workdir = tmp_path_factory.mktemp("access-tokens")
    tokens = write_role_tokens(workdir / "tokens")
    metadata_port, blob_port = free_port(), free_port()
    blob = LadingProcess("blob-tokens", lading_command("blob"), log_dir=workdir, env={
        "LADING_BLOB__LISTEN": f"127.0.0.1:{blob_port}", "LADING_BLOB__BACKEND": "memory", **tokens.plane_env()})
    # The metadata plane confirms a new blob's bytes with the blob plane (gc.blob_target) before its
    # first link, presenting the metadata role's token.
    metadata = LadingProcess("metadata-tokens", lading_command("metadata"), log_dir=workdir, env={
        "LADING_METADATA__LISTEN": f"127.0.0.1:{metadata_port}",
        "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'registry.db'}",
        "LADING_GC__BLOB_TARGET": f"127.0.0.1:{blob_port}",
        **tokens.metadata_env()})
    with running(blob, metadata):
        wait_serving(blob, f"127.0.0.1:{blob_port}", None, BLOB)
        wait_serving(metadata, f"127.0.0.1:{metadata_port}", None, METADATA)
        yield Planes(f"127.0.0.1:{metadata_port}", f"127.0.0.1:{blob_port}", tokens, workdir)


def channel(target: str, token: str | None) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, interceptors=token_interceptors(token) if token else None)


async def refusal(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


def lading(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lading_command(*args), env=child_env(env), capture_output=True, text=True, timeout=60,
                          input=stdin)


def test_the_issues_reproduction_no_longer_creates_an_admin(planes: Planes) -> None:
    """`LADING_GATEWAY__METADATA_TARGET=<host:port> lading user add evil --admin` against a plane on TCP."""
    target = {"LADING_GATEWAY__METADATA_TARGET": planes.metadata}
    anonymous = lading(target, "user", "add", "evil", "--admin", "--password-stdin", stdin=PASSWORD)
    assert anonymous.returncode == 2 and anonymous.stdout == "", anonymous.stderr
    assert "CreateUser needs the operator role; this caller presented no credentials" in anonymous.stderr
    assert "LADING_OPERATOR__TOKEN_FILE" in anonymous.stderr
    # A stolen gateway identity is no better.
    as_gateway = lading({**target, "LADING_OPERATOR__TOKEN_FILE": str(planes.tokens.path("gateway"))},
                        "user", "add", "evil", "--admin", "--password-stdin", stdin=PASSWORD)
    assert as_gateway.returncode == 2, as_gateway.stderr
    assert "a bearer token of gateway) has the gateway role" in as_gateway.stderr
    # The operator's token works, and nobody called evil was ever made.
    operator = {**target, **planes.tokens.operator_env()}
    added = lading(operator, "user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0 and added.stdout.strip() == "created user alice", added.stderr
    listed = lading(operator, "user", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["alice"]


def test_an_unreadable_operator_token_file_names_the_setting(planes: Planes) -> None:
    missing = planes.workdir / "no-such.token"
    result = lading({"LADING_OPERATOR__TOKEN_FILE": str(missing)}, "user", "list", "--metadata", planes.metadata)
    assert result.returncode == 2
    assert "operator.token_file" in result.stderr and str(missing) in result.stderr


async def test_each_wrong_credential_gets_its_status_and_names_the_role(planes: Planes) -> None:
    tokens = planes.tokens
    create = accounts_pb2.CreateUserRequest(name="mallory", password="whatever it is", is_admin=True)
    cases = {
        "no token": (None, grpc.StatusCode.UNAUTHENTICATED, "presented no credentials"),
        "unknown token": ("f" * 64, grpc.StatusCode.UNAUTHENTICATED, "a bearer token that matches no role"),
        "gateway token": (tokens.token("gateway"), grpc.StatusCode.PERMISSION_DENIED, "has the gateway role"),
        "metadata token": (tokens.token("metadata"), grpc.StatusCode.PERMISSION_DENIED, "has the metadata role"),
    }
    for case, (token, code, says) in cases.items():
        async with channel(planes.metadata, token) as chan:
            error = await refusal(accounts_pb2_grpc.AccountServiceStub(chan).CreateUser(create, timeout=10))
        assert error.code() == code, case
        assert "/lading.metadata.v1.AccountService/CreateUser needs the operator role" in error.details(), case
        assert says in error.details(), case
        assert "grpc_access.operator.token_file" in error.details(), case
    # Probes need nothing.
    async with channel(planes.metadata, None) as chan:
        reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=METADATA))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_blob_plane_roles(planes: Planes) -> None:
    tokens = planes.tokens
    digest = "sha256:" + hashlib.sha256(b"never stored").hexdigest()
    async with channel(planes.blob, tokens.token("gateway")) as chan:
        stub = blob_pb2_grpc.BlobServiceStub(chan)
        error = await refusal(stub.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "DeleteBlob needs the metadata or operator role" in error.details()
        started = await stub.StartUpload(blob_pb2.StartUploadRequest(repository="access/test"), timeout=10)
        assert started.status.upload_id
    async with channel(planes.blob, tokens.token("metadata")) as chan:
        stub = blob_pb2_grpc.BlobServiceStub(chan)
        assert (await stub.DeleteBlob(blob_pb2.DeleteBlobRequest(digest=digest), timeout=10)).deleted is False
        await stub.ListBlobs(blob_pb2.ListBlobsRequest(page_size=10), timeout=10)
        error = await refusal(stub.StartUpload(blob_pb2.StartUploadRequest(repository="access/test"), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "StartUpload needs the gateway role" in error.details()
    async with channel(planes.blob, None) as chan:
        error = await refusal(blob_pb2_grpc.BlobServiceStub(chan).StatBlob(
            blob_pb2.StatBlobRequest(digest=digest), timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "StatBlob needs the gateway or metadata or operator role" in error.details()
    # The metadata plane's data calls belong to gateways only.
    async with channel(planes.metadata, tokens.token("operator")) as chan:
        error = await refusal(metadata_pb2_grpc.MetadataServiceStub(chan).GetManifest(
            metadata_pb2.GetManifestRequest(repository="access/test", reference="latest"), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_gateway_pushes_with_its_token_and_fails_loudly_without(planes: Planes) -> None:
    content = b"bytes behind two token checks"
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    base_env = {"LADING_GATEWAY__HOST": "127.0.0.1", "LADING_GATEWAY__METADATA_TARGET": planes.metadata,
                "LADING_GATEWAY__BLOB_TARGET": planes.blob}
    port, anonymous_port = free_port(), free_port()
    gateway = LadingProcess("gateway-token", lading_command("gateway"), log_dir=planes.workdir,
                            env={**base_env, "LADING_GATEWAY__PORT": str(port), **planes.tokens.gateway_env()})
    anonymous = LadingProcess("gateway-no-token", lading_command("gateway"), log_dir=planes.workdir,
                              env={**base_env, "LADING_GATEWAY__PORT": str(anonymous_port)})
    with running(gateway, anonymous):
        base = f"http://127.0.0.1:{port}"
        wait_until_http_ok(f"{base}/v2/", gateway)
        # Upload on the blob plane, then LinkBlob on the metadata plane, which asks the blob plane
        # (with the metadata role's token) whether the bytes are there.
        pushed = httpx.post(f"{base}/v2/access/app/blobs/uploads/", params={"digest": digest}, content=content)
        assert pushed.status_code == 201, pushed.text
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        assert httpx.post(f"{base}/v2/access/app/blobs/uploads/", params={"digest": config_digest},
                          content=config).status_code == 201
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                        "size": len(content)}],
        }).encode()
        put = httpx.put(f"{base}/v2/access/app/manifests/v1", content=manifest,
                        headers={"content-type": "application/vnd.oci.image.manifest.v1+json"})
        assert put.status_code == 201, put.text
        assert httpx.get(f"{base}/v2/access/app/blobs/{digest}").content == content

        # A gateway without the token is refused by the planes: a 500 that points at the
        # deployment, never a 401/403 that would blame the client's credentials.
        anonymous_base = f"http://127.0.0.1:{anonymous_port}"
        wait_until_http_ok(f"{anonymous_base}/v2/", anonymous)
        refused = httpx.get(f"{anonymous_base}/v2/access/app/manifests/v1")
        assert refused.status_code == 500, refused.text
        assert "refused this service's credentials" in refused.json()["errors"][0]["message"]
