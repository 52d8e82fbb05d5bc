"""Basic mode: `Authorization: Basic` checked against the accounts, no tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import ADMIN, ALICE, BOB, unique
from tests.auth.support import AuthStack, basic
from tests.support.oci import get_manifest, image, push, sha256, with_digest


@pytest.fixture(scope="module")
def basic_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    root: Path = tmp_path_factory.mktemp("basic")
    env = {
        "LADING_AUTH__MODE": "basic",
        "LADING_AUTH__UPLOAD_STATE_KEY": "a shared secret for every gateway replica",
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0],
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
        "LADING_AUTH__ANONYMOUS_PULL": '["public/*"]',
    }
    with AuthStack(root / "data", env=env) as stack:
        for user, password in (ALICE, BOB):
            stack.lading("user", "add", user, "--password-stdin", stdin=password + "\n")
            stack.lading("grant", "add", user, "team-a/*", "pull,push")
        yield stack


def as_user(stack: AuthStack, creds: tuple[str, str] | None) -> httpx.Client:
    headers = {"Authorization": basic(*creds)} if creds else {}
    return httpx.Client(base_url=stack.base_url, headers=headers, timeout=30)


def test_challenge_is_basic_and_there_is_no_token_endpoint(basic_stack: AuthStack) -> None:
    response = httpx.get(f"{basic_stack.base_url}/v2/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="lading"'
    with as_user(basic_stack, ALICE) as c:
        assert c.get("/v2/").status_code == 200
    with as_user(basic_stack, ("alice", "wrong")) as c:
        wrong = c.get("/v2/")
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic ")
    assert httpx.get(f"{basic_stack.base_url}/token").status_code == 404


def test_push_pull_and_permissions(basic_stack: AuthStack) -> None:
    repo = unique("team-a/basic")
    manifest = image(1, layer_size=256)
    with as_user(basic_stack, ALICE) as alice:
        push(alice, repo, manifest, tag="v1")
        assert get_manifest(alice, repo, "v1").content == manifest.payload
        # Not granted: 403 DENIED (a new challenge would not help an authenticated account).
        denied = alice.post(f"/v2/{unique('team-b/basic')}/blobs/uploads/")
        assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
        assert alice.delete(f"/v2/{repo}/manifests/v1").status_code == 403
    with as_user(basic_stack, None) as anonymous:
        refused = anonymous.get(f"/v2/{repo}/manifests/v1")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic ")
    with as_user(basic_stack, ADMIN) as admin:
        public = unique("public/basic")
        push(admin, public, manifest, tag="v1")
        names = admin.get("/v2/_catalog").json()["repositories"]
        assert repo in names and public in names
    with as_user(basic_stack, None) as anonymous:
        assert get_manifest(anonymous, public, "v1").status_code == 200
        assert anonymous.post(f"/v2/{public}/blobs/uploads/").status_code == 401
        assert anonymous.get("/v2/_catalog").status_code == 401
    with as_user(basic_stack, ALICE) as alice:
        assert set(alice.get("/v2/_catalog").json()["repositories"]) == {
            n for n in names if n.startswith(("team-a/", "public/"))}


def test_upload_session_belongs_to_its_account(basic_stack: AuthStack) -> None:
    repo = unique("team-a/owned")
    with as_user(basic_stack, ALICE) as alice, as_user(basic_stack, BOB) as bob:
        started = alice.post(f"/v2/{repo}/blobs/uploads/")
        location = started.headers["location"]
        hijack = bob.put(with_digest(location, sha256(b"bob")), content=b"bob")
        assert hijack.status_code == 404 and hijack.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        done = alice.put(with_digest(location, sha256(b"alice")), content=b"alice")
        assert done.status_code == 201
