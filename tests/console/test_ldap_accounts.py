"""Directory accounts through the whole registry: `/token` (and Basic mode) check LDAP users in the
metadata plane, their groups become grants and admin, a user taken out of a group loses what it
gave within the cache time, and a directory that is down answers 503, never "wrong password",
while local accounts keep working."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, basic, claims, write
from tests.console.conftest import ADMIN, ldap_env
from tests.support.slapd import Slapd

TOKEN_DEADLINE_SECONDS = 5.0


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
