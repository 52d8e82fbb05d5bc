"""The console's safety over plain HTTP: cookie flags (HttpOnly, SameSite, Secure behind TLS), the
Content-Security-Policy and other headers, CSRF on every form, sign-out, and every admin action
refused to a non-admin with nothing changed (the same checks as the API)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from lading.metadata.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
)

from tests.auth.support import AuthStack, DockerAuth
from tests.console.conftest import ADMIN, ALICE, CSRF_FIELD, Browser
from tests.support import oci
from tests.support.slapd import Slapd
from tests.support.stack import Stack


@pytest.fixture
def browser(stack: AuthStack) -> Iterator[Browser]:
    client = Browser(stack)
    yield client
    client.http.close()


def test_session_cookie_flags_and_security_headers(stack: AuthStack, browser: Browser) -> None:
    signed_in = browser.sign_in(ADMIN)
    cookie = signed_in.headers["set-cookie"].lower()
    assert cookie.startswith("lading_session=") and "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/ui/" in cookie and "secure" not in cookie  # plain HTTP here
    page = browser.get("/ui/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "same-origin"
    assert "<script" not in page.text.replace('<script src="/ui/static/console.js" defer></script>', "")
    # Behind a TLS-terminating proxy (127.0.0.1 is a trusted proxy by default) the cookie is Secure.
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={
            "x-forwarded-proto": "https", "x-forwarded-host": "registry.example", "origin": "https://registry.example"}) as tls:
        form = tls.get("/ui/signin")
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        assert "secure" in form.headers["set-cookie"].lower()
        # (The proxy's side speaks HTTPS; on this plain hop the client must be told to send the cookie.)
        answer = tls.post("/ui/signin", data={"csrf": token, "username": ADMIN[0], "password": ADMIN[1]},
                          headers={"cookie": f"lading_csrf={token}"})
        assert answer.status_code == 303 and "secure" in answer.headers["set-cookie"].lower()


def test_every_form_needs_its_csrf_token_and_our_origin(stack: AuthStack, browser: Browser) -> None:
    browser.get("/ui/signin")
    for data, headers in (({"csrf": ""}, {}), ({"csrf": "forged"}, {}), ({}, {"origin": "https://evil.example"})):
        response = browser.http.post("/ui/signin", data={"csrf": browser.csrf, "username": ADMIN[0],
                                                        "password": ADMIN[1], **data}, headers=headers)
        assert response.status_code == 403 and "lading_session" not in response.headers.get("set-cookie", "")
    repository = f"team-a/csrf-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as registry:
        assert oci.push(registry, repository, oci.image(layers=1), "v1").status_code == 201
    browser.sign_in(ADMIN)
    pre_sign_in_token = browser.csrf
    forged = browser.post(f"/ui/r/{repository}/-/tags/v1/delete", {}, csrf="x" * 43)
    assert forged.status_code == 403
    other_site = browser.http.post(f"/ui/r/{repository}/-/tags/v1/delete", data={"csrf": browser.csrf},
                                   headers={"origin": "https://evil.example"})
    assert other_site.status_code == 403
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as registry:
        assert registry.get(f"/v2/{repository}/tags/list").json()["tags"] == ["v1"]
    deleted = browser.post(f"/ui/r/{repository}/-/tags/v1/delete", {})
    assert deleted.status_code == 303 and pre_sign_in_token


def test_sign_out_ends_the_session(stack: AuthStack, browser: Browser) -> None:
    browser.sign_in(ALICE)
    session = browser.http.cookies.get("lading_session")
    assert session and browser.get("/ui/").status_code == 200
    out = browser.post("/ui/signout", {})
    assert out.status_code == 303 and 'lading_session=""' in out.headers["set-cookie"]
    with httpx.Client(base_url=stack.base_url, timeout=30, cookies={"lading_session": session}) as replay:
        again = replay.get("/ui/")
        assert again.status_code == 303 and again.headers["location"].startswith("/ui/signin")


# Every admin action, as the console's forms send it.
ADMIN_POSTS = {
    "maintenance on": ("/ui/admin/maintenance", {"on": "1"}),
    "create user": ("/ui/admin/users", {"name": "mallory", "password": "pw", "admin": "1"}),
    "delete account": ("/ui/admin/accounts/delete", {"name": ADMIN[0]}),
    "disable account": ("/ui/admin/accounts/disable", {"name": ADMIN[0], "disabled": "1"}),
    "create robot": ("/ui/admin/robots", {"name": "mallory", "days": "0"}),
    "grant": ("/ui/admin/grants", {"account": ALICE[0], "pattern": "*", "push": "1", "delete": "1"}),
    "revoke grant": ("/ui/admin/grants/revoke", {"account": ALICE[0], "pattern": "team-a/*"}),
    "map group": ("/ui/admin/directory", {"provider": "oidc", "group": "mallory", "admin": "1"}),
    "unmap group": ("/ui/admin/directory/remove", {"provider": "oidc", "group": "platform", "pattern": "platform/*"}),
    "gc dry run": ("/ui/admin/gc", {"delete_untagged": "1"}),
    "replay events": ("/ui/admin/events/replay", {"id": "0"}),
}
ADMIN_PAGES = ("/ui/admin/", "/ui/admin/users", "/ui/admin/robots", "/ui/admin/grants", "/ui/admin/directory",
               "/ui/admin/gc", "/ui/admin/events", "/ui/admin/storage")


def _state(stack: AuthStack) -> tuple[object, ...]:
    """Accounts, grants, group mappings, maintenance mode and the event rows, from the metadata plane."""
    with grpc.insecure_channel(stack.metadata_target) as channel:
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        events = events_pb2_grpc.EventsServiceStub(channel)
        return (
            accounts.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=10),
            accounts.ListGrants(accounts_pb2.ListGrantsRequest(), timeout=10),
            accounts.ListGroupMappings(accounts_pb2.ListGroupMappingsRequest(), timeout=10),
            admin.GetMaintenance(admin_pb2.GetMaintenanceRequest(), timeout=10),
            events.ListEvents(events_pb2.ListEventsRequest(), timeout=10),
        )


@pytest.mark.parametrize("action", sorted(ADMIN_POSTS))
def test_each_admin_action_is_refused_to_a_non_admin(stack: AuthStack, browser: Browser, action: str) -> None:
    before = _state(stack)
    browser.sign_in(ALICE)
    path, data = ADMIN_POSTS[action]
    response = browser.post(path, data)
    assert response.status_code == 403, (action, response.status_code, response.text[:300])
    assert "alice is not an administrator" in response.text
    assert _state(stack) == before


def test_every_admin_page_is_refused_to_a_non_admin_and_served_to_an_admin(stack: AuthStack,
                                                                           browser: Browser) -> None:
    browser.sign_in(ALICE)
    for path in ADMIN_PAGES:
        assert browser.get(path).status_code == 403, path
    admin = Browser(stack)
    try:
        admin.sign_in(ADMIN)
        for path in ADMIN_PAGES:
            assert admin.get(path).status_code == 200, path
        plan = admin.post("/ui/admin/gc", {})
        assert plan.status_code == 200 and "A run would free" in plan.text
    finally:
        admin.http.close()


def test_a_directory_users_console_session_ends_when_it_leaves_a_group(stack: AuthStack, slapd: Slapd,
                                                                        browser: Browser) -> None:
    slapd.add_member("team-a", "frank")
    try:
        browser.sign_in(("frank", "frank-pw"))
        assert browser.get("/ui/account").status_code == 200
        slapd.remove_member("team-a", "frank")
        left = time.monotonic()
        # cache_seconds is 1 (conftest): then the service account reads frank's groups again, the
        # lost group ends his tokens and sessions.
        while browser.get("/ui/account").status_code == 200:
            assert time.monotonic() - left < 5, "the session outlived the group membership"
            time.sleep(0.2)
        assert browser.get("/ui/account").headers["location"].startswith("/ui/signin")
    finally:
        with contextlib.suppress(AssertionError):
            slapd.remove_member("team-a", "frank")


def test_an_oidc_callback_that_did_not_start_here_is_refused(browser: Browser) -> None:
    refused = browser.get("/ui/oidc/callback?code=stolen&state=guessed")
    assert refused.status_code == 401 and "did not start here" in refused.text
    assert "lading_session" not in refused.headers.get("set-cookie", "")


def test_with_auth_off_the_console_is_open_and_administration_is_the_commands(tmp_path: Path) -> None:
    with Stack(tmp_path / "data") as stack:
        repository = "open/app"
        with httpx.Client(base_url=stack.base_url, timeout=30) as registry:
            assert oci.push(registry, repository, oci.image(layers=1), "v1").status_code == 201
            page = registry.get("/ui/")
            assert page.status_code == 200 and repository in page.text and "Sign out" not in page.text
            assert registry.get(f"/ui/r/{repository}/-/manifests/v1").status_code == 200
            admin = registry.get("/ui/admin/")
            assert admin.status_code == 403 and "lading command" in admin.text
            assert registry.get("/ui/signin", follow_redirects=False).headers["location"] == "/ui/"
