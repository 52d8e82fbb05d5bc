"""Unix sockets: callers there are trusted with every role (grpc_access.trust_unix_socket_peers),
so only this user may reach them: sockets are bound 0600 and `lading serve` keeps them in a 0700
run folder, whatever the umask; an existing run folder is narrowed, another user's refused."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from services.common.bearer import token_interceptors
from services.common.paths import UnsafeFolder, ensure_private_folder
from tests.support.clients import missing_tool
from tests.support.grpc_tokens import write_role_tokens
from tests.support.stack import (
    LadingProcess,
    Stack,
    child_env,
    lading_command,
    wait_until_http_ok,
    wait_until_path_exists,
)
from tests.tls.test_grpc_tls import wait_serving

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """Children started inside inherit `value`."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@contextlib.contextmanager
def short_folder() -> Iterator[Path]:
    """A folder with a short path (unix socket paths are limited to ~107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="lading-access-"))
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_a_new_run_folder_is_private_whatever_the_umask(tmp_path: Path) -> None:
    with umask(0):
        ensure_private_folder(tmp_path / "data" / "run")
    assert mode(tmp_path / "data" / "run") == 0o700


def test_an_existing_run_folder_is_narrowed_and_a_foreign_one_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir()
    wide.chmod(0o777)
    ensure_private_folder(wide)
    assert mode(wide) == 0o700
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(UnsafeFolder, match="is not a folder"):
        ensure_private_folder(not_a_folder)
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    if os.geteuid() != 0:
        missing_tool("giving a folder to another user needs root")
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(UnsafeFolder, match=f"belongs to user id {NOBODY}"):
        ensure_private_folder(foreign)


def test_serve_keeps_its_sockets_private_and_trusts_their_callers() -> None:
    with short_folder() as folder:
        data = folder / "data"
        run = data / "run"
        run.mkdir(parents=True)
        run.chmod(0o777)  # left so by an older version, or by hand
        stack = Stack(data)
        with umask(0):
            stack.process.start()
        try:
            wait_until_http_ok(f"{stack.base_url}/v2/", stack.process)
            assert mode(run) == 0o700
            for name in ("metadata.sock", "blob.sock"):
                assert stat.S_ISSOCK((run / name).stat().st_mode)
                assert mode(run / name) == 0o600, name
            # On the plane's own host, the operator commands need no credentials.
            listed = subprocess.run(lading_command("user", "list", "--metadata", f"unix:{run / 'metadata.sock'}"),
                                    env=child_env(), capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
        finally:
            stack.stop()


def test_serve_refuses_a_run_folder_of_another_user() -> None:
    if os.geteuid() != 0:
        missing_tool("giving a folder to another user needs root")
    with short_folder() as folder:
        run = folder / "data" / "run"
        run.mkdir(parents=True, mode=0o700)
        os.chown(run, NOBODY, NOBODY)
        result = subprocess.run(lading_command("serve", "--data-dir", str(folder / "data"), "--port", "0"),
                                env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"belongs to user id {NOBODY}" in result.stderr and "--data-dir" in result.stderr


async def test_untrusted_unix_peers_need_credentials_like_anyone() -> None:
    with short_folder() as folder:
        tokens = write_role_tokens(folder / "tokens")
        socket = folder / "sockets" / "metadata.sock"
        target = f"unix:{socket}"
        process = LadingProcess("metadata-untrusting", lading_command("metadata"), log_dir=folder, env={
            "LADING_METADATA__LISTEN": target,
            "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'registry.db'}",
            "LADING_GRPC_ACCESS__TRUST_UNIX_SOCKET_PEERS": "false",
            **tokens.plane_env(),
        })
        with umask(0):
            process.start()
        try:
            wait_until_path_exists(socket, process)
            wait_serving(process, target, None, "lading.metadata.v1.MetadataService")
            # Created by the plane: the folder 0700, the socket 0600, under a umask of 0.
            assert mode(socket.parent) == 0o700
            assert mode(socket) == 0o600
            request = accounts_pb2.ListAccountsRequest()
            async with grpc.aio.insecure_channel(target) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await accounts_pb2_grpc.AccountServiceStub(channel).ListAccounts(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "needs the operator role" in (refused.value.details() or "")
            operator = token_interceptors(tokens.token("operator"))
            async with grpc.aio.insecure_channel(target, interceptors=operator) as channel:
                await accounts_pb2_grpc.AccountServiceStub(channel).ListAccounts(request, timeout=10)
        finally:
            process.stop()
