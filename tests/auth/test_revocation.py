"""Tokens die with their credentials (issue 11, items 1 and 2), end to end on `lading serve`:

- refresh tokens carry the account's immutable id and credential generation: a password change, a
  robot secret rotation (`lading robot rotate`), `lading user revoke-tokens`, a disable and a
  delete end them, and an account deleted and created again under the same name does not inherit
  them;
- access tokens of an account deleted, disabled or revoked are refused within 2 s of the change
  (measured from the moment the AccountService call that made it returned), by the gateway's
  revocation set fed from the metadata plane's change feed.
"""

from __future__ import annotations

import httpx
from lading.metadata.v1 import accounts_pb2 as pb

from tests.auth.conftest import Secured, robot_secret, unique
from tests.auth.support import account_service, claims, oauth_login, oauth_refresh, refused_within, snapshot
from tests.support.oci import image, push

# The bound: every gateway refuses the token within 2 s of the change.
REVOCATION_BOUND_SECONDS = 2.0


def _user(secured: Secured, prefix: str, password: str = "pw-1") -> tuple[str, str]:
    name = unique(prefix)
    secured.stack.lading("user", "add", name, "--password-stdin", stdin=password + "\n")
    secured.stack.lading("grant", "add", name, f"{name}/*", "pull,push,delete")
    return name, password


def _tokens(secured: Secured, creds: tuple[str, str], repository: str = "") -> tuple[str, str]:
    """(access token for pull,push on `repository` (default <name>/app), refresh token) from the
    password grant."""
    response = oauth_login(secured.base_url, creds, f"repository:{repository or creds[0] + '/app'}:pull,push")
    assert response.status_code == 200, response.text
    return response.json()["access_token"], response.json()["refresh_token"]


