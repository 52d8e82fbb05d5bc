"""Directory accounts through the whole registry: `/token` (and Basic mode) check LDAP users in the
metadata plane, their groups become grants and admin, a user taken out of a group or out of the
directory loses what it gave within the cache time, and a directory that is down answers 503, never "wrong password",
while local accounts keep working."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, basic, claims, write
from tests.console.conftest import ADMIN, Browser, ldap_env
from tests.support.slapd import Slapd

# Deadline of the waits for a removal to take effect (about the 1 s cache time, then a login):
# generous, as each round of the wait is several requests that a loaded machine slows down.
TOKEN_DEADLINE_SECONDS = 30.0


def token(stack: AuthStack, *scopes: str, creds: tuple[str, str]) -> httpx.Response:
    query = [("service", "lading"), *[("scope", s) for s in scopes]]
    return httpx.get(f"{stack.base_url}/token", params=query, headers={"Authorization": basic(*creds)}, timeout=30)


def granted(response: httpx.Response) -> dict[str, list[str]]:
    """{scope name: granted actions}; the token leaves out scopes it grants nothing on."""
    assert response.status_code == 200, response.text
    found = {entry["name"]: entry["actions"] for entry in claims(response.json()["token"])["access"]}
    return {name: actions for name, actions in found.items() if actions}


def test_directory_users_get_what_their_groups_are_mapped_to(stack: AuthStack) -> None:
    dana = granted(token(stack, "repository:team-a/app:pull,push,delete", "repository:other/app:pull",
                         creds=("dana", "dana-pw")))
    assert sorted(dana["team-a/app"]) == ["delete", "pull", "push"] and "other/app" not in dana
    erin = token(stack, "registry:catalog:*", "repository:any/thing:push", creds=("erin", "erin-pw"))
    assert granted(erin) == {"catalog": ["*"], "any/thing": ["push"]}  # registry-admins → admin
    frank = token(stack, "repository:team-a/app:pull", creds=("frank", "frank-pw"))
    assert granted(frank) == {}  # in no mapped group: a valid account without grants
    wrong = token(stack, "repository:team-a/app:pull", creds=("dana", "not-her-password"))
    assert wrong.status_code == 401 and "password" in wrong.text
    listed = stack.lading("user", "list").stdout
    assert any(line.startswith("dana\t") and "origin=ldap" in line for line in listed.splitlines()), listed
    assert any(line.startswith("admin\t") and "origin=local" in line for line in listed.splitlines()), listed


def test_a_user_removed_from_a_group_loses_its_grants_within_the_cache_time(stack: AuthStack, slapd: Slapd) -> None:
    assert "push" in granted(token(stack, "repository:team-a/x:push", creds=("gwen", "gwen-pw")))["team-a/x"]
    slapd.remove_member("team-a", "gwen")
    try:
        removed = time.monotonic()
        while True:
            if "team-a/x" not in granted(token(stack, "repository:team-a/x:push", creds=("gwen", "gwen-pw"))):
                break
            # cache_seconds is 1 (conftest): past that, the next login asks the directory again.
            assert time.monotonic() - removed < TOKEN_DEADLINE_SECONDS, "gwen still pushes after leaving the group"
            time.sleep(0.2)
    finally:
        slapd.add_member("team-a", "gwen")


def refresh(stack: AuthStack, refresh_token: str) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "service": "lading", "client_id": "test",
        "scope": "repository:team-a/x:push"}, timeout=30)


def test_a_user_removed_from_the_directory_loses_access_within_the_cache_time(stack: AuthStack,
                                                                             slapd: Slapd) -> None:
    name = f"hank{uuid.uuid4().hex[:6]}"
    creds = (name, f"{name}-pw")
    slapd.add_user(name, "team-a")
    query = [("service", "lading"), ("scope", "repository:team-a/x:push"), ("offline_token", "true"),
             ("client_id", "test")]
    offline = httpx.get(f"{stack.base_url}/token", params=query, headers={"Authorization": basic(*creds)}, timeout=30)
    assert "push" in granted(offline)["team-a/x"]
    refresh_token = offline.json()["refresh_token"]
    assert "push" in granted(refresh(stack, refresh_token))["team-a/x"]
    console = Browser(stack)
    try:
        console.sign_in(creds)
        assert console.get("/ui/account").status_code == 200
        slapd.delete_user(name)
        removed = time.monotonic()
        # cache_seconds is 1 (conftest): past it, the password is bound again (and fails), and the
        # refresh token and the console session (no password with them) are looked up again with
        # the service account, which no longer finds the user.
        ended: dict[str, float] = {}
        while len(ended) < 3:
            elapsed = time.monotonic() - removed
            assert elapsed < TOKEN_DEADLINE_SECONDS, f"{name} kept access after leaving the directory: only {ended}"
            if "password" not in ended and token(stack, "repository:team-a/x:push", creds=creds).status_code == 401:
                ended["password"] = elapsed
            if "refresh token" not in ended and refresh(stack, refresh_token).status_code == 401:
                ended["refresh token"] = elapsed
            page = console.get("/ui/account")
            if "console session" not in ended and page.status_code == 303:
                assert page.headers["location"].startswith("/ui/signin")
                ended["console session"] = elapsed
            time.sleep(0.2)
    finally:
        console.http.close()
    # The row stays (with origin=ldap) should the person come back; it grants nothing now.
    assert any(line.startswith(f"{name}\t") for line in stack.lading("user", "list").stdout.splitlines())


def test_a_stopped_directory_answers_503_and_local_accounts_still_work(stack: AuthStack, slapd: Slapd) -> None:
    slapd.stop()
    try:
        refused = token(stack, "repository:team-a/app:pull", creds=("frank", "frank-pw"))
        assert refused.status_code == 503, refused.text
        body = refused.json()["errors"][0]
        assert body["code"] == "UNAVAILABLE" and "LDAP directory" in body["message"]
        assert "local accounts and robots still can" in body["message"]
        local = token(stack, "repository:team-a/app:pull", creds=ADMIN)
        assert granted(local)["team-a/app"] == ["pull"]
    finally:
        slapd.start()


def test_basic_mode_checks_directory_users_too(tmp_path: Path, slapd: Slapd) -> None:
    write(tmp_path / "signing.pem", generate_signing_key_pem())
    env = {"LADING_AUTH__MODE": "basic", "LADING_AUTH__UPLOAD_STATE_KEY": "k" * 32,
           "LADING_AUTH__BCRYPT_ROUNDS": "4", **ldap_env(slapd)}
    with AuthStack(tmp_path / "data", env=env) as stack:
        stack.lading("group", "map", "ldap", "cn=team-a,ou=groups,dc=example,dc=org", "team-a/*", "pull")
        for creds, expected in ((("dana", "dana-pw"), 404), (("dana", "wrong"), 401), (("frank", "frank-pw"), 403)):
            response = httpx.get(f"{stack.base_url}/v2/team-a/app/tags/list", headers={"Authorization": basic(*creds)},
                                 timeout=30)
            # 404: allowed to pull a repository that does not exist yet; 403: no grant.
            assert response.status_code == expected, (creds, response.status_code, response.text)


@pytest.mark.parametrize("name", ["robot$ci", "dana)(uid=*"])
def test_names_ldap_never_sees(stack: AuthStack, name: str) -> None:
    assert token(stack, "repository:team-a/app:pull", creds=(name, "x")).status_code == 401
