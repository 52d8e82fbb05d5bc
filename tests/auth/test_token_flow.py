"""The token flow end to end: the challenge, GET and POST /token, the intersection, refresh tokens,
key rotation, an external issuer, and the CLI that manages the accounts behind it."""

from __future__ import annotations

import time

import httpx
import jwt

from gateway.auth.tokens import canonical_es256
from tests.auth.conftest import ADMIN, ALICE, EXTERNAL_ISSUER, Secured, unique
from tests.auth.support import basic, challenge_params, claims, client, get_token, oauth_login
from tests.support.oci import image, push


def test_v2_challenges_with_the_token_realm(secured: Secured) -> None:
    response = httpx.get(f"{secured.base_url}/v2/")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    params = challenge_params(response.headers["www-authenticate"])
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert params["realm"] == f"{secured.base_url}/token"
    assert params["service"] == "lading"
    token = get_token(secured.base_url)
    ok = httpx.get(f"{secured.base_url}/v2/", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def test_repository_challenge_names_the_scope(secured: Secured) -> None:
    pull = httpx.get(f"{secured.base_url}/v2/team-a/app/tags/list")
    assert challenge_params(pull.headers["www-authenticate"])["scope"] == "repository:team-a/app:pull"
    push_start = httpx.post(f"{secured.base_url}/v2/team-a/app/blobs/uploads/")
    assert challenge_params(push_start.headers["www-authenticate"])["scope"] == "repository:team-a/app:pull,push"
    assert push_start.json()["errors"][0]["detail"][0]["Name"] == "team-a/app"


def test_token_is_the_intersection_of_asked_and_granted(secured: Secured) -> None:
    token = get_token(secured.base_url, "repository:team-a/x:pull,push,delete", "repository:shared/lib:pull,push",
                      "repository:team-b/y:pull", "registry:catalog:*", creds=ALICE, account="alice")
    body = claims(token)
    access = {entry["name"]: entry["actions"] for entry in body["access"]}
    assert access == {"team-a/x": ["pull", "push"], "shared/lib": ["pull"]}
    assert body["sub"] == "alice" and body["aud"] == "lading" and body["iss"] == "lading"
    assert body["exp"] - body["iat"] == 300 and body["nbf"] <= body["iat"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    assert len(header["kid"].split(":")) == 12


def test_admin_gets_everything_it_asks_for(secured: Secured) -> None:
    token = get_token(secured.base_url, "repository:anything/at/all:pull,push,delete", "registry:catalog:*",
                      creds=ADMIN)
    access = {(e["type"], e["name"]): e["actions"] for e in claims(token)["access"]}
    assert access == {("repository", "anything/at/all"): ["pull", "push", "delete"],
                      ("registry", "catalog"): ["*"]}


def test_scope_with_a_port_in_the_name_is_split_from_the_right(secured: Secured) -> None:
    token = get_token(secured.base_url, "repository:localhost:5000/team-a/x:pull", creds=ADMIN)
    # Not a valid repository name here (':' is not allowed), so nothing is granted, but it parsed:
    # a naive left split would have read the name as "localhost" with actions "5000/team-a/x:pull".
    assert claims(token)["access"] == []


def test_token_response_fields(secured: Secured) -> None:
    response = httpx.get(f"{secured.base_url}/token", params={"service": "lading", "scope": "repository:public/x:pull"})
    body = response.json()
    assert response.status_code == 200
    assert body["token"] == body["access_token"]
    assert body["expires_in"] >= 60 and body["issued_at"].endswith("Z")
    assert "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    # Anonymous: pull where anonymous pull is configured, nothing else.
    assert claims(body["token"])["sub"] == ""
    assert claims(body["token"])["access"] == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]


def test_an_anonymous_token_refused_a_push_says_to_log_in(secured: Secured) -> None:
    token = get_token(secured.base_url, "repository:public/x:pull,push")
    refused = httpx.post(f"{secured.base_url}/v2/public/x/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    error = refused.json()["errors"][0]
    assert error["code"] == "DENIED" and "log in" in error["message"], error
    assert challenge_params(refused.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_empty_basic_credentials_get_the_anonymous_token(secured: Secured) -> None:
    """`Basic Og==` (empty user and password, what containers/image sends without credentials)
    is an anonymous caller, not a failed login; an empty user with a password still is one."""
    params = {"service": "lading", "scope": "repository:public/x:pull"}
    response = httpx.get(f"{secured.base_url}/token", params=params, headers={"Authorization": basic("", "")})
    assert response.status_code == 200, response.text
    assert claims(response.json()["token"])["sub"] == ""
    assert claims(response.json()["token"])["access"] == [
        {"type": "repository", "name": "public/x", "actions": ["pull"]}]
    refused = httpx.get(f"{secured.base_url}/token", params=params, headers={"Authorization": basic("", "x")})
    assert refused.status_code == 401


def test_wrong_password_and_unknown_service_are_refused(secured: Secured) -> None:
    wrong = httpx.get(f"{secured.base_url}/token", params={"service": "lading"},
                      headers={"Authorization": basic("alice", "nope")})
    assert wrong.status_code == 401
    unknown = httpx.get(f"{secured.base_url}/token", params={"service": "elsewhere"},
                        headers={"Authorization": basic(*ALICE)})
    assert unknown.status_code == 403
    mismatch = httpx.get(f"{secured.base_url}/token", params={"service": "lading", "account": "bob"},
                         headers={"Authorization": basic(*ALICE)})
    assert mismatch.status_code == 401


def test_oauth_password_grant_and_refresh(secured: Secured) -> None:
    form = {"grant_type": "password", "username": ALICE[0], "password": ALICE[1], "service": "lading",
            "client_id": "tests", "access_type": "offline", "scope": "repository:team-a/x:pull repository:team-b/x:pull"}
    response = httpx.post(f"{secured.base_url}/token", data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "repository:team-a/x:pull"
    refresh = body["refresh_token"]
    again = httpx.post(f"{secured.base_url}/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh, "service": "lading", "client_id": "tests",
        "scope": "repository:team-a/y:pull,push"})
    assert again.status_code == 200, again.text
    assert again.json()["refresh_token"] == refresh
    assert claims(again.json()["access_token"])["access"] == [
        {"type": "repository", "name": "team-a/y", "actions": ["pull", "push"]}]
    # A refresh token is not an access token.
    used = httpx.get(f"{secured.base_url}/v2/", headers={"Authorization": f"Bearer {refresh}"})
    assert used.status_code == 401
    bad = httpx.post(f"{secured.base_url}/token", data={"grant_type": "refresh_token", "refresh_token": "x.y.z",
                                                        "service": "lading", "client_id": "tests"})
    assert bad.status_code == 401
    wrong = httpx.post(f"{secured.base_url}/token", data={**form, "password": "nope"})
    assert wrong.status_code == 401


def test_post_token_takes_every_scope_field(secured: Secured) -> None:
    # containers/image (podman, skopeo) sends one `scope` field per scope with its refresh token
    # (e.g. the destination and a mount source), not one space-separated field.
    refresh = oauth_login(secured.base_url, ALICE).json()["refresh_token"]
    response = httpx.post(f"{secured.base_url}/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh, "service": "lading",
        "client_id": "containers/image", "scope": ["repository:team-a/dst:pull,push", "repository:shared/src:pull"]})
    assert response.status_code == 200, response.text
    assert claims(response.json()["access_token"])["access"] == [
        {"type": "repository", "name": "team-a/dst", "actions": ["pull", "push"]},
        {"type": "repository", "name": "shared/src", "actions": ["pull"]}]
    assert response.json()["scope"] == "repository:team-a/dst:pull,push repository:shared/src:pull"


def test_post_token_refusals_carry_the_oauth2_error(secured: Secured) -> None:
    form = {"grant_type": "password", "username": ALICE[0], "password": ALICE[1], "service": "lading",
            "client_id": "tests"}

    def refusal(data: dict[str, str]) -> tuple[int, str, str]:
        response = httpx.post(f"{secured.base_url}/token", data=data, timeout=30)
        body = response.json()
        assert body["error_description"] == body["errors"][0]["message"], body
        return response.status_code, body["error"], body["errors"][0]["code"]

    # Bad credentials or refresh token: RFC 6749's invalid_grant, with the 401 docker-auth-token.md asks for.
    assert refusal({**form, "password": "nope"}) == (401, "invalid_grant", "UNAUTHORIZED")
    assert refusal({**form, "grant_type": "refresh_token", "refresh_token": "x.y.z"}) == (
        401, "invalid_grant", "UNAUTHORIZED")
    # client_id, service and grant_type are required (docker-auth-oauth.md): 400 invalid_request.
    for missing in ("client_id", "service", "grant_type"):
        assert refusal({k: v for k, v in form.items() if k != missing}) == (400, "invalid_request", "UNSUPPORTED")
    assert refusal({**form, "grant_type": "client_credentials"}) == (400, "unsupported_grant_type", "UNSUPPORTED")
    assert refusal({**form, "service": "elsewhere"}) == (403, "invalid_request", "DENIED")


def test_get_with_offline_token_returns_a_refresh_token(secured: Secured) -> None:
    response = httpx.get(f"{secured.base_url}/token", params={"service": "lading", "offline_token": "true"},
                         headers={"Authorization": basic(*ALICE)})
    assert response.status_code == 200
    assert response.json()["refresh_token"]


def test_rotated_key_and_external_issuer_are_accepted(secured: Secured) -> None:
    from gateway.auth.keys import load_signing_key

    repo = unique("team-a/rot")
    with client(secured.stack, ADMIN) as admin:
        push(admin, repo, image(1, layer_size=256), tag="v1")
    now = int(time.time())
    access = [{"type": "repository", "name": repo, "actions": ["pull"]}]
    old = load_signing_key(secured.keys / "old.pem")
    rotated = canonical_es256(jwt.encode({"iss": "lading", "sub": "alice", "aud": "lading", "exp": now + 60,
                                          "iat": now, "nbf": now, "access": access}, old.private_key,
                                         algorithm="ES256", headers={"kid": old.kid}))
    external = jwt.encode({"iss": EXTERNAL_ISSUER, "sub": "someone", "aud": "lading", "exp": now + 60, "iat": now,
                           "access": access}, secured.external_key, algorithm="RS256", headers={"kid": "ext-1"})
    for token in (rotated, external):
        response = httpx.get(f"{secured.base_url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json()["tags"] == ["v1"]
    # The external issuer's token is bound to its issuer: ours in `iss` with its key is refused.
    forged = jwt.encode({"iss": "lading", "sub": "admin", "aud": "lading", "exp": now + 60, "iat": now,
                         "access": access}, secured.external_key, algorithm="RS256", headers={"kid": "ext-1"})
    refused = httpx.get(f"{secured.base_url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401


def test_cli_manages_accounts_and_grants(secured: Secured) -> None:
    stack = secured.stack
    name = unique("carol")
    stack.lading("user", "add", name, "--password-stdin", stdin="pw-1\n")
    listed = stack.lading("user", "list").stdout
    assert name in listed and "robot$ci" in listed
    assert "robot$ci" in stack.lading("robot", "list").stdout and name not in stack.lading("robot", "list").stdout
    assert stack.lading("grant", "add", name, "carol/*", "pull").stdout.strip() == f"{name}\tcarol/*\tpull"
    assert stack.lading("grant", "add", name, "carol/*", "push").stdout.strip() == f"{name}\tcarol/*\tpull,push"
    assert f"{name}\tcarol/*\tpull,push" in stack.lading("grant", "list", name).stdout
    token = get_token(secured.base_url, "repository:carol/x:pull,push", creds=(name, "pw-1"))
    assert claims(token)["access"][0]["actions"] == ["pull", "push"]
    stack.lading("grant", "revoke", name, "carol/*", "push")
    assert claims(get_token(secured.base_url, "repository:carol/x:pull,push", creds=(name, "pw-1")))["access"][0][
        "actions"] == ["pull"]
    stack.lading("user", "passwd", name, "--password-stdin", stdin="pw-2\n")
    assert httpx.get(f"{secured.base_url}/token", headers={"Authorization": basic(name, "pw-1")}).status_code == 401
    get_token(secured.base_url, creds=(name, "pw-2"))
    duplicate = stack.lading("user", "add", name, "--password-stdin", stdin="x\n", check=False)
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
    bad_action = stack.lading("grant", "add", name, "x/*", "pull,fly", check=False)
    assert bad_action.returncode == 1 and "fly" in bad_action.stderr
    stack.lading("user", "delete", name)
    assert name not in stack.lading("user", "list").stdout
    assert httpx.get(f"{secured.base_url}/token", headers={"Authorization": basic(name, "pw-2")}).status_code == 401
