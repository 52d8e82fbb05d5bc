"""The operator commands (`lading gc|repo|check|maintenance|tag|manifest`, `lading events ...`,
`lading user ...`) against metadata and blob planes that require mutual TLS: they dial with the
gateway's client settings (`LADING_GATEWAY__GRPC__TLS__*`), are refused without them, and stop
with the setting's name when a file is missing."""

from __future__ import annotations

import hashlib
import subprocess

import grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import metadata_pb2, metadata_pb2_grpc

from services.common.tls import channel_credentials, channel_options
from tests.support.stack import child_env, lading_command
from tests.tls.test_grpc_tls import Certs, Planes, certs, client_tls, planes  # noqa: F401 - fixtures


def tls_env(certs: Certs, **changes: str) -> dict[str, str]:  # noqa: F811 - the fixture's name
    env = {
        "LADING_GATEWAY__GRPC__TLS__ENABLED": "true",
        "LADING_GATEWAY__GRPC__TLS__CA_FILE": str(certs.ca.cert),
        "LADING_GATEWAY__GRPC__TLS__CERT_FILE": str(certs.client.cert),
        "LADING_GATEWAY__GRPC__TLS__KEY_FILE": str(certs.client.key),
    }
    env.update(changes)
    return env


def lading(planes: Planes, env: dict[str, str], *args: str, blob: bool = True) -> subprocess.CompletedProcess[str]:  # noqa: F811
    targets = ["--metadata", planes.metadata_target] + (["--blob", planes.blob_target] if blob else [])
    return subprocess.run(lading_command(*args, *targets), env=child_env(env), capture_output=True, text=True,
                          timeout=60)


def store_blob(planes: Planes, certs: Certs, repository: str, data: bytes) -> str:  # noqa: F811
    """Bytes on the blob plane, linked on the metadata plane, over mutual TLS (what a gateway does)."""
    tls = client_tls(certs)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    credentials, options = channel_credentials(tls), channel_options(tls)
    with grpc.secure_channel(planes.blob_target, credentials, options=options) as channel:
        blobs = blob_pb2_grpc.BlobServiceStub(channel)
        started = blobs.StartUpload(blob_pb2.StartUploadRequest(repository=repository), timeout=10)
        blobs.CommitUpload(blob_pb2.CommitUploadRequest(
            upload_id=started.status.upload_id, repository=repository, digest=digest, expected_size=len(data),
            final_data=data, final_offset=0), timeout=10)
    with grpc.secure_channel(planes.metadata_target, credentials, options=options) as channel:
        metadata_pb2_grpc.MetadataServiceStub(channel).LinkBlob(
            metadata_pb2.LinkBlobRequest(repository=repository, digest=digest, size=len(data)), timeout=10)
    return digest


def test_operator_commands_reach_tls_planes(planes: Planes, certs: Certs) -> None:  # noqa: F811
    env = tls_env(certs)
    digest = store_blob(planes, certs, "tls/cli", b"bytes an operator checks over mutual TLS")

    status = lading(planes, env, "maintenance", "status")
    assert status.returncode == 0 and status.stdout.strip() == "maintenance mode: off", status.stderr
    # `check` asks the blob plane for every referenced blob, and re-hashes one: both planes over TLS.
    check = lading(planes, env, "check", "--verify-sample", "1")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "checked 1 blobs: 0 missing; re-hashed 1: 0 corrupt"
    repos = lading(planes, env, "repo", "list")
    assert repos.returncode == 0 and repos.stdout.startswith("tls/cli\t"), repos.stderr
    where = lading(planes, env, "blob", "where", digest)
    assert where.returncode == 0 and "linked\ttls/cli" in where.stdout, where.stderr
    dry = lading(planes, env, "gc", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would free:"), dry.stderr
    events = lading(planes, env, "events", "list", blob=False)
    assert events.returncode == 0 and events.stdout.split()[:2] == ["ID", "STATE"], events.stderr
    users = lading(planes, env, "user", "list", blob=False)
    assert users.returncode == 0, users.stderr


def test_operator_commands_without_client_tls_are_refused(planes: Planes, certs: Certs) -> None:  # noqa: F811
    plain = lading(planes, {}, "maintenance", "status")
    # A plaintext channel never connects to a TLS plane: the plane cannot be reached (exit 2).
    assert plain.returncode == 2 and "maintenance mode" not in plain.stdout
    assert "cannot reach the metadata plane" in plain.stderr and "LADING_GATEWAY__GRPC__TLS__" in plain.stderr
    no_client_cert = lading(planes, {"LADING_GATEWAY__GRPC__TLS__ENABLED": "true",
                                     "LADING_GATEWAY__GRPC__TLS__CA_FILE": str(certs.ca.cert)},
                            "events", "list", blob=False)
    # mutual TLS refuses the handshake of a client without a certificate: no connection either.
    assert no_client_cert.returncode == 2 and no_client_cert.stdout == ""
    assert "cannot reach the metadata plane" in no_client_cert.stderr


def test_tls_settings_that_cannot_work_stop_the_command(planes: Planes, certs: Certs, tmp_path) -> None:  # noqa: F811
    missing = tmp_path / "missing-ca.pem"
    for args, blob in ((("gc", "--dry-run"), True), (("events", "list"), False), (("user", "list"), False)):
        broken = lading(planes, tls_env(certs, LADING_GATEWAY__GRPC__TLS__CA_FILE=str(missing)), *args, blob=blob)
        assert broken.returncode == 2, (args, broken.stderr)
        assert "gateway.grpc.tls.ca_file" in broken.stderr and str(missing) in broken.stderr
