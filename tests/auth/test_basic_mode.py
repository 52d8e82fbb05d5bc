"""Basic mode: `Authorization: Basic` checked against the accounts, no tokens."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import oras.provider
import pytest
from lading.metadata.v1 import accounts_pb2 as pb

from tests.auth.conftest import ADMIN, ALICE, BOB, unique
from tests.auth.support import AuthStack, account_service, basic, refused_within
from tests.support.oci import Layout, get_manifest, image, push, sha256, with_digest, write_layout


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


@pytest.mark.clients
def test_skopeo_without_credentials_pulls_public_and_is_challenged_elsewhere(
        basic_stack: AuthStack, skopeo, tmp_path: Path) -> None:
    """containers/image (skopeo, podman, buildah, CRI-O) answers a Basic challenge it has no
    credentials for with `Authorization: Basic Og==` (empty user and password): that is an
    anonymous caller, so `public/*` pulls work and a push gets the challenge, not a failed login."""
    manifest = image(1, layer_size=1024)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    public_repo = unique("public/skopeo")
    public = f"docker://{basic_stack.hostport}/{public_repo}:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"{ADMIN[0]}:{ADMIN[1]}", f"oci:{source}:v1", public)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", public).stdout
    assert raw.encode().rstrip(b"\n") == manifest.payload
    skopeo("copy", "--src-tls-verify=false", public, f"oci:{tmp_path / 'pulled'}:v1")
    assert Layout(tmp_path / "pulled").descriptor_for("v1")["digest"] == manifest.digest

    private = f"docker://{basic_stack.hostport}/{unique('team-a/skopeo')}:v1"
    refused = skopeo("copy", "--dest-tls-verify=false", f"oci:{source}:v1", private, check=False)
    assert refused.returncode != 0
    assert "authentication required" in refused.stderr and "invalid username or password" not in refused.stderr
    # The same header by hand: anonymous, not a failed (throttled) password check.
    with httpx.Client(base_url=basic_stack.base_url, headers={"Authorization": "Basic Og=="}) as empty:
        assert get_manifest(empty, public_repo, "v1").status_code == 200
        challenged = empty.get("/v2/")
        assert challenged.status_code == 401
        assert challenged.json()["errors"][0]["message"] == "authentication required"


@pytest.mark.clients
def test_oras_with_its_basic_backend_pushes_and_pulls_anonymously_where_public(
        basic_stack: AuthStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """oras-py answers every challenge with a token request unless told `auth_backend="basic"`
    (its default reads the Basic realm as a token URL); with it, a login pushes and an anonymous
    client pulls `public/*`."""
    monkeypatch.chdir(tmp_path)  # oras-py only pushes files under the working directory
    (tmp_path / "notes.txt").write_bytes(b"basic mode, oras-py\n")
    target = f"{basic_stack.hostport}/{unique('public/oras')}:v1"
    admin = oras.provider.Registry(hostname=basic_stack.hostport, insecure=True, auth_backend="basic")
    admin.login(username=ADMIN[0], password=ADMIN[1], tls_verify=False)
    assert admin.push(target=target, files=["notes.txt"], quiet=True).status_code == 201
    anonymous = oras.provider.Registry(hostname=basic_stack.hostport, insecure=True, auth_backend="basic")
    (pulled,) = anonymous.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(pulled).read_bytes() == b"basic mode, oras-py\n"


def test_upload_session_belongs_to_its_account(basic_stack: AuthStack) -> None:
    repo = unique("team-a/owned")
    with as_user(basic_stack, ALICE) as alice, as_user(basic_stack, BOB) as bob:
        started = alice.post(f"/v2/{repo}/blobs/uploads/")
        location = started.headers["location"]
        hijack = bob.put(with_digest(location, sha256(b"bob")), content=b"bob")
        assert hijack.status_code == 404 and hijack.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        done = alice.put(with_digest(location, sha256(b"alice")), content=b"alice")
        assert done.status_code == 201


# The bound for Basic mode too: a deleted account or a revoked grant stops working within
# 2 s, although successful checks are remembered for `auth.basic_cache_seconds` (10 s here, the
# default): the change feed tells the gateway to drop them.
REVOCATION_BOUND_SECONDS = 2.0


def _remembered_user(stack: AuthStack, prefix: str) -> tuple[tuple[str, str], str]:
    """A user with pull,push on <name>/*, whose credentials the gateway has just checked (so they
    are in its 10 s cache), and the repository it pushed."""
    creds = (unique(prefix), "pw-basic-1")
    stack.lading("user", "add", creds[0], "--password-stdin", stdin=creds[1] + "\n")
    stack.lading("grant", "add", creds[0], f"{creds[0]}/*", "pull,push")
    repository = f"{creds[0]}/app"
    with as_user(stack, creds) as user:
        push(user, repository, image(1, layer_size=64), tag="v1")
        assert user.get(f"/v2/{repository}/tags/list").status_code == 200
    return creds, repository


def test_deleted_account_stops_working_within_the_bound(basic_stack: AuthStack) -> None:
    creds, repository = _remembered_user(basic_stack, "bgone")
    with as_user(basic_stack, creds) as user, account_service(basic_stack.metadata_target) as accounts:
        accounts.DeleteAccount(pb.DeleteAccountRequest(name=creds[0]), timeout=10)
        refused, elapsed, last = refused_within(
            REVOCATION_BOUND_SECONDS, lambda: user.get(f"/v2/{repository}/tags/list"),
            lambda r: r.status_code == 401)
    assert refused, f"a deleted account still works after {elapsed:.2f}s: {last.status_code}"


def test_revoked_grant_stops_working_within_the_bound(basic_stack: AuthStack) -> None:
    creds, repository = _remembered_user(basic_stack, "bgrant")
    with as_user(basic_stack, creds) as user, account_service(basic_stack.metadata_target) as accounts:
        accounts.Revoke(pb.RevokeRequest(account=creds[0], pattern=f"{creds[0]}/*", actions=["pull"]), timeout=10)
        refused, elapsed, last = refused_within(
            REVOCATION_BOUND_SECONDS, lambda: user.get(f"/v2/{repository}/tags/list"),
            lambda r: r.status_code == 403)
        assert refused, f"a revoked grant still works after {elapsed:.2f}s: {last.status_code}"
        # What was not revoked still works: the account is fine, only its pull is gone.
        assert user.post(f"/v2/{repository}/blobs/uploads/").status_code == 202


def test_password_change_ends_the_remembered_check_within_the_bound(basic_stack: AuthStack) -> None:
    creds, repository = _remembered_user(basic_stack, "bpass")
    with as_user(basic_stack, creds) as user, account_service(basic_stack.metadata_target) as accounts:
        accounts.SetPassword(pb.SetPasswordRequest(name=creds[0], password="pw-basic-2"), timeout=10)
        refused, elapsed, _ = refused_within(
            REVOCATION_BOUND_SECONDS, lambda: user.get(f"/v2/{repository}/tags/list"),
            lambda r: r.status_code == 401)
    assert refused, f"the old password still works after {elapsed:.2f}s"
    with as_user(basic_stack, (creds[0], "pw-basic-2")) as user:
        assert user.get(f"/v2/{repository}/tags/list").status_code == 200


def test_wrong_basic_passwords_back_off_with_429_and_retry_after(basic_stack: AuthStack) -> None:
    # Basic checks go through the same throttle as /token (issue 11, item 4): per client address
    # (given by X-Forwarded-For; 127.0.0.1 is a trusted proxy) and per account.
    creds = (unique("bguess"), "right-password-1")
    basic_stack.lading("user", "add", creds[0], "--password-stdin", stdin=creds[1] + "\n")
    attacker = "198.51.100.77"

    def get(password: str, address: str) -> httpx.Response:
        return httpx.get(f"{basic_stack.base_url}/v2/", timeout=30,
                         headers={"Authorization": basic(creds[0], password), "X-Forwarded-For": address})

    codes = [get(f"guess-{i}", attacker).status_code for i in range(6)]
    assert codes == [401] * 6  # the free failures; the 6th starts a 1 s backoff
    # At once, well inside that second (a refusal is itself held back up to a second): the next
    # guess, and the right password from the same address (it cannot be told from a guess).
    with ThreadPoolExecutor(2) as pool:
        throttled = [pool.submit(get, "guess-7", attacker), pool.submit(get, creds[1], attacker)]
        responses = [future.result() for future in throttled]
    for response in responses:
        assert response.status_code == 429, response.text
        assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(response.headers["retry-after"]) >= 1
    # The account is far from its own budget: from elsewhere the right password works.
    assert get(creds[1], "203.0.113.77").status_code == 200
