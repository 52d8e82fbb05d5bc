"""containerd (what Kubernetes nodes pull with) against Lading, through `ctr`.

A containerd daemon of the tests' own (tests/support/containerd.py) pulls images that skopeo
pushed (OCI, Docker schema 2, a multi-arch index by platform and whole), by tag and by digest,
unpacks them with the native snapshotter, pushes images imported from an OCI archive (and a whole
index), pulls through Lading configured as a mirror in hosts.toml (`?ns=` on every request) and
resumes a cut-short layer download with a Range request. Every manifest and blob containerd
stores is compared byte for byte with what was pushed; `--http-dump` shows what containerd asks
(HEAD of the tag with every manifest type in Accept, then GETs by digest; cross-repository mounts
on push). In token mode containerd gets its tokens with the OAuth2 password grant (`POST /token`,
several scopes in one space-separated `scope`), or with a refresh token, pulls anonymously where
that is granted, and is refused cleanly (403, or 401 for a wrong password) where it is not.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import ADMIN, ALICE, auth_env
from tests.auth.support import AuthStack, get_token, signing_keys
from tests.integration.conftest import unique_repo
from tests.support.clients import require_binary
from tests.support.containerd import Containerd, dumped_header, dumped_requests
from tests.support.oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    get_manifest,
    image,
    multi_arch_index,
    push,
    sha256,
    write_layout,
)
from tests.support.stack import Stack

pytestmark = pytest.mark.clients

# Every manifest type containerd resolves a tag with (containerd 1.6 sends `*/*` last).
RESOLVE_TYPES = {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json"}


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with Containerd() as daemon:
        yield daemon


@pytest.fixture
def namespace() -> str:
    """A containerd namespace of the test's own (content is not shared between namespaces)."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def skopeo_bin() -> str:
    return require_binary("skopeo", install_hint="apt-get install skopeo")


