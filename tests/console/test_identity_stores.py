"""Directory and single sign-on accounts on both metadata stores (SQLite and PostgreSQL), over
real gRPC against a real metadata process, a real slapd and a real OIDC provider: an LDAP account
made at its first bind with its groups, the groups' mappings as grants, a lost group and a person
deleted from the directory ending what they gave; an OIDC account made at its first sign-in with
its provider groups; its CLI secret checked, replaced, revoked and expired.

(The CLI secret's expiry is moved a moment ahead in the database rather than waited for: the
shortest the console offers is a minute.)
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc, console_pb2, console_pb2_grpc

from gateway.console.security import pkce_pair
from services.common.errors import ErrorKind, from_rpc_error
from tests.console.conftest import OIDC_CLIENT, OidcProvider, ldap_env, through_the_provider
from tests.metadata.test_service_grpc import wait_until_serving
from tests.support.postgres import query
from tests.support.slapd import Slapd, group_dn
from tests.support.stack import LadingProcess, wait_until_path_exists

CACHE_SECONDS = 1  # ldap_env: the directory's answers count this long
# Deadline of waits that must succeed (generous: a loaded CI machine).
DEADLINE_SECONDS = 30.0


@dataclass
class Plane:
    accounts: accounts_pb2_grpc.AccountServiceStub
    console: console_pb2_grpc.ConsoleServiceStub
    database_url: str
    redirect_uri: str

    def account(self, name: str) -> accounts_pb2.Account:
        listed = self.accounts.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=10).accounts
        return next(a for a in listed if a.name == name)

    def authenticate(self, name: str, secret: str) -> accounts_pb2.Account:
        return self.accounts.Authenticate(accounts_pb2.AuthenticateRequest(name=name, secret=secret),
                                          timeout=30).account

    def refused(self, name: str, secret: str) -> bool:
        try:
            self.authenticate(name, secret)
        except grpc.RpcError as error:
            assert from_rpc_error(error).kind is ErrorKind.UNAUTHORIZED, error
            return True
        return False

    def actions(self, account: accounts_pb2.Account, repository: str) -> tuple[bool, list[str]]:
        """(valid, granted actions) as for a refresh token: naming the account's id and generation."""
        answer = self.accounts.Authorize(accounts_pb2.AuthorizeRequest(
            account=account.name, account_id=account.id, credential_generation=account.credential_generation,
            scopes=[accounts_pb2.Scope(type="repository", name=repository, actions=["pull", "push"])]), timeout=30)
        return answer.account_valid, sorted(answer.granted[0].actions)

    def set_secret_expiry(self, name: str, when: datetime) -> None:
        if self.database_url.startswith("sqlite"):
            path = self.database_url.split(":///", 1)[1]
            with sqlite3.connect(path, timeout=10) as db:
                db.execute("UPDATE accounts SET secret_expires_at = ? WHERE name = ?",
                           (when.astimezone(UTC).replace(tzinfo=None).isoformat(" "), name))
        else:
            query(self.database_url, "UPDATE accounts SET secret_expires_at = $1 WHERE name = $2", when, name)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, slapd: Slapd,
          oidc: OidcProvider, registry_port: int) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp(f"identities-{request.param}")
    url_context = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/registry.db"
    else:
        url_context = request.getfixturevalue("postgres").database()
        url = url_context.__enter__()
    path = tmp / "metadata.sock"
    process = LadingProcess("metadata", [sys.executable, "-m", "services.metadata"], log_dir=tmp, env={
        "LADING_METADATA__LISTEN": f"unix://{path}", "LADING_METADATA__DATABASE_URL": url,
        "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1", "LADING_AUTH__MODE": "token",
        "LADING_AUTH__BCRYPT_ROUNDS": "4", "LADING_AUTH__OIDC__ISSUER": oidc.issuer,
        "LADING_AUTH__OIDC__CLIENT_ID": OIDC_CLIENT[0], "LADING_AUTH__OIDC__CLIENT_SECRET": OIDC_CLIENT[1],
        **ldap_env(slapd),
    })
    process.start()
    try:
        wait_until_path_exists(path, process)
        assert wait_until_serving(path) == health_pb2.HealthCheckResponse.SERVING, process.log()
        with grpc.insecure_channel(f"unix://{path}") as channel:
            # The provider knows the console stack's callback; the browser never follows it here.
            yield Plane(accounts_pb2_grpc.AccountServiceStub(channel), console_pb2_grpc.ConsoleServiceStub(channel),
                        url, f"http://127.0.0.1:{registry_port}/ui/oidc/callback")
    finally:
        process.stop()
        if url_context is not None:
            url_context.__exit__(None, None, None)


def until(check: object, what: str) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < DEADLINE_SECONDS, what
        time.sleep(0.2)
    return time.monotonic() - started


