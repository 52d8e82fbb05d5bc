"""Revocation across metadata replicas, with real processes on PostgreSQL (issue 11, item 2):
two `lading metadata` processes on one database, a gateway whose metadata target is replica B
only, and account changes made through replica A. The gateway must refuse the affected token
within 2 s of the change, without asking the database per request: the change travels
A → PostgreSQL NOTIFY → B's change feed → the gateway's revocation set. Both replicas poll only
every 60 s here, so LISTEN/NOTIFY is the path that has to work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from lading.metadata.v1 import accounts_pb2 as pb

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import account_service, oauth_login, refused_within
from tests.support.stack import (
    LadingProcess,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)

pytestmark = pytest.mark.postgres

BOUND_SECONDS = 2.0


@dataclass
class TwoReplicas:
    gateway_url: str
    replica_a: str
    replica_b: str


@pytest.fixture(scope="module")
def two_replicas(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoReplicas]:
    root = Path(tmp_path_factory.mktemp("replicas-auth"))
    run = root / "run"
    run.mkdir()
    key = root / "signing.pem"
    key.write_bytes(generate_signing_key_pem())
    sockets = {name: run / f"{name}.sock" for name in ("a", "b", "blob")}
    port = free_port()
    auth = {
        "LADING_AUTH__MODE": "token",
        "LADING_AUTH__SIGNING_KEY_FILE": str(key),
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
    }
    logs = root / "logs"
    with postgres.database() as url:
        metadata = [
            LadingProcess(f"metadata-{name}", lading_command("metadata"), log_dir=logs, cwd=root, env={
                **auth,
                "LADING_METADATA__DATABASE_URL": url,
                "LADING_METADATA__LISTEN": f"unix://{sockets[name]}",
                "LADING_METADATA__CHANGE_FEED__POLL_SECONDS": "60",
            })
            for name in ("a", "b")
        ]
        blob = LadingProcess("blob", lading_command("blob"), log_dir=logs, cwd=root, env={
            "LADING_BLOB__LISTEN": f"unix://{sockets['blob']}",
            "LADING_BLOB__FILESYSTEM__ROOT": str(root / "blobs"),
        })
        gateway = LadingProcess("gateway", lading_command("gateway"), log_dir=logs, cwd=root, env={
            **auth,
            "LADING_GATEWAY__HOST": "127.0.0.1",
            "LADING_GATEWAY__PORT": str(port),
            "LADING_GATEWAY__METADATA_TARGET": f"unix://{sockets['b']}",
            "LADING_GATEWAY__BLOB_TARGET": f"unix://{sockets['blob']}",
        })
        # A first, alone: it migrates the new database before B starts.
        with running(metadata[0]):
            wait_until_path_exists(sockets["a"], metadata[0])
            with running(metadata[1], blob, gateway):
                base = f"http://127.0.0.1:{port}"
                wait_until_http_ok(f"{base}/readyz", gateway)
                yield TwoReplicas(base, f"unix:{sockets['a']}", f"unix:{sockets['b']}")


def _login(replicas: TwoReplicas, name: str) -> str:
    with account_service(replicas.replica_a) as accounts:
        accounts.CreateUser(pb.CreateUserRequest(name=name, password="pw-1"), timeout=10)
        accounts.Grant(pb.GrantRequest(account=name, pattern=f"{name}/*", actions=["pull"]), timeout=10)
    response = oauth_login(replicas.gateway_url, (name, "pw-1"), f"repository:{name}/app:pull")
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _tags(replicas: TwoReplicas, name: str, token: str) -> httpx.Response:
    return httpx.get(f"{replicas.gateway_url}/v2/{name}/app/tags/list",
                     headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.parametrize("change", ["delete", "revoke-tokens", "disable"])
def test_change_through_replica_a_reaches_a_gateway_on_replica_b(two_replicas: TwoReplicas, change: str) -> None:
    name = f"user-{change}"
    token = _login(two_replicas, name)
    assert _tags(two_replicas, name, token).status_code == 404  # allowed; nothing pushed
    with account_service(two_replicas.replica_a) as accounts:
        if change == "delete":
            accounts.DeleteAccount(pb.DeleteAccountRequest(name=name), timeout=10)
        elif change == "revoke-tokens":
            accounts.RevokeTokens(pb.RevokeTokensRequest(name=name), timeout=10)
        else:
            accounts.SetAccountDisabled(pb.SetAccountDisabledRequest(name=name, disabled=True), timeout=10)
        refused, elapsed, last = refused_within(BOUND_SECONDS, lambda: _tags(two_replicas, name, token),
                                                lambda r: r.status_code == 401)
    assert refused, f"{change} through A: the token still works through B after {elapsed:.2f}s: {last.text}"
    assert json.loads(last.text)["errors"][0]["code"] == "UNAUTHORIZED"
