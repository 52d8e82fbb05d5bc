"""The administrator's pages doing their work, over plain HTTP as the console's forms send it:
a user created (who then signs in), a grant given and revoked, a directory group mapped and
unmapped, maintenance mode on and off, a dead-lettered event replayed, and the storage chart
naming the right repositories with the right sizes. Each check looks at the effect (a token, a
push, a delivery), not only at the page."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from lading.metadata.v1 import admin_pb2, admin_pb2_grpc

from gateway.console.views import human_size
from tests.auth.support import AuthStack, DockerAuth, basic, claims
from tests.console.conftest import ADMIN, Browser
from tests.events.receiver import Receiver
from tests.support import oci
from tests.support.slapd import group_dn

MAINTENANCE_SWITCH_SECONDS = 3.0


@pytest.fixture
def admin(stack: AuthStack) -> Iterator[Browser]:
    browser = Browser(stack)
    try:
        browser.sign_in(ADMIN)
        yield browser
    finally:
        browser.http.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def granted(stack: AuthStack, creds: tuple[str, str], scope: str) -> list[str]:
    """The actions a token for `scope` grants `creds` (401 → an AssertionError)."""
    response = httpx.get(f"{stack.base_url}/token", params={"service": "lading", "scope": scope},
                         headers={"Authorization": basic(*creds)}, timeout=30)
    assert response.status_code == 200, response.text
    return next((entry["actions"] for entry in claims(response.json()["token"])["access"]), [])


def rows(page: httpx.Response) -> list[list[str]]:
    """The body rows of the page's first table, as the text of their cells."""
    body = page.text[page.text.index("<tbody>"):page.text.index("</tbody>")]
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_an_admin_creates_users_who_can_sign_in(stack: AuthStack, admin: Browser) -> None:
    plain, boss = unique("ursula"), unique("boss")
    for name, extra in ((plain, {}), (boss, {"admin": "1"})):
        made = admin.post("/ui/admin/users", {"name": name, "password": f"{name}-pw", **extra})
        assert made.status_code == 303 and made.headers["location"] == "/ui/admin/users", made.text
    listed = {row[0]: row[1:4] for row in rows(admin.get("/ui/admin/users"))}
    assert listed[plain] == ["local", "user", "active"] and listed[boss] == ["local", "admin", "active"]
    for name, is_admin in ((plain, False), (boss, True)):
        person = Browser(stack)
        try:
            person.sign_in((name, f"{name}-pw"))
            assert person.get("/ui/admin/users").status_code == (200 if is_admin else 403)
        finally:
            person.http.close()
    taken = admin.post("/ui/admin/users", {"name": plain, "password": "x"})
    assert taken.status_code >= 400 and "exists" in taken.text


def test_an_admin_grants_and_revokes(stack: AuthStack, admin: Browser) -> None:
    name = unique("gil")
    assert admin.post("/ui/admin/users", {"name": name, "password": f"{name}-pw"}).status_code == 303
    pattern = f"{unique('proj')}/*"
    scope = f"repository:{pattern[:-1]}app:pull,push,delete"
    assert granted(stack, (name, f"{name}-pw"), scope) == []
    given = admin.post("/ui/admin/grants", {"account": name, "pattern": pattern, "pull": "1", "push": "1"})
    assert given.status_code == 303 and given.headers["location"] == "/ui/admin/grants"
    assert [name, pattern, "pull, push"] in [row[:3] for row in rows(admin.get("/ui/admin/grants"))]
    assert sorted(granted(stack, (name, f"{name}-pw"), scope)) == ["pull", "push"]
    revoked = admin.post("/ui/admin/grants/revoke", {"account": name, "pattern": pattern})
    assert revoked.status_code == 303
    assert not [row for row in rows(admin.get("/ui/admin/grants")) if row[:2] == [name, pattern]]
    assert granted(stack, (name, f"{name}-pw"), scope) == []


def test_an_admin_maps_and_unmaps_a_directory_group(stack: AuthStack, admin: Browser) -> None:
    # dana is in the directory's team-a; a new mapping of it gives her pull on another pattern.
    project = unique("mapped")
    scope = f"repository:{project}/app:pull"
    dana = ("dana", "dana-pw")
    assert granted(stack, dana, scope) == []
    mapped = admin.post("/ui/admin/directory", {"provider": "ldap", "group": group_dn("team-a"),
                                                "pattern": f"{project}/*", "pull": "1"})
    assert mapped.status_code == 303 and mapped.headers["location"] == "/ui/admin/directory"
    listed = [row[:3] for row in rows(admin.get("/ui/admin/directory"))]
    assert ["ldap", group_dn("team-a"), f"pull on {project}/*"] in listed
    assert granted(stack, dana, scope) == ["pull"]
    # And an OIDC group made administrators, then removed again.
    auditors = unique("auditors")
    assert admin.post("/ui/admin/directory", {"provider": "oidc", "group": auditors, "admin": "1"}).status_code == 303
    assert ["oidc", auditors, "administrator"] in [row[:3] for row in rows(admin.get("/ui/admin/directory"))]
    assert admin.post("/ui/admin/directory/remove", {"provider": "oidc", "group": auditors, "pattern": "",
                                                     "admin": "1"}).status_code == 303
    removed = admin.post("/ui/admin/directory/remove", {"provider": "ldap", "group": group_dn("team-a"),
                                                        "pattern": f"{project}/*"})
    assert removed.status_code == 303
    left = [row[:2] for row in rows(admin.get("/ui/admin/directory"))]
    assert ["oidc", auditors] not in left and ["ldap", group_dn("team-a")] in left  # its other mapping stays
    assert granted(stack, dana, scope) == []