def test_directory_accounts_and_their_groups(plane: Plane, slapd: Slapd) -> None:
    team = group_dn("team-a")
    project = f"dir{uuid.uuid4().hex[:6]}"
    plane.accounts.MapGroup(accounts_pb2.MapGroupRequest(mapping=accounts_pb2.GroupMapping(
        provider="ldap", group=team, pattern=f"{project}/*", actions=["pull", "push"])), timeout=10)
    leaver, gone = f"ivy{uuid.uuid4().hex[:6]}", f"jon{uuid.uuid4().hex[:6]}"
    slapd.add_user(leaver, "team-a")
    slapd.add_user(gone, "team-a")
    made = {name: plane.authenticate(name, f"{name}-pw") for name in (leaver, gone)}
    for name, account in made.items():
        assert account.origin == "ldap" and team in account.groups, account
        stored = plane.account(name)  # the row, its groups and when they were read
        assert stored.origin == "ldap" and list(stored.groups) == [team] and stored.groups_checked_at > 0
        assert plane.actions(account, f"{project}/app") == (True, ["pull", "push"])
    assert plane.refused(leaver, "not-the-password")
    # Out of the group: past the cache time its mapping gives nothing (the account stays valid).
    slapd.remove_member("team-a", leaver)
    until(lambda: plane.actions(made[leaver], f"{project}/app")[1] == [], f"{leaver} kept the group's grants")
    assert team not in plane.account(leaver).groups
    # Out of the directory: past the cache time the account's tokens and password end.
    slapd.delete_user(gone)
    until(lambda: not plane.actions(made[gone], f"{project}/app")[0], f"{gone}'s refresh tokens outlived it")
    assert plane.account(gone).credential_generation > made[gone].credential_generation
    assert plane.refused(gone, f"{gone}-pw")


def sign_in(plane: Plane, user: str) -> console_pb2.SessionResponse:
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = pkce_pair()
    url = plane.console.OidcAuthorizationUrl(console_pb2.OidcAuthorizationUrlRequest(
        redirect_uri=plane.redirect_uri, state=state, nonce=nonce, code_challenge=challenge), timeout=10).url
    back = parse_qs(urlsplit(through_the_provider(url, user, plane.redirect_uri)).query)
    assert back["state"] == [state]
    return plane.console.CompleteOidcSignIn(console_pb2.CompleteOidcSignInRequest(
        code=back["code"][0], code_verifier=verifier, redirect_uri=plane.redirect_uri, nonce=nonce), timeout=30)


def test_oidc_accounts_and_their_cli_secrets(plane: Plane) -> None:
    session = sign_in(plane, "carol")  # OIDC_GROUPS (conftest): carol is in "platform"
    assert session.account.origin == "oidc" and list(session.account.groups) == ["platform"]
    stored = plane.account("carol")
    assert stored.origin == "oidc" and list(stored.groups) == ["platform"] and stored.secret_expires_at == 0
    assert plane.refused("carol", "")  # no secret yet: nothing opens the account
    plane.accounts.MapGroup(accounts_pb2.MapGroupRequest(mapping=accounts_pb2.GroupMapping(
        provider="oidc", group="platform", pattern="platform/*", actions=["pull"])), timeout=10)

    made = plane.console.CreateCliSecret(console_pb2.CreateCliSecretRequest(
        session=session.session, lifetime_seconds=3600), timeout=30)
    assert abs(made.expires_at - (time.time() + 3600)) < 60
    account = plane.authenticate("carol", made.secret)
    assert account.secret_expires_at == made.expires_at
    assert plane.actions(account, "platform/tool") == (True, ["pull"])
    # Replaced: the old secret ends, and so does what was issued for it (the generation moved).
    newer = plane.console.CreateCliSecret(console_pb2.CreateCliSecretRequest(
        session=session.session, lifetime_seconds=3600), timeout=30)
    assert plane.refused("carol", made.secret) and not plane.actions(account, "platform/tool")[0]
    account = plane.authenticate("carol", newer.secret)
    # Expired: refused from that moment on.
    soon = datetime.now(UTC) + timedelta(seconds=2.5)
    plane.set_secret_expiry("carol", soon)
    assert plane.authenticate("carol", newer.secret).secret_expires_at == int(soon.timestamp())
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    assert plane.refused("carol", newer.secret)
    # Revoked: the stored secret is gone.
    third = plane.console.CreateCliSecret(console_pb2.CreateCliSecretRequest(
        session=session.session, lifetime_seconds=3600), timeout=30)
    assert plane.authenticate("carol", third.secret).name == "carol"
    revoked = plane.console.RevokeCliSecret(console_pb2.SessionRequest(session=session.session), timeout=30)
    assert revoked.account.secret_expires_at == 0 and plane.refused("carol", third.secret)
    # A second sign-in of the same provider user is the same account, its groups read again.
    again = sign_in(plane, "carol")
    assert again.account.id == session.account.id
