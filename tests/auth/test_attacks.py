"""The attack set: each attempt is refused with the right code and leaves the registry unchanged
(catalog, every tag list and every stored blob compared before and after)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.keys import libtrust_kid, load_signing_key
from gateway.auth.tokens import canonical_es256
from tests.auth.conftest import ADMIN, ALICE, BOB, Secured, unique
from tests.auth.support import challenge_params, claims, client, get_token, snapshot
from tests.support.oci import image, push, random_blob, sha256, with_digest

TARGET = "team-a/app"
OTHER = "team-b/secret"


@pytest.fixture(scope="module")
def seeded(secured: Secured) -> Secured:
    """team-a/app:v1 and team-b/secret:v1, pushed by the admin."""
    with client(secured.stack, ADMIN) as admin:
        push(admin, TARGET, image(1, layer_size=512), tag="v1")
        push(admin, OTHER, image(1, layer_size=512), tag="v1")
    return secured


@contextlib.contextmanager
def unchanged(secured: Secured) -> Iterator[None]:
    before = snapshot(secured.stack, ADMIN)
    yield
    assert snapshot(secured.stack, ADMIN) == before, "a refused request changed the registry"


def forge(secured: Secured, *, key: object | None = None, kid: str | None = None, alg: str = "ES256",
          **overrides: object) -> str:
    """A token for everything on team-a/app and team-b/secret, signed with our key unless told."""
    signing = load_signing_key(secured.keys / "signing.pem")
    now = int(time.time())
    claims = {"iss": "lading", "sub": "admin", "aud": "lading", "exp": now + 300, "nbf": now, "iat": now,
              "jti": "x", "access": [{"type": "repository", "name": n, "actions": ["pull", "push", "delete"]}
                                     for n in (TARGET, OTHER)]}
    claims.update(overrides)
    token = jwt.encode(claims, key or signing.private_key, algorithm=alg, headers={"kid": kid or signing.kid})
    # The canonical (low-S) spelling, as our issuer writes it: only that form verifies.
    return canonical_es256(token) if alg == "ES256" else token


def raw_jwt(header: dict, claims: dict, signature: bytes) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    return f"{signing_input}.{part(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mutations(base: str, headers: dict[str, str]) -> list[httpx.Response]:
    """Every way to change team-a/app, all with the same credentials."""
    manifest = image(1, layer_size=128)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        return [
            c.post(f"/v2/{TARGET}/blobs/uploads/"),
            c.post(f"/v2/{TARGET}/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"),
            c.put(f"/v2/{TARGET}/manifests/evil", content=manifest.payload,
                  headers={"Content-Type": manifest.media_type}),
            c.delete(f"/v2/{TARGET}/manifests/v1"),
        ]


def test_no_token(seeded: Secured) -> None:
    with unchanged(seeded):
        for response in mutations(seeded.base_url, {}):
            assert response.status_code == 401, response.text
            assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert response.headers["www-authenticate"].startswith("Bearer realm=")
        assert httpx.get(f"{seeded.base_url}/v2/{TARGET}/tags/list").status_code == 401


@pytest.mark.parametrize("case", ["expired", "unknown-key", "spoofed-kid", "alg-none", "hs256-public-key",
                                  "wrong-aud", "wrong-iss", "not-yet-valid", "garbage"])
def test_bad_tokens_are_refused(seeded: Secured, case: str) -> None:
    signing = load_signing_key(seeded.keys / "signing.pem")
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"iss": "lading", "sub": "admin", "aud": "lading", "exp": now + 300, "iat": now,
              "access": [{"type": "repository", "name": TARGET, "actions": ["pull", "push", "delete"]}]}
    if case == "expired":
        token = forge(seeded, exp=now - 3600, iat=now - 4000, nbf=now - 4000)
    elif case == "unknown-key":
        token = forge(seeded, key=stranger, kid=libtrust_kid(stranger.public_key()))
    elif case == "spoofed-kid":
        token = forge(seeded, key=stranger)  # our kid, someone else's key
    elif case == "alg-none":
        token = raw_jwt({"alg": "none", "typ": "JWT", "kid": signing.kid}, claims, b"")
    elif case == "hs256-public-key":
        public_pem = signing.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = {"alg": "HS256", "typ": "JWT", "kid": signing.kid}
        unsigned = raw_jwt(header, claims, b"").rsplit(".", 1)[0]
        signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
        token = raw_jwt(header, claims, signature)
    elif case == "wrong-aud":
        token = forge(seeded, aud="another-registry")
    elif case == "wrong-iss":
        token = forge(seeded, iss="evil-issuer")
    elif case == "not-yet-valid":
        token = forge(seeded, nbf=now + 3600, iat=now + 3600)
    else:
        token = "not.a.jwt"
    with unchanged(seeded):
        for response in mutations(seeded.base_url, bearer(token)):
            assert response.status_code == 401, f"{case}: {response.status_code} {response.text}"
            assert challenge_params(response.headers["www-authenticate"]).get("error") == "invalid_token"
        read = httpx.get(f"{seeded.base_url}/v2/{TARGET}/manifests/v1", headers=bearer(token))
        assert read.status_code == 401


def test_the_real_key_works_so_the_refusals_above_mean_something(seeded: Secured) -> None:
    response = httpx.get(f"{seeded.base_url}/v2/{TARGET}/tags/list", headers=bearer(forge(seeded)))
    assert response.status_code == 200 and response.json()["tags"] == ["v1"]


def test_token_for_repo_a_is_useless_on_repo_b(seeded: Secured) -> None:
    token = get_token(seeded.base_url, f"repository:{TARGET}:pull,push", creds=ALICE)
    with unchanged(seeded):
        for method, path in (("GET", f"/v2/{OTHER}/manifests/v1"), ("GET", f"/v2/{OTHER}/tags/list"),
                             ("POST", f"/v2/{OTHER}/blobs/uploads/"), ("DELETE", f"/v2/{OTHER}/manifests/v1")):
            response = httpx.request(method, f"{seeded.base_url}{path}", headers=bearer(token))
            assert response.status_code == 403, f"{method} {path}: {response.status_code}"
            assert response.json()["errors"][0]["code"] == "DENIED"
            params = challenge_params(response.headers["www-authenticate"])
            assert params["error"] == "insufficient_scope" and params["scope"].startswith(f"repository:{OTHER}:")


def test_pull_token_cannot_push_or_delete(seeded: Secured) -> None:
    token = get_token(seeded.base_url, f"repository:{TARGET}:pull", creds=ALICE)
    assert httpx.get(f"{seeded.base_url}/v2/{TARGET}/tags/list", headers=bearer(token)).status_code == 200
    with unchanged(seeded):
        for response in mutations(seeded.base_url, bearer(token)):
            assert response.status_code == 403, response.text
            assert challenge_params(response.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_scope_escalation_in_the_token_request_gets_only_what_is_granted(seeded: Secured) -> None:
    # alice may only pull shared/*; and has no delete anywhere.
    token = get_token(seeded.base_url, "repository:shared/lib:pull,push,delete", f"repository:{TARGET}:delete",
                      f"repository:{OTHER}:pull", "registry:catalog:*", creds=ALICE)
    access = jwt.decode(token, options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "shared/lib", "actions": ["pull"]}]
    with unchanged(seeded):
        assert httpx.post(f"{seeded.base_url}/v2/shared/lib/blobs/uploads/", headers=bearer(token)).status_code == 403
        for response in mutations(seeded.base_url, bearer(token)):
            assert response.status_code == 403


def test_mount_from_a_repository_the_caller_cannot_pull(seeded: Secured) -> None:
    with client(seeded.stack, ADMIN) as admin:
        secret = random_blob(300)
        push_target = f"/v2/{OTHER}/blobs/uploads/"
        started = admin.post(push_target)
        assert admin.put(with_digest(started.headers["location"], secret.digest), content=secret.data).status_code == 201
    destination = unique("team-a/mount")
    # alice asks for pull on the source too: the token server leaves it out.
    token = get_token(seeded.base_url, f"repository:{destination}:pull,push", f"repository:{OTHER}:pull", creds=ALICE)
    with unchanged(seeded):
        for params in ({"mount": secret.digest, "from": OTHER}, {"mount": secret.digest}):
            response = httpx.post(f"{seeded.base_url}/v2/{destination}/blobs/uploads/", params=params,
                                  headers=bearer(token))
            assert response.status_code == 202, response.text  # a new session, not a mount
            assert "/blobs/uploads/" in response.headers["location"]
            seen = httpx.head(f"{seeded.base_url}/v2/{destination}/blobs/{secret.digest}", headers=bearer(token))
            assert seen.status_code == 404
    # The same mount by someone who may pull the source works (so the 202 above was the refusal).
    admin_token = get_token(seeded.base_url, f"repository:{destination}:pull,push", f"repository:{OTHER}:pull",
                            creds=ADMIN)
    mounted = httpx.post(f"{seeded.base_url}/v2/{destination}/blobs/uploads/",
                         params={"mount": secret.digest, "from": OTHER}, headers=bearer(admin_token))
    assert mounted.status_code == 201


def test_upload_session_hijack_by_another_account(seeded: Secured) -> None:
    repo = unique("team-a/shared-upload")
    data = b"alice's layer" * 100
    alice = get_token(seeded.base_url, f"repository:{repo}:pull,push", creds=ALICE)
    bob = get_token(seeded.base_url, f"repository:{repo}:pull,push", creds=BOB)
    started = httpx.post(f"{seeded.base_url}/v2/{repo}/blobs/uploads/", headers=bearer(alice))
    assert started.status_code == 202
    location = started.headers["location"]
    assert "_state=" in location
    upload_id = started.headers["docker-upload-uuid"]
    url = f"{seeded.base_url}{location}"
    bare = f"{seeded.base_url}/v2/{repo}/blobs/uploads/{upload_id}"
    with unchanged(seeded):
        attempts = [
            httpx.patch(url, content=b"bob's bytes", headers={**bearer(bob), "Content-Range": "0-10"}),
            httpx.put(with_digest(url, sha256(b"bob")), content=b"bob", headers=bearer(bob)),
            httpx.get(url, headers=bearer(bob)),
            httpx.delete(url, headers=bearer(bob)),
            # alice herself without the state (a guessed or stripped URL)
            httpx.patch(bare, content=b"x", headers={**bearer(alice), "Content-Range": "0-0"}),
            httpx.get(f"{bare}?_state=forged", headers=bearer(alice)),
            # the state of another repository's path
            httpx.get(f"{seeded.base_url}/v2/team-a/elsewhere/blobs/uploads/{upload_id}?{location.split('?')[1]}",
                      headers=bearer(get_token(seeded.base_url, "repository:team-a/elsewhere:pull,push", creds=ALICE))),
        ]
        for response in attempts:
            assert response.status_code == 404, f"{response.request.method} {response.request.url}: {response.text}"
            assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    # alice's session is intact and completes.
    status = httpx.get(url, headers=bearer(alice))
    assert status.status_code == 204 and status.headers["range"] == "0-0"
    patched = httpx.patch(url, content=data, headers={**bearer(alice), "Content-Range": f"0-{len(data) - 1}"})
    assert patched.status_code == 202 and "_state=" in patched.headers["location"]
    done = httpx.put(with_digest(f"{seeded.base_url}{patched.headers['location']}", sha256(data)), headers=bearer(alice))
    assert done.status_code == 201, done.text


def test_own_session_status_with_pull_token_and_cancel_with_delete_token(seeded: Secured) -> None:
    """Clients that keep one token per repository and method (the OCI conformance suite) ask for
    an upload's status with their pull token and cancel it with their delete token, as CNCF
    Distribution maps GET to pull and DELETE to delete. Both work on the caller's own session and
    nowhere else: the session stays bound to the account that started it."""
    repo = unique("team-a/token-per-method")
    push_token = get_token(seeded.base_url, f"repository:{repo}:pull,push", creds=ADMIN)
    pull_token = get_token(seeded.base_url, f"repository:{repo}:pull", creds=ADMIN)
    delete_token = get_token(seeded.base_url, f"repository:{repo}:delete", creds=ADMIN)
    assert claims(pull_token)["access"][0]["actions"] == ["pull"]
    assert claims(delete_token)["access"][0]["actions"] == ["delete"]
    started = httpx.post(f"{seeded.base_url}/v2/{repo}/blobs/uploads/", headers=bearer(push_token))
    assert started.status_code == 202, started.text
    url = f"{seeded.base_url}{started.headers['location']}"
    chunk = b"first chunk"
    patched = httpx.patch(url, content=chunk, headers={**bearer(push_token), "Content-Range": f"0-{len(chunk) - 1}"})
    assert patched.status_code == 202, patched.text
    url = f"{seeded.base_url}{patched.headers['location']}"

    status = httpx.get(url, headers=bearer(pull_token))
    assert status.status_code == 204, status.text
    assert status.headers["range"] == f"0-{len(chunk) - 1}"
    # The lesser tokens still cannot write to the session.
    with unchanged(seeded):
        for token in (pull_token, delete_token):
            refused = httpx.patch(url, content=b"more", headers={**bearer(token), "Content-Range": f"{len(chunk)}-{len(chunk) + 3}"})
            assert refused.status_code == 403, refused.text
            assert challenge_params(refused.headers["www-authenticate"])["error"] == "insufficient_scope"
    # Another account's pull token learns nothing about the session.
    bob_pull = get_token(seeded.base_url, f"repository:{repo}:pull", creds=BOB)
    foreign = httpx.get(url, headers=bearer(bob_pull))
    assert foreign.status_code == 404 and foreign.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"

    cancelled = httpx.delete(url, headers=bearer(delete_token))
    assert cancelled.status_code == 204, cancelled.text
    gone = httpx.get(url, headers=bearer(push_token))
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def _raw_get(secured: Secured, path: str, token: str) -> tuple[int, dict]:
    """GET with the path sent exactly as written (httpx would normalise dot segments)."""
    connection = http.client.HTTPConnection(secured.stack.host, secured.stack.port, timeout=10)
    try:
        connection.request("GET", path, headers=bearer(token))
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else {}
    finally:
        connection.close()


@pytest.mark.parametrize("path", [
    f"/v2/{TARGET}/../../{OTHER}/tags/list",
    f"/v2/{TARGET}/%2e%2e/%2e%2e/{OTHER}/tags/list",
    "/v2/team-a/%2E%2E/team-b/secret/manifests/v1",
    "/v2/team-a//app/tags/list",
    "/v2/Team-A/app/tags/list",
    "/v2/team-a/APP/manifests/v1",
    f"/v2/{TARGET}/tags/list/",
    f"/v2/{TARGET}/manifests/v1/",
    "/v2/../v2/team-b/secret/tags/list",
    "/v2/./team-b/secret/tags/list",
])
def test_odd_names_with_a_valid_token(seeded: Secured, path: str) -> None:
    scoped = get_token(seeded.base_url, f"repository:{TARGET}:pull,push,delete", creds=ADMIN)
    everything = get_token(seeded.base_url, f"repository:{TARGET}:pull", f"repository:{OTHER}:pull", creds=ADMIN)
    with unchanged(seeded):
        for token in (scoped, everything):
            status, body = _raw_get(seeded, path, token)
            assert status in (400, 403, 404), f"{path}: {status} {body}"
            codes = {e["code"] for e in body.get("errors", [])}
            assert codes & {"NAME_INVALID", "NAME_UNKNOWN", "DENIED"}, f"{path}: {body}"
            assert "tags" not in body


def test_catalog_lists_only_what_the_caller_can_pull(seeded: Secured) -> None:
    with client(seeded.stack, ADMIN) as admin:
        for repo in ("public/base", "shared/lib", "team-a/cat", "team-b/cat"):
            push(admin, repo, image(1, layer_size=64), tag="v1")
        everything = admin.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
    assert {"public/base", "shared/lib", "team-a/cat", "team-b/cat", OTHER} <= set(everything)

    def listing(creds: tuple[str, str] | None, page_size: int) -> list[str]:
        with client(seeded.stack, creds) as c:
            names, url = [], f"/v2/_catalog?n={page_size}"
            while url:
                response = c.get(url)
                assert response.status_code == 200, response.text
                names += response.json()["repositories"]
                link = response.headers.get("link")
                url = link[1:link.index(">")] if link else ""
            return names

    def allowed(prefixes: tuple[str, ...]) -> list[str]:
        return [n for n in everything if n.startswith(prefixes)]

    for page_size in (1000, 1, 2):
        assert listing(ALICE, page_size) == allowed(("team-a/", "shared/", "public/"))
        assert listing(seeded.robot, page_size) == allowed(("team-a/", "public/"))
        assert listing(None, page_size) == allowed(("public/",))
    # The anonymous token flow got a token; without any token the catalog is a 401.
    assert httpx.get(f"{seeded.base_url}/v2/_catalog").status_code == 401


def test_expired_robot_is_refused(seeded: Secured) -> None:
    name, secret = seeded.expired_robot
    with unchanged(seeded):
        got = httpx.get(f"{seeded.base_url}/token", params={"service": "lading", "scope": f"repository:{TARGET}:pull"},
                        auth=(name, secret))
        assert got.status_code == 401
        posted = httpx.post(f"{seeded.base_url}/token", data={
            "grant_type": "password", "username": name, "password": secret, "service": "lading", "client_id": "t"})
        assert posted.status_code == 401
        with client(seeded.stack, seeded.expired_robot) as c:
            assert c.get(f"/v2/{TARGET}/tags/list").status_code == 401
    # The live robot with the same grants shape works.
    assert get_token(seeded.base_url, f"repository:{TARGET}:pull", creds=seeded.robot)


def test_robot_gets_refused_outside_its_namespace(seeded: Secured) -> None:
    token = get_token(seeded.base_url, f"repository:{OTHER}:pull,push", creds=seeded.robot)
    assert jwt.decode(token, options={"verify_signature": False})["access"] == []
    with unchanged(seeded):
        response = httpx.post(f"{seeded.base_url}/v2/{OTHER}/blobs/uploads/", headers=bearer(token))
        assert response.status_code == 403
        with client(seeded.stack, seeded.robot) as c:
            assert c.get(f"/v2/{OTHER}/tags/list").status_code == 403