def upload_start_within(registry: httpx.Client, repository: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + MAINTENANCE_SWITCH_SECONDS
    while (response := registry.post(f"/v2/{repository}/blobs/uploads/")).status_code != status:
        assert time.monotonic() < deadline, (status, response.status_code, response.text)
        time.sleep(0.1)
    return response


def test_an_admin_turns_maintenance_on_and_off(stack: AuthStack, admin: Browser) -> None:
    repository = unique("team-a/maint")
    try:
        on = admin.post("/ui/admin/maintenance", {"on": "1"})
        assert on.status_code == 303 and on.headers["location"] == "/ui/admin/"
        assert "Maintenance mode is <strong>on</strong>" in admin.get("/ui/admin/").text
        with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as registry:
            # The gateway trusts its last answer for gateway.maintenance_check_seconds (1 s).
            refused = upload_start_within(registry, repository, 405)
            assert "maintenance" in refused.text, refused.text
            off = admin.post("/ui/admin/maintenance", {"on": "0"})
            assert off.status_code == 303
            assert "Maintenance mode is <strong>off</strong>" in admin.get("/ui/admin/").text
            upload_start_within(registry, repository, 202)
            assert oci.push(registry, repository, oci.image(layers=1), "v1").status_code == 201
    finally:
        with grpc.insecure_channel(stack.metadata_target) as channel:
            admin_pb2_grpc.AdminServiceStub(channel).SetMaintenance(admin_pb2.SetMaintenanceRequest(on=False),
                                                                    timeout=10)


def test_an_admin_replays_a_dead_letter(stack: AuthStack, admin: Browser, events_receiver: Receiver) -> None:
    repository = unique("team-a/events")
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as registry:
        assert oci.push(registry, repository, oci.image(layers=1), "gone").status_code == 201
        assert registry.delete(f"/v2/{repository}/manifests/gone").status_code == 202
    deadline = time.monotonic() + 15
    while True:  # the receiver answers 500; one attempt makes it a dead letter
        dead = [row for row in rows(admin.get("/ui/admin/events?state=dead")) if row[3:4] == [repository]]
        if dead:
            break
        assert time.monotonic() < deadline, "the failed delivery never became a dead letter"
        time.sleep(0.2)
    [(row_id, endpoint, action, _, state, attempts, error, _)] = dead
    assert (endpoint, action, state, attempts) == ("console", "delete", "dead", "1") and "500" in error
    events_receiver.status = 200
    try:
        replayed = admin.post("/ui/admin/events/replay", {"id": row_id})
        assert replayed.status_code == 303 and replayed.headers["location"] == "/ui/admin/events"
        while not any(e["target"].get("repository") == repository for e in events_receiver.events):
            assert time.monotonic() < deadline + 15, "the replayed event never arrived"
            time.sleep(0.1)
    finally:
        events_receiver.status = 500
    [event] = [e for e in events_receiver.events if e["target"].get("repository") == repository]
    assert event["action"] == "delete"
    while True:
        states = [row[4] for row in rows(admin.get("/ui/admin/events")) if row[0] == row_id]
        if states == ["delivered"]:
            break
        assert time.monotonic() < deadline + 15, states
        time.sleep(0.1)


def test_the_storage_chart_names_the_largest_repositories_and_their_sizes(stack: AuthStack, admin: Browser) -> None:
    # Two repositories larger than anything the other tests push, one blob shared between them.
    big, small = unique("team-a/big"), unique("team-a/small")
    shared = oci.random_blob(64 * 1024)
    big_image = oci.image(layers=2, layer_size=512 * 1024)
    small_image = oci.image(layers=1, layer_size=640 * 1024)
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=60) as registry:
        for repository, image, tags in ((big, big_image, ("v1", "v2")), (small, small_image, ("v1",))):
            assert oci.push_blob(registry, repository, shared).status_code == 201
            for tag in tags:
                assert oci.push(registry, repository, image, tag).status_code == 201
        catalog = registry.get("/v2/_catalog", params={"n": 10000}).json()["repositories"]

    def blob_bytes(image: oci.Manifest) -> int:
        return sum(blob.size for blob in image.blobs) + shared.size

    page = admin.get("/ui/admin/storage")
    assert page.status_code == 200
    assert f"<p>{len(catalog)} repositories;" in page.text
    chart = rows(page)
    names = [row[0] for row in chart]
    assert names[:2] == [big, small], names
    sizes = [row[1] for row in chart[:2]]
    assert sizes == [human_size(blob_bytes(big_image)), human_size(blob_bytes(small_image))]
    assert [row[2] for row in chart[:2]] == ["2", "1"]  # tags
    bars = [float(w) for w in re.findall(r'<rect x="0" y="0" height="10" width="([0-9.]+)"', page.text)]
    assert bars[0] == 100.0 and bars[1] == round(100 * blob_bytes(small_image) / blob_bytes(big_image), 1)
    assert bars == sorted(bars, reverse=True) and len(bars) == len(chart)