def skopeo_copy(skopeo_bin: str, tmp_path: Path, *args: str) -> None:
    """`skopeo copy` with no trust policy and no user configuration; fails with its output."""
    home = tmp_path / "skopeo-home"
    home.mkdir(exist_ok=True)
    auth = tmp_path / "skopeo-auth.json"
    auth.write_text("{}")
    command = [skopeo_bin, "--insecure-policy", "copy", "--dest-tls-verify=false", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"


def layer_files(blob: bytes) -> dict[str, bytes]:
    """The regular files of a gzip'd tar layer, by name."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()  # type: ignore[union-attr]
                if member.isfile()}


def assert_holds(containerd: Containerd, namespace: str, manifest: Manifest) -> None:
    """containerd holds the manifest and each of its blobs, byte for byte."""
    assert containerd.content(namespace, manifest.digest) == manifest.payload
    for blob in manifest.blobs:
        assert containerd.content(namespace, blob.digest) == blob.data, f"{blob.digest} differs"


def ctr_archive(manifest: Manifest, tmp_path: Path, tag: str = "v1") -> Path:
    """An OCI archive (a tar of an image layout) holding `manifest` under `tag`, for `ctr images import`."""
    layout = write_layout(tmp_path / f"layout-{uuid.uuid4().hex[:8]}", {tag: manifest})
    archive = layout.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    return archive


# -- plain HTTP, no auth ---------------------------------------------------------------------------

def test_pulls_an_oci_image_by_tag_resolving_with_head_then_getting_by_digest(
        containerd: Containerd, namespace: str, skopeo_bin: str, registry: Stack, tmp_path: Path) -> None:
    manifest = image(2, layer_size=32 * 1024)
    repo = unique_repo("containerd")
    ref = f"{registry.hostport}/{repo}:v1"
    skopeo_copy(skopeo_bin, tmp_path, "--preserve-digests", f"oci:{write_layout(tmp_path / 'src', {'v1': manifest})}:v1",
                f"docker://{ref}")

    pulled = containerd.ctr("images", "pull", "--plain-http", "--http-dump", ref, namespace=namespace)
    requests = dumped_requests(pulled.stderr)
    # containerd resolves the tag with a HEAD (every manifest type accepted), then fetches by digest.
    assert requests[:2] == [("HEAD", f"/v2/{repo}/manifests/v1"), ("GET", f"/v2/{repo}/manifests/{manifest.digest}")]
    accept = {value.strip() for value in dumped_header(pulled.stderr, "Accept")[0].split(",")}
    assert RESOLVE_TYPES <= accept
    assert {path for method, path in requests if method == "GET" and "/blobs/" in path} >= {
        f"/v2/{repo}/blobs/{blob.digest}" for blob in manifest.blobs}
    assert "Docker-Content-Digest: " + manifest.digest in pulled.stderr

    assert containerd.image_digest(namespace, ref) == manifest.digest
    assert_holds(containerd, namespace, manifest)
    # Unpacked: each layer's files are in a snapshot, byte for byte.
    unpacked = containerd.snapshot_files()
    for layer in manifest.blobs[1:]:
        for name, data in layer_files(layer.data).items():
            assert unpacked.get(name) == data, f"{name} of {layer.digest} was not unpacked"


def test_pulls_a_docker_schema_2_image(containerd: Containerd, namespace: str, skopeo_bin: str, registry: Stack,
                                       client: httpx.Client, tmp_path: Path) -> None:
    """skopeo converts an OCI image to Docker schema 2 on the way in (`--format v2s2`); containerd
    pulls it by tag and by digest and stores the manifest the registry served."""
    source = image(1, layer_size=16 * 1024)
    repo = unique_repo("containerd")
    ref = f"{registry.hostport}/{repo}:docker"
    skopeo_copy(skopeo_bin, tmp_path, "--format", "v2s2",
                f"oci:{write_layout(tmp_path / 'src', {'v1': source})}:v1", f"docker://{ref}")
    served = get_manifest(client, repo, "docker")
    assert served.headers["Content-Type"] == DOCKER_MANIFEST
    digest = served.headers["Docker-Content-Digest"]

    containerd.ctr("images", "pull", "--plain-http", ref, namespace=namespace)
    assert containerd.image_digest(namespace, ref) == digest
    assert containerd.content(namespace, digest) == served.content
    for descriptor in [served.json()["config"], *served.json()["layers"]]:
        blob = client.get(f"/v2/{repo}/blobs/{descriptor['digest']}", follow_redirects=True).content
        assert sha256(blob) == descriptor["digest"]
        assert containerd.content(namespace, descriptor["digest"]) == blob

    by_digest = f"{registry.hostport}/{repo}@{digest}"
    other = f"{namespace}d"
    containerd.ctr("images", "pull", "--plain-http", by_digest, namespace=other)
    assert containerd.image_digest(other, by_digest) == digest


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_multi_arch_index_pulls_one_platform_or_all(containerd: Containerd, namespace: str, skopeo_bin: str,
                                                    registry: Stack, client: httpx.Client, tmp_path: Path,
                                                    docker: bool) -> None:
    """An OCI index (pushed by skopeo) or a Docker manifest list (skopeo 1.9 reads only OCI media
    types from a layout, so that one goes over HTTP): one platform, all of them, one child by
    digest; `ctr images push` of the whole index to another repository keeps every digest."""
    top = multi_arch_index((("amd64", "linux"), ("arm64", "linux")), layers=1, docker=docker)
    amd64, arm64 = top.children
    repo = unique_repo("containerd")
    ref = f"{registry.hostport}/{repo}:multi"
    if docker:
        push(client, repo, top, tag="multi")
    else:
        skopeo_copy(skopeo_bin, tmp_path, "--all", "--preserve-digests",
                    f"oci:{write_layout(tmp_path / 'src', {'multi': top})}:multi", f"docker://{ref}")

    containerd.ctr("images", "pull", "--plain-http", "--platform", "linux/arm64", ref, namespace=namespace)
    assert containerd.image_digest(namespace, ref) == top.digest
    assert containerd.content(namespace, top.digest) == top.payload
    assert_holds(containerd, namespace, arm64)
    assert not any(containerd.has_content(namespace, blob.digest) for blob in amd64.blobs)

    everything = f"{namespace}all"
    containerd.ctr("images", "pull", "--plain-http", "--all-platforms", ref, namespace=everything)
    for child in top.children:
        assert_holds(containerd, everything, child)
    # ...and pushes the whole index to another repository: children first, then the index.
    copy_repo = unique_repo("containerd")
    copy = f"{registry.hostport}/{copy_repo}:multi"
    containerd.ctr("images", "tag", ref, copy, namespace=everything)
    containerd.ctr("images", "push", "--plain-http", copy, namespace=everything)
    assert get_manifest(client, copy_repo, "multi").content == top.payload
    for child in top.children:
        assert get_manifest(client, copy_repo, child.digest).content == child.payload

    # One platform's image by its own digest.
    child_ref = f"{registry.hostport}/{repo}@{amd64.digest}"
    one = f"{namespace}one"
    containerd.ctr("images", "pull", "--plain-http", "--platform", "linux/amd64", child_ref, namespace=one)
    assert containerd.image_digest(one, child_ref) == amd64.digest
    assert_holds(containerd, one, amd64)


def test_push_uploads_then_mounts_across_repositories(
        containerd: Containerd, namespace: str, registry: Stack, client: httpx.Client, tmp_path: Path) -> None:
    """`ctr images push` of an imported image uploads each blob (HEAD 404, POST, streamed PUT) and
    the manifest; pulled back, then pushed under another repository, its blobs are mounted (POST
    ?mount=&from= → 201) instead of sent again."""
    manifest = image(2, layer_size=64 * 1024)
    repo, other = unique_repo("containerd"), unique_repo("containerd")
    ref = f"{registry.hostport}/{repo}:v1"
    containerd.ctr("images", "import", "--base-name", f"{registry.hostport}/{repo}", str(ctr_archive(manifest, tmp_path)),
                   namespace=namespace)

    pushed = containerd.ctr("images", "push", "--plain-http", "--http-dump", ref, namespace=namespace)
    requests = dumped_requests(pushed.stderr)
    assert ("PUT", f"/v2/{repo}/manifests/v1") in requests
    assert sum(method == "POST" and "/blobs/uploads/" in path for method, path in requests) == len(manifest.blobs)
    served = get_manifest(client, repo, "v1")
    assert served.content == manifest.payload
    assert served.headers["Docker-Content-Digest"] == manifest.digest
    for blob in manifest.blobs:
        assert client.get(f"/v2/{repo}/blobs/{blob.digest}", follow_redirects=True).content == blob.data

    # Pushed again: HEADs find everything, nothing is sent.
    again = dumped_requests(containerd.ctr("images", "push", "--plain-http", "--http-dump", ref,
                                           namespace=namespace).stderr)
    assert {method for method, _ in again} == {"HEAD"}

    # Pulled back into a fresh namespace, the content is labelled with where it came from, so a
    # push to another repository mounts it from there.
    puller = f"{namespace}pull"
    containerd.ctr("images", "pull", "--plain-http", ref, namespace=puller)
    assert_holds(containerd, puller, manifest)
    copy = f"{registry.hostport}/{other}:copy"
    containerd.ctr("images", "tag", ref, copy, namespace=puller)
    mounted = containerd.ctr("images", "push", "--plain-http", "--http-dump", copy, namespace=puller)
    mounts = [path for method, path in dumped_requests(mounted.stderr) if method == "POST"]
    assert len(mounts) == len(manifest.blobs) and all(f"&from={repo}" in path for path in mounts), mounts
    assert not any(method == "PUT" and "/blobs/uploads/" in path for method, path in dumped_requests(mounted.stderr))
    assert get_manifest(client, other, "copy").content == manifest.payload


def test_pulls_through_lading_as_a_mirror_configured_in_hosts_toml(
        containerd: Containerd, namespace: str, skopeo_bin: str, registry: Stack, tmp_path: Path) -> None:
    """A node configured the Kubernetes way (`certs.d/<registry>/hosts.toml`, here `--hosts-dir`)
    with Lading as the mirror of another registry name: containerd adds `?ns=<that name>` to every
    request, which Lading ignores, and the image keeps the upstream name locally."""
    manifest = image(1, layer_size=16 * 1024)
    repo = unique_repo("containerd")
    skopeo_copy(skopeo_bin, tmp_path, "--preserve-digests", f"oci:{write_layout(tmp_path / 'src', {'v1': manifest})}:v1",
                f"docker://{registry.hostport}/{repo}:v1")
    upstream = "registry.example.invalid"
    hosts = tmp_path / "certs.d"
    (hosts / upstream).mkdir(parents=True)
    (hosts / upstream / "hosts.toml").write_text(
        f'server = "https://{upstream}"\n\n[host."http://{registry.hostport}"]\n  capabilities = ["pull", "resolve"]\n')

    ref = f"{upstream}/{repo}:v1"
    pulled = containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--http-dump", ref, namespace=namespace)
    requests = dumped_requests(pulled.stderr)
    assert requests[0] == ("HEAD", f"/v2/{repo}/manifests/v1?ns={upstream}")
    assert all(path.endswith(f"?ns={upstream}") for _, path in requests if path.startswith("/v2/")), requests
    assert containerd.image_digest(namespace, ref) == manifest.digest
    assert_holds(containerd, namespace, manifest)


def test_an_interrupted_layer_download_resumes_with_a_range_request(
        containerd: Containerd, namespace: str, skopeo_bin: str, registry: Stack, tmp_path: Path) -> None:
    """containerd keeps what it has of a blob (an active ingest) and asks only for the rest
    (`Range: bytes=<offset>-`); Lading answers 206 with the matching Content-Range (on the 307's
    target too), and the blob comes out whole."""
    manifest = image(1, layer_size=512 * 1024)
    layer = manifest.blobs[1]
    repo = unique_repo("containerd")
    ref = f"{registry.hostport}/{repo}:v1"
    skopeo_copy(skopeo_bin, tmp_path, "--preserve-digests", f"oci:{write_layout(tmp_path / 'src', {'v1': manifest})}:v1",
                f"docker://{ref}")
    offset = layer.size // 3
    # The ingest name containerd's fetcher gives a layer (remotes.MakeRefKey).
    containerd.ingest_partial(namespace, ref=f"layer-{layer.digest}", digest=layer.digest, size=layer.size,
                              data=layer.data[:offset])

    fetched = containerd.ctr("content", "fetch", "--plain-http", "--http-dump", ref, namespace=namespace)
    assert f"bytes={offset}-" in dumped_header(fetched.stderr, "Range")
    assert f"bytes {offset}-{layer.size - 1}/{layer.size}" in dumped_header(fetched.stderr, "Content-Range")
    assert_holds(containerd, namespace, manifest)


# -- token auth --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    """`lading serve` in token mode: alice may pull and push `team-a/*` and only pull `shared/*`."""
    root = tmp_path_factory.mktemp("containerd-auth")
    keys = signing_keys(root)
    with AuthStack(root / "data", env=auth_env(keys)) as stack:
        stack.lading("user", "add", ALICE[0], "--password-stdin", stdin=ALICE[1] + "\n")
        stack.lading("grant", "add", ALICE[0], "team-a/*", "pull,push")
        stack.lading("grant", "add", ALICE[0], "shared/*", "pull")
        yield stack


def bearer_client(stack: AuthStack, creds: tuple[str, str], repo: str) -> httpx.Client:
    """An HTTP client with a token of `creds` for pulling `repo`."""
    token = get_token(stack.base_url, f"repository:{repo}:pull", creds=creds)
    return httpx.Client(base_url=stack.base_url, timeout=10, headers={"Authorization": f"Bearer {token}"})


def push_as_admin(skopeo_bin: str, tmp_path: Path, stack: AuthStack, manifest: Manifest, repo: str) -> str:
    ref = f"{stack.hostport}/{repo}:v1"
    layout = write_layout(tmp_path / f"src-{uuid.uuid4().hex[:8]}", {"v1": manifest})
    skopeo_copy(skopeo_bin, tmp_path, "--preserve-digests", "--dest-creds", f"{ADMIN[0]}:{ADMIN[1]}",
                f"oci:{layout}:v1", f"docker://{ref}")
    return ref


def test_token_pull_with_credentials_and_anonymous_refused(
        containerd: Containerd, namespace: str, skopeo_bin: str, secured: AuthStack, tmp_path: Path) -> None:
    manifest = image(1, layer_size=8 * 1024)
    ref = push_as_admin(skopeo_bin, tmp_path, secured, manifest, f"team-a/{uuid.uuid4().hex[:8]}")
    user = f"{ALICE[0]}:{ALICE[1]}"

    pulled = containerd.ctr("images", "pull", "--plain-http", "--http-dump", "--user", user, ref, namespace=namespace)
    # The OAuth2 password grant (docker-auth-oauth.md), not GET /token with Basic.
    assert ("POST", "/token") in dumped_requests(pulled.stderr)
    assert "grant_type=password" in pulled.stderr
    assert_holds(containerd, namespace, manifest)

    anonymous = containerd.ctr("images", "pull", "--plain-http", ref, namespace=f"{namespace}anon", check=False)
    assert anonymous.returncode != 0
    assert "403 Forbidden" in anonymous.stderr, anonymous.stderr
    # Where anonymous pulls are granted (public/*), containerd's anonymous GET /token is enough.
    public = image(1, layer_size=4 * 1024)
    public_ref = push_as_admin(skopeo_bin, tmp_path, secured, public, f"public/{uuid.uuid4().hex[:8]}")
    containerd.ctr("images", "pull", "--plain-http", public_ref, namespace=f"{namespace}public")
    assert_holds(containerd, f"{namespace}public", public)
    wrong = containerd.ctr("images", "pull", "--plain-http", "--user", f"{ALICE[0]}:wrong", ref,
                           namespace=f"{namespace}wrong", check=False)
    assert wrong.returncode != 0
    assert "401 Unauthorized" in wrong.stderr, wrong.stderr


def test_token_pull_with_a_refresh_token(
        containerd: Containerd, namespace: str, skopeo_bin: str, secured: AuthStack, tmp_path: Path) -> None:
    """`ctr --refresh` (a Kubernetes pull secret's identity token) uses the refresh-token grant."""
    manifest = image(1, layer_size=8 * 1024)
    ref = push_as_admin(skopeo_bin, tmp_path, secured, manifest, f"team-a/{uuid.uuid4().hex[:8]}")
    offline = httpx.post(f"{secured.base_url}/token", timeout=10, data={
        "grant_type": "password", "service": "lading", "client_id": "tests", "access_type": "offline",
        "username": ALICE[0], "password": ALICE[1]})
    assert offline.status_code == 200, offline.text

    pulled = containerd.ctr("images", "pull", "--plain-http", "--http-dump", "--refresh",
                            offline.json()["refresh_token"], ref, namespace=namespace)
    assert "grant_type=refresh_token" in pulled.stderr
    assert_holds(containerd, namespace, manifest)


def test_token_push_with_the_grant_and_refused_without(
        containerd: Containerd, namespace: str, skopeo_bin: str, secured: AuthStack, tmp_path: Path) -> None:
    """Pushing asks for a token of several scopes at once (the target's pull and pull,push, the
    mount source's pull) in one space-separated `scope`; where alice may only pull, the push is
    refused with 403 and nothing lands."""
    manifest = image(1, layer_size=8 * 1024)
    source = push_as_admin(skopeo_bin, tmp_path, secured, manifest, f"shared/{uuid.uuid4().hex[:8]}")
    source_repo = source.split("/", 1)[1].rsplit(":", 1)[0]
    user = f"{ALICE[0]}:{ALICE[1]}"
    containerd.ctr("images", "pull", "--plain-http", "--user", user, source, namespace=namespace)

    target_repo = f"team-a/{uuid.uuid4().hex[:8]}"
    target = f"{secured.hostport}/{target_repo}:v1"
    containerd.ctr("images", "tag", source, target, namespace=namespace)
    pushed = containerd.ctr("images", "push", "--plain-http", "--http-dump", "--user", user, target,
                            namespace=namespace)
    forms = [line for line in pushed.stderr.splitlines() if "grant_type=password" in line]
    assert any(f"repository%3A{target_repo.replace('/', '%2F')}%3Apull%2Cpush" in form
               and f"repository%3A{source_repo.replace('/', '%2F')}%3Apull" in form for form in forms), forms
    with bearer_client(secured, ALICE, target_repo) as alice:
        served = get_manifest(alice, target_repo, "v1")
    assert served.status_code == 200 and served.content == manifest.payload

    denied_repo = f"shared/{uuid.uuid4().hex[:8]}"
    denied = f"{secured.hostport}/{denied_repo}:v1"
    containerd.ctr("images", "tag", source, denied, namespace=namespace)
    refused = containerd.ctr("images", "push", "--plain-http", "--user", user, denied, namespace=namespace,
                             check=False)
    assert refused.returncode != 0
    assert "403 Forbidden" in refused.stderr, refused.stderr
    with bearer_client(secured, ADMIN, denied_repo) as admin:
        assert get_manifest(admin, denied_repo, "v1").status_code == 404