def _tags(secured: Secured, repository: str, token: str) -> httpx.Response:
    return httpx.get(f"{secured.base_url}/v2/{repository}/tags/list",
                     headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _refused(response: httpx.Response) -> bool:
    return response.status_code == 401


def test_tokens_name_the_account_id_and_generation(secured: Secured) -> None:
    creds = _user(secured, "gen")
    access, refresh = _tokens(secured, creds)
    with account_service(secured.stack.metadata_target) as accounts:
        listed = {a.name: a for a in accounts.ListAccounts(pb.ListAccountsRequest(), timeout=10).accounts}
    account = listed[creds[0]]
    assert account.id and account.credential_generation == 1
    for token in (access, refresh):
        assert (claims(token)["uid"], claims(token)["gen"]) == (account.id, 1)


def test_refresh_token_stops_working_after_a_password_change(secured: Secured) -> None:
    creds = _user(secured, "passwd")
    _, refresh = _tokens(secured, creds)
    assert oauth_refresh(secured.base_url, refresh).status_code == 200
    secured.stack.lading("user", "passwd", creds[0], "--password-stdin", stdin="pw-2\n")
    stale = oauth_refresh(secured.base_url, refresh)
    assert stale.status_code == 401, stale.text
    assert "log in again" in stale.json()["errors"][0]["message"]
    _, fresh = _tokens(secured, (creds[0], "pw-2"))
    assert oauth_refresh(secured.base_url, fresh).status_code == 200


def test_account_created_again_under_the_same_name_inherits_no_token(secured: Secured) -> None:
    creds = _user(secured, "reborn")
    repository = f"{creds[0]}/app"
    access, refresh = _tokens(secured, creds)
    assert _tags(secured, repository, access).status_code == 404  # allowed, nothing pushed yet
    secured.stack.lading("user", "delete", creds[0])
    secured.stack.lading("user", "add", creds[0], "--password-stdin", stdin=creds[1] + "\n")
    secured.stack.lading("grant", "add", creds[0], f"{creds[0]}/*", "pull,push,delete")
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    refused, elapsed, last = refused_within(REVOCATION_BOUND_SECONDS, lambda: _tags(secured, repository, access),
                                            _refused)
    assert refused, f"the old account's token still works after {elapsed:.2f}s: {last.status_code}"
    new_access, _ = _tokens(secured, creds)
    assert _tags(secured, repository, new_access).status_code == 404


def test_revoke_tokens_ends_refresh_and_access_tokens_within_the_bound(secured: Secured) -> None:
    creds = _user(secured, "revoked")
    repository = f"{creds[0]}/app"
    access, refresh = _tokens(secured, creds)
    assert _tags(secured, repository, access).status_code == 404
    with account_service(secured.stack.metadata_target) as accounts:
        reply = accounts.RevokeTokens(pb.RevokeTokensRequest(name=creds[0]), timeout=10)
    assert reply.account.credential_generation == 2
    refused, elapsed, last = refused_within(REVOCATION_BOUND_SECONDS, lambda: _tags(secured, repository, access),
                                            _refused)
    assert refused, f"a revoked token still works after {elapsed:.2f}s: {last.status_code}"
    assert 'error="invalid_token"' in last.headers["www-authenticate"]
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    # The credentials stay: a new login gets tokens that work.
    new_access, new_refresh = _tokens(secured, creds)
    assert _tags(secured, repository, new_access).status_code == 404
    assert oauth_refresh(secured.base_url, new_refresh).status_code == 200
    # The command says what it did.
    out = secured.stack.lading("user", "revoke-tokens", creds[0]).stdout
    assert creds[0] in out and "revoked" in out


def test_deleted_users_token_is_refused_within_the_bound_and_changes_nothing(secured: Secured) -> None:
    creds = _user(secured, "gone")
    repository = f"{creds[0]}/app"
    response = oauth_login(secured.base_url, creds, f"repository:{repository}:pull,push,delete")
    access = response.json()["access_token"]
    bearer = httpx.Client(base_url=secured.base_url, headers={"Authorization": f"Bearer {access}"}, timeout=30)
    with bearer:
        push(bearer, repository, image(1, layer_size=128), tag="v1")
        with account_service(secured.stack.metadata_target) as accounts:
            accounts.DeleteAccount(pb.DeleteAccountRequest(name=creds[0]), timeout=10)
        refused, elapsed, last = refused_within(
            REVOCATION_BOUND_SECONDS, lambda: bearer.get(f"/v2/{repository}/tags/list"), _refused)
        assert refused, f"a deleted user's token still works after {elapsed:.2f}s: {last.status_code}"
        before = snapshot(secured.stack, ("admin", "admin-secret-1"))
        manifest = image(1, layer_size=64)
        assert bearer.put(f"/v2/{repository}/manifests/evil", content=manifest.payload,
                          headers={"Content-Type": manifest.media_type}).status_code == 401
        assert bearer.delete(f"/v2/{repository}/manifests/v1").status_code == 401
        assert snapshot(secured.stack, ("admin", "admin-secret-1")) == before


def test_disabled_account_is_refused_and_its_old_tokens_never_return(secured: Secured) -> None:
    creds = _user(secured, "off")
    repository = f"{creds[0]}/app"
    access, refresh = _tokens(secured, creds)
    with account_service(secured.stack.metadata_target) as accounts:
        accounts.SetAccountDisabled(pb.SetAccountDisabledRequest(name=creds[0], disabled=True), timeout=10)
    refused, elapsed, _ = refused_within(REVOCATION_BOUND_SECONDS, lambda: _tags(secured, repository, access),
                                         _refused)
    assert refused, f"a disabled account's token still works after {elapsed:.2f}s"
    assert oauth_login(secured.base_url, creds).status_code == 401
    assert "disabled" in secured.stack.lading("user", "list").stdout
    secured.stack.lading("user", "enable", creds[0])
    assert _tags(secured, repository, access).status_code == 401
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    new_access, _ = _tokens(secured, creds)
    assert _tags(secured, repository, new_access).status_code == 404


def test_robot_rotate_prints_a_new_secret_and_ends_the_old_one(secured: Secured) -> None:
    stack = secured.stack
    robot = robot_secret(stack.lading("robot", "create", unique("rot")).stdout)
    stack.lading("grant", "add", robot[0], "team-a/*", "pull")
    access, refresh = _tokens(secured, robot, "team-a/app")
    assert _tags(secured, "team-a/app", access).status_code in (200, 404)
    rotated = stack.lading("robot", "rotate", robot[0].removeprefix("robot$"))
    name, secret = robot_secret(rotated.stdout)
    assert name == robot[0] and secret != robot[1] and len(secret) >= 40
    assert "shown only now" in rotated.stderr
    assert oauth_login(secured.base_url, robot).status_code == 401
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    refused, elapsed, _ = refused_within(REVOCATION_BOUND_SECONDS, lambda: _tags(secured, "team-a/app", access),
                                         _refused)
    assert refused, f"a token of the old robot secret still works after {elapsed:.2f}s"
    new_access, new_refresh = _tokens(secured, (name, secret), "team-a/app")
    assert _tags(secured, "team-a/app", new_access).status_code in (200, 404)
    assert oauth_refresh(secured.base_url, new_refresh).status_code == 200
    unknown = stack.lading("robot", "rotate", unique("nobody"), check=False)
    assert unknown.returncode != 0 and "no robot named" in unknown.stderr


def test_a_deleted_robot_and_one_created_again_under_its_name_have_no_old_token(secured: Secured) -> None:
    stack = secured.stack
    short = unique("gone-robot")
    robot = robot_secret(stack.lading("robot", "create", short).stdout)
    stack.lading("grant", "add", robot[0], "team-a/*", "pull")
    access, refresh = _tokens(secured, robot, "team-a/app")
    assert _tags(secured, "team-a/app", access).status_code in (200, 404)
    stack.lading("robot", "delete", short)
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    refused, elapsed, last = refused_within(REVOCATION_BOUND_SECONDS, lambda: _tags(secured, "team-a/app", access),
                                            _refused)
    assert refused, f"a deleted robot's token still works after {elapsed:.2f}s: {last.status_code}"
    # Created again under the same name, with the same grant: the old tokens stay dead.
    again = robot_secret(stack.lading("robot", "create", short).stdout)
    stack.lading("grant", "add", again[0], "team-a/*", "pull")
    assert again[0] == robot[0]
    assert oauth_refresh(secured.base_url, refresh).status_code == 401
    assert _tags(secured, "team-a/app", access).status_code == 401
    assert oauth_login(secured.base_url, robot).status_code == 401, "the old secret must not open the new robot"
    new_access, _ = _tokens(secured, again, "team-a/app")
    assert _tags(secured, "team-a/app", new_access).status_code in (200, 404)
