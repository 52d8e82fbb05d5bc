"""An OIDC account's CLI secret: shown once (no page, call or row gives it back), and at its
expiry it stops working, for `/token` (token mode, SQLite) and for Basic (basic mode, PostgreSQL),
together with every token it was exchanged for.

The console lets a secret live a day at least (a minute through ConsoleService); rather than
waiting, the tests move the stored expiry a few seconds ahead, as the passing of time would.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import jwt
import pytest
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, basic, write
from tests.console.conftest import ADMIN, OIDC_CLIENT, Browser, OidcProvider, sign_in_with_provider
from tests.support.postgres import PostgresProvider, query

USER = "paula"  # OIDC_GROUPS (conftest): "platform", mapped to platform/* pull,push
SECRET_FIELD = 'id="cli-secret" value="'
# How far ahead the stored expiry is moved: room for one request before it, under load.
EXPIRY_AHEAD_SECONDS = 3.5


def created_secret(browser: Browser, days: str = "1") -> str:
    answer = browser.post("/ui/account/cli-secret", {"days": days})
    assert answer.status_code == 200, answer.text
    assert "it is shown only this once" in answer.text
    start = answer.text.index(SECRET_FIELD) + len(SECRET_FIELD)
    secret = answer.text[start:answer.text.index('"', start)]
    assert len(secret) >= 40
    return secret


def token(stack: AuthStack, password: str, *, offline: bool = False) -> httpx.Response:
    params = [("service", "lading"), ("scope", "repository:platform/cli:pull")]
    if offline:
        params += [("offline_token", "true"), ("client_id", "test")]
    return httpx.get(f"{stack.base_url}/token", params=params, headers={"Authorization": basic(USER, password)},
                     timeout=30)


def expiry(jwt_token: str) -> int:
    return int(jwt.decode(jwt_token, options={"verify_signature": False})["exp"])


def stored_expiry(accounts: list[accounts_pb2.Account]) -> int:
    return next(a.secret_expires_at for a in accounts if a.name == USER)


def accounts_of(stack: AuthStack) -> list[accounts_pb2.Account]:
    with grpc.insecure_channel(stack.metadata_target) as channel:
        stub = accounts_pb2_grpc.AccountServiceStub(channel)
        return list(stub.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=10).accounts)


def wait_past(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.2)


def set_expiry_sqlite(stack: AuthStack, when: datetime) -> None:
    # SQLAlchemy keeps SQLite datetimes as naive UTC text ("YYYY-MM-DD HH:MM:SS.ffffff").
    with sqlite3.connect(stack.data_dir / "registry.db", timeout=10) as db:
        changed = db.execute("UPDATE accounts SET secret_expires_at = ? WHERE name = ?",
                             (when.astimezone(UTC).replace(tzinfo=None).isoformat(" "), USER)).rowcount
    assert changed == 1


@pytest.fixture
def signed_in(stack: AuthStack) -> Iterator[Browser]:
    browser = Browser(stack)
    try:
        sign_in_with_provider(browser, USER)
        yield browser
    finally:
        browser.http.close()


def test_a_cli_secret_is_shown_once(stack: AuthStack, signed_in: Browser) -> None:
    secret = created_secret(signed_in, "7")
    assert token(stack, secret).status_code == 200
    expires = stored_expiry(accounts_of(stack))
    assert abs(expires - (time.time() + 7 * 86400)) < 120  # the lifetime chosen, kept
    # Never again: not on the account page (which says one exists), not on any page an admin
    # sees, not from AccountService, not in the database (a bcrypt hash only).
    again = signed_in.get("/ui/account")
    assert again.status_code == 200 and "You have a CLI secret, valid until" in again.text
    assert secret not in again.text and SECRET_FIELD not in again.text
    assert secret not in signed_in.get("/ui/").text
    admin = Browser(stack)
    try:
        admin.sign_in(ADMIN)
        for path in ("/ui/admin/", "/ui/admin/users", "/ui/admin/robots", "/ui/admin/grants",
                     "/ui/admin/directory", "/ui/admin/events"):
            page = admin.get(path)
            assert page.status_code == 200 and secret not in page.text, path
        assert USER in admin.get("/ui/admin/users").text
    finally:
        admin.http.close()
    assert all(secret not in str(account) for account in accounts_of(stack))
    assert secret not in stack.lading("user", "list").stdout
    with sqlite3.connect(stack.data_dir / "registry.db", timeout=10) as db:
        (stored,) = db.execute("SELECT password_hash FROM accounts WHERE name = ?", (USER,)).fetchone()
    assert stored.startswith("$2") and secret not in stored
    # A new secret replaces it: the old one stops working at once.
    newer = created_secret(signed_in)
    assert newer != secret
    assert token(stack, secret).status_code == 401 and token(stack, newer).status_code == 200


def test_at_its_expiry_a_cli_secret_stops_working_for_token(stack: AuthStack, signed_in: Browser) -> None:
    secret = created_secret(signed_in, "1")
    expires = stored_expiry(accounts_of(stack))
    # Tokens made with it end when it does, refresh tokens too (they would otherwise live 30 days).
    offline = token(stack, secret, offline=True)
    assert offline.status_code == 200, offline.text
    assert expiry(offline.json()["token"]) <= expires and expiry(offline.json()["refresh_token"]) <= expires

    soon = datetime.now(UTC) + timedelta(seconds=EXPIRY_AHEAD_SECONDS)
    set_expiry_sqlite(stack, soon)
    working = token(stack, secret, offline=True)
    assert working.status_code == 200, working.text
    access, refresh = working.json()["token"], working.json()["refresh_token"]
    assert expiry(access) <= soon.timestamp() and expiry(refresh) <= soon.timestamp()
    wait_past(soon)
    refused = token(stack, secret)
    assert refused.status_code == 401, refused.text
    # (The tokens it gave end with it too, as their `exp` says above; verifiers allow them the
    # clock-skew leeway, auth.leeway_seconds, as every token.)


@pytest.fixture(scope="module")
def basic_stack(tmp_path_factory: pytest.TempPathFactory, oidc: OidcProvider, basic_registry_port: int,
                postgres: PostgresProvider) -> Iterator[tuple[AuthStack, str]]:
    """`lading serve` in basic mode on PostgreSQL, with single sign-on and the default (10 s)
    memory of checked Basic credentials."""
    root = tmp_path_factory.mktemp("cli-basic")
    write(root / "signing.pem", generate_signing_key_pem())
    with postgres.database() as url:
        env = {
            "LADING_AUTH__MODE": "basic", "LADING_AUTH__UPLOAD_STATE_KEY": "k" * 32,
            "LADING_AUTH__BCRYPT_ROUNDS": "4", "LADING_METADATA__DATABASE_URL": url,
            "LADING_AUTH__OIDC__ISSUER": oidc.issuer, "LADING_AUTH__OIDC__CLIENT_ID": OIDC_CLIENT[0],
            "LADING_AUTH__OIDC__CLIENT_SECRET": OIDC_CLIENT[1],
        }
        with AuthStack(root / "data", env=env, port=basic_registry_port) as registry:
            registry.lading("group", "map", "oidc", "platform", "platform/*", "pull")
            yield registry, url


@pytest.mark.postgres
def test_at_its_expiry_a_cli_secret_stops_working_for_basic(basic_stack: tuple[AuthStack, str]) -> None:
    stack, url = basic_stack
    browser = Browser(stack)
    try:
        sign_in_with_provider(browser, USER)
        secret = created_secret(browser, "1")
    finally:
        browser.http.close()

    def pull() -> int:
        return httpx.get(f"{stack.base_url}/v2/platform/cli/tags/list", headers={"Authorization": basic(USER, secret)},
                         timeout=30).status_code

    soon = datetime.now(UTC) + timedelta(seconds=EXPIRY_AHEAD_SECONDS)
    query(url, "UPDATE accounts SET secret_expires_at = $1 WHERE name = $2", soon, USER)
    assert pull() == 404  # allowed (no such repository yet); the gateway now remembers the check
    wait_past(soon)
    assert pull() == 401  # within the 10 s the gateway remembers a check, but past the expiry
