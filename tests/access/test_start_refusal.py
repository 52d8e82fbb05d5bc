"""A plane on a TCP address where no caller could be identified does not start (it would accept
anyone), unless `grpc_access.allow_unauthenticated` says so; access settings that cannot work stop
it at start with the setting's name."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from tests.support.stack import LadingProcess, free_port, lading_command, running
from tests.tls.test_grpc_tls import wait_serving

EXIT_WITHIN_SECONDS = 30.0


def plane(name: str, workdir: Path, env: dict[str, str]) -> LadingProcess:
    if name == "metadata":
        env = {"LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'registry.db'}", **env}
    else:
        env = {"LADING_BLOB__BACKEND": "memory", **env}
    return LadingProcess(f"{name}-{len(list(workdir.iterdir()))}", lading_command(name), log_dir=workdir, env=env)


def exit_code(process: LadingProcess) -> int:
    """The process's exit code; fails if it is still running after EXIT_WITHIN_SECONDS."""
    deadline = time.monotonic() + EXIT_WITHIN_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    pytest.fail(process.describe_failure(f"still runs after {EXIT_WITHIN_SECONDS:.0f}s; it should have refused to start"))


@pytest.mark.parametrize("name", ["metadata", "blob"])
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_tcp_plane_without_credentials_refuses_to_start(name: str, host: str, tmp_path: Path) -> None:
    listen = f"{host}:{free_port()}"
    process = plane(name, tmp_path, {f"LADING_{name.upper()}__LISTEN": listen})
    with running(process):
        assert exit_code(process) == 2, process.log()
        log = process.log()
    assert f"{name}.listen = {listen} is a TCP address, and no caller could be identified there" in log
    assert "grpc_access.<role>.token_file" in log and "grpc_access.allow_unauthenticated = true" in log


def test_allow_unauthenticated_is_an_explicit_choice(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    process = plane("blob", tmp_path, {"LADING_BLOB__LISTEN": target,
                                       "LADING_GRPC_ACCESS__ALLOW_UNAUTHENTICATED": "true"})
    with running(process):
        wait_serving(process, target, None, "lading.blob.v1.BlobService")
        with grpc.insecure_channel(target) as channel:
            started = blob_pb2_grpc.BlobServiceStub(channel).StartUpload(
                blob_pb2.StartUploadRequest(repository="open/door"), timeout=10)
        assert started.status.upload_id
        assert "allow_unauthenticated is on: every caller" in process.log()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("certificate names without mutual TLS", "grpc_access.gateway.certificate_names needs mutual TLS"),
        ("short token", "a token is shorter than 32 characters"),
        ("missing token file", "grpc_access.operator.token_file"),
        ("one token for two roles", "the same token is in grpc_access.gateway.token_file and "
                                    "grpc_access.operator.token_file"),
    ],
)
def test_access_settings_that_cannot_work_stop_the_plane(case: str, says: str, tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    token = tmp_path / "token"
    token.write_text("x" * 40 + "\n")
    env = {
        "certificate names without mutual TLS": {"LADING_GRPC_ACCESS__GATEWAY__CERTIFICATE_NAMES": '["gateway"]'},
        "short token": {"LADING_GRPC_ACCESS__GATEWAY__TOKEN_FILE": str(tmp_path / "short")},
        "missing token file": {"LADING_GRPC_ACCESS__OPERATOR__TOKEN_FILE": str(tmp_path / "absent")},
        "one token for two roles": {"LADING_GRPC_ACCESS__GATEWAY__TOKEN_FILE": str(token),
                                    "LADING_GRPC_ACCESS__OPERATOR__TOKEN_FILE": str(token)},
    }[case]
    (tmp_path / "short").write_text("tooshort\n")
    process = plane("metadata", tmp_path, {"LADING_METADATA__LISTEN": listen, **env})
    with running(process):
        assert exit_code(process) == 2, process.log()
    assert says in process.log()
