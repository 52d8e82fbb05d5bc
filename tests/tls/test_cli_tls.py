"""The operator commands (`lading gc|repo|check|maintenance|tag|manifest`, `lading events ...`,
`lading user ...`) against metadata and blob planes that require mutual TLS: they dial with the
operator's client settings (`LADING_OPERATOR__TLS__*`, else the gateway's
`LADING_GATEWAY__GRPC__TLS__*`), are refused without them or with a certificate of another role,
and stop with the setting's name when a file is missing."""

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
    """The gateway's client TLS settings, which the commands fall back to, with the operator's
    certificate (the planes give CN=operator the operator role)."""
    env = {
        "LADING_GATEWAY__GRPC__TLS__ENABLED": "true",
        "LADING_GATEWAY__GRPC__TLS__CA_FILE": str(certs.ca.cert),
        "LADING_GATEWAY__GRPC__TLS__CERT_FILE": str(certs.operator.cert),
        "LADING_GATEWAY__GRPC__TLS__KEY_FILE": str(certs.operator.key),
    }
    env.update(changes)
    return env


def lading(planes: Planes, env: dict[str, str], *args: str, blob: bool = True,  # noqa: F811
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    targets = ["--metadata", planes.metadata_target] + (["--blob", planes.blob_target] if blob else [])
    return subprocess.run(lading_command(*args, *targets), env=child_env(env), capture_output=True, text=True,
                          timeout=60, input=stdin)


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


def test_operator_tls_settings_win_over_the_gateways(planes: Planes, certs: Certs) -> None:  # noqa: F811
    # On a gateway host the gateway's client certificate is configured too; `operator.tls` wins.
    env = {
        **tls_env(certs, LADING_GATEWAY__GRPC__TLS__CERT_FILE=str(certs.client.cert),
                  LADING_GATEWAY__GRPC__TLS__KEY_FILE=str(certs.client.key)),
        "LADING_OPERATOR__TLS__ENABLED": "true",
        "LADING_OPERATOR__TLS__CA_FILE": str(certs.ca.cert),
        "LADING_OPERATOR__TLS__CERT_FILE": str(certs.operator.cert),
        "LADING_OPERATOR__TLS__KEY_FILE": str(certs.operator.key),
    }
    added = lading(planes, env, "user", "add", "tls-operator-made", "--password-stdin", blob=False,
                   stdin="a fine password\n")
    assert added.returncode == 0 and "created user tls-operator-made" in added.stdout, added.stderr


def test_a_gateway_certificate_cannot_run_operator_commands(planes: Planes, certs: Certs) -> None:  # noqa: F811
    gateway = tls_env(certs, LADING_GATEWAY__GRPC__TLS__CERT_FILE=str(certs.client.cert),
                      LADING_GATEWAY__GRPC__TLS__KEY_FILE=str(certs.client.key))
    added = lading(planes, gateway, "user", "add", "evil", "--admin", "--password-stdin", blob=False,
                   stdin="a fine password\n")
    assert added.returncode == 2 and added.stdout == "", added.stderr
    assert "CreateUser needs the operator role" in added.stderr
    assert "certificate CN=gateway" in added.stderr and "has the gateway role" in added.stderr
    assert "LADING_OPERATOR__TOKEN_FILE" in added.stderr and "grpc_access.operator.certificate_names" in added.stderr
    listed = lading(planes, tls_env(certs), "user", "list", blob=False)
    assert listed.returncode == 0 and "evil" not in listed.stdout, listed.stderr
    # `lading check` tolerates a failing blob, but a refusal ends it instead of reading as missing data.
    check = lading(planes, gateway, "check")
    assert check.returncode == 2 and "missing" not in check.stdout + check.stderr, check.stderr
    assert "needs the operator role" in check.stderr
