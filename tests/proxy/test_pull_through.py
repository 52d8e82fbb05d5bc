"""The pull-through cache against a real upstream: CNCF Distribution (`docker-registry`).

One Distribution with its own storage and one `lading serve` whose `[[proxy.upstreams]]` maps the
local prefix `cache/` onto it, through a relay (tests/support/relay.py) that can hold the
upstream's answers mid-body: a cold fetch stores at the upstream's pace, whether or not its client
reads (it is served from the blob plane's direct-read server), so only a held upstream is still
sending when a test kills it. Content is pushed into the upstream over plain HTTP, then pulled
through Lading (skopeo and raw HTTP); the upstream's access log counts what reached it.

The cold-fetch tests run on the S3 backend too (`cold`: a second `lading serve` on SeaweedFS, same
upstream and relay), where the direct-read server serves fetches from their spool files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.proxy.helpers import PREFIX, UPSTREAM, proxy_config
from tests.support import oci
from tests.support.clients import require_binary
from tests.support.distribution import Distribution
from tests.support.holding_relay import HoldingRelay
from tests.support.seaweedfs import seaweedfs_server
from tests.support.stack import Stack, child_env, free_port, lading_command

pytestmark = pytest.mark.clients

@pytest.fixture(scope="module")
def relay(upstream: Distribution) -> Iterator[HoldingRelay]:
    forwarder = HoldingRelay(upstream.port).start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


@pytest.fixture(scope="module")
def lading(tmp_path_factory: pytest.TempPathFactory, relay: HoldingRelay) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("lading-proxy")
    # GC with no review delay, so that the eviction test sees the bytes go; pull events kept in the
    # outbox (an endpoint nobody answers); metrics of both gRPC planes.
    ports = (free_port(), free_port())
    head = (
        "[gc]\nreview_delay_seconds = 0\n"
        f'[observability]\nmetadata_metrics_listen = "127.0.0.1:{ports[0]}"\n'
        f'blob_metrics_listen = "127.0.0.1:{ports[1]}"\n'
        '[events]\npull = "sampled"\n[[events.endpoints]]\nname = "sink"\nurl = "http://127.0.0.1:9/hook"\n'
        "backoff_base_seconds = 3600\n"
    )
    mirror = ('[[proxy.mirrors]]\nupstream = "dist"\nrepositories = ["team/mirrored"]\ntags = "v.*"\n'
              "interval_seconds = 1\n")
    config = proxy_config(root / "lading.toml", relay.url, head=head, tail=mirror)
    with Stack(root / "data", env={"LADING_CONFIG_FILE": str(config)}) as stack:
        stack.metrics_ports = ports  # type: ignore[attr-defined]
        yield stack


@dataclass(frozen=True)
class ColdSite:
    """A `lading serve` whose cold fetches the tests watch, and whether its storage holds a blob."""

    name: str
    stack: Stack
    stored: Callable[[str], bool]
    # host:port of S3 (presigned URLs of stored blobs point there); "" on the filesystem.
    s3_endpoint: str = ""


@pytest.fixture(scope="module")
def lading_s3(tmp_path_factory: pytest.TempPathFactory, relay: HoldingRelay) -> Iterator[ColdSite]:
    """`lading serve` with the S3 backend (SeaweedFS) and SQLite, in front of the same upstream."""
    import urllib3
    from minio import Minio

    root = tmp_path_factory.mktemp("lading-proxy-s3")
    config = proxy_config(root / "lading.toml", relay.url)
    with seaweedfs_server() as seaweed:
        env = seaweed.lading_env()
        prefix = env["LADING_BLOB__S3__KEY_PREFIX"]

        def stored(digest: str) -> bool:
            http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0), retries=False)
            try:
                client = Minio(seaweed.endpoint, access_key=seaweed.access_key, secret_key=seaweed.secret_key,
                               secure=False, region=seaweed.region, http_client=http)
                algorithm, hex_ = digest.split(":", 1)
                key = f"{prefix}blobs/{algorithm}/{hex_[:2]}/{hex_}"
                return any(True for _ in client.list_objects(seaweed.bucket, prefix=key))
            finally:
                http.clear()

        with Stack(root / "data", env={"LADING_CONFIG_FILE": str(config), **env}) as stack:
            yield ColdSite("s3", stack, stored, seaweed.endpoint)


@pytest.fixture(scope="module", params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def cold(request: pytest.FixtureRequest) -> ColdSite:
    if request.param == "s3":
        return request.getfixturevalue("lading_s3")
    stack: Stack = request.getfixturevalue("lading")
    return ColdSite("filesystem", stack, lambda digest: digest.split(":", 1)[1] in stored_blobs(stack))


@pytest.fixture(scope="module")
def up(upstream: Distribution) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def local(lading: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lading.base_url, timeout=60, follow_redirects=True) as client:
        yield client


def lading_blob_file(stack: Stack, digest: str) -> Path:
    algorithm, hex_ = digest.split(":", 1)
    return stack.data_dir / "blobs" / "blobs" / algorithm / hex_[:2] / hex_


def stored_blobs(stack: Stack) -> set[str]:
    """Hex digests of the blobs in Lading's filesystem store."""
    return {path.name for path in (stack.data_dir / "blobs").rglob("*") if path.is_file() and len(path.name) == 64}


def get_outcome(client: httpx.Client, url: str) -> tuple[int, bytes] | str:
    """(status, body) of a GET, or the name of the HTTP error that cut it short."""
    try:
        response = client.get(url)
    except httpx.HTTPError as error:
        return type(error).__name__
    return response.status_code, response.content


def skopeo(tmp_path: Path, *args: str) -> str:
    binary = require_binary("skopeo", install_hint="apt-get install skopeo")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    command = [binary, "--insecure-policy", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False,
                            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return result.stdout


def test_skopeo_pulls_a_multi_arch_image_and_its_signature_byte_identical(
        tmp_path: Path, up: httpx.Client, local: httpx.Client, lading: Stack, upstream: Distribution) -> None:
    index = oci.multi_arch_index(layers=2)
    oci.push(up, "team/app", index, "multi")
    signature = oci.artifact(artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json", subject=index)
    oci.push(up, "team/app", signature)

    layout = tmp_path / "layout"
    skopeo(tmp_path, "copy", "--all", "--src-tls-verify=false", "--preserve-digests",
           f"docker://{lading.hostport}/{PREFIX}team/app:multi", f"oci:{layout}:multi")
    pulled = oci.Layout(layout)
    assert pulled.descriptor_for("multi")["digest"] == index.digest
    assert pulled.blob(index.digest) == index.payload
    for child in index.children:
        assert pulled.blob(child.digest) == child.payload
        for blob in child.blobs:
            assert pulled.blob(blob.digest) == blob.data
    # The signature, by digest as clients find it, then its blobs: byte-identical.
    oci.assert_pulls_back(local, f"{PREFIX}team/app", signature.digest, signature)
    referrers = local.get(f"/v2/{PREFIX}team/app/referrers/{index.digest}").json()
    assert [d["digest"] for d in referrers["manifests"]] == [signature.digest]
    # Cached: a second pull of a layer does not reach the upstream again.
    layer = index.children[0].blobs[1]
    before = upstream.requests("GET", f"/v2/team/app/blobs/{layer.digest}")
    assert before == 1
    again = local.get(f"/v2/{PREFIX}team/app/blobs/{layer.digest}")
    assert again.status_code == 200 and again.content == layer.data
    assert upstream.requests("GET", f"/v2/team/app/blobs/{layer.digest}") == before
    # Digest-addressed manifests are not asked again either.
    child = index.children[1]
    assert oci.get_manifest(local, f"{PREFIX}team/app", child.digest).content == child.payload
    assert upstream.requests("GET", f"/v2/team/app/manifests/{child.digest}") == 1


def podman(tmp_path: Path, runroot: str, *args: str) -> str:
    """podman with storage, registries and policy of its own under `tmp_path` and the run folder
    `runroot` (podman wants it under 50 characters), so the machine's podman storage is not
    touched; vfs storage needs no kernel overlay support."""
    binary = require_binary("podman", install_hint="apt-get install podman")
    home = tmp_path / "podman-home"
    home.mkdir(exist_ok=True)
    policy = tmp_path / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    registries = tmp_path / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    command = [binary, "--root", str(tmp_path / "podman-root"), "--runroot", runroot,
               "--storage-driver", "vfs", "--events-backend", "none", *args]
    env = {"HOME": str(home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_REGISTRIES_CONF": str(registries),
           "CONTAINERS_POLICY_JSON": str(policy), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
           "TMPDIR": str(tmp_path)}
    (tmp_path / "auth.json").write_text("{}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False, env=env)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_podman_pulls_a_multi_arch_image_through_the_cache(
        tmp_path: Path, up: httpx.Client, local: httpx.Client, lading: Stack, upstream: Distribution) -> None:
    """podman pulls (and unpacks: real tar.gz layers whose diff IDs it checks) the amd64 image of
    an index pushed into the upstream; what it got is the upstream's, byte for byte."""
    index = oci.multi_arch_index(layers=2)
    oci.push(up, "team/podman", index, "v1")
    reference = f"{lading.hostport}/{PREFIX}team/podman:v1"
    with tempfile.TemporaryDirectory(prefix="lading-podman-") as runroot:
        podman(tmp_path, runroot, "pull", "--tls-verify=false", "--arch", "amd64", "--os", "linux", reference)
        inspected = json.loads(podman(tmp_path, runroot, "image", "inspect", reference))[0]
    amd64 = next(child for child in index.children if child.platform and child.platform["architecture"] == "amd64")
    config = amd64.blobs[0]
    # The image ID is its config's digest; the pulled digest is the index's (podman keeps both).
    assert inspected["Id"] == config.digest.split(":", 1)[1]
    assert inspected["Digest"] == index.digest
    assert f"{lading.hostport}/{PREFIX}team/podman@{index.digest}" in inspected["RepoDigests"]
    assert inspected["RootFS"]["Layers"] == json.loads(config.data)["rootfs"]["diff_ids"]
    # (podman checked the child manifest's bytes against the index's digest, the config's against
    # the child's, each unpacked layer against its diff ID.) The cache serves the upstream's bytes.
    for ref, manifest in (("v1", index), *((child.digest, child) for child in index.children)):
        upstream_bytes = oci.get_manifest(up, "team/podman", ref).content
        assert upstream_bytes == manifest.payload
        assert oci.get_manifest(local, f"{PREFIX}team/podman", ref).content == upstream_bytes
    for blob in amd64.blobs:
        assert upstream.requests("GET", f"/v2/team/podman/blobs/{blob.digest}") == 1


def test_a_moved_tag_is_revalidated_and_refreshed(up: httpx.Client, local: httpx.Client,
                                                  upstream: Distribution) -> None:
    first, second = oci.image(1), oci.image(1)
    oci.push(up, "team/moving", first, "latest")
    got = oci.get_manifest(local, f"{PREFIX}team/moving", "latest")
    assert got.status_code == 200 and got.content == first.payload
    # Unchanged upstream: revalidated with a HEAD, no second GET.
    assert oci.get_manifest(local, f"{PREFIX}team/moving", "latest").content == first.payload
    assert upstream.requests("HEAD", "/v2/team/moving/manifests/latest") >= 1
    assert upstream.requests("GET", "/v2/team/moving/manifests/latest") == 1
    oci.push(up, "team/moving", second, "latest")
    moved = oci.get_manifest(local, f"{PREFIX}team/moving", "latest")
    assert moved.status_code == 200 and moved.content == second.payload
    assert moved.headers["docker-content-digest"] == second.digest


def test_pushes_into_a_proxied_prefix_are_refused_naming_the_upstream(local: httpx.Client) -> None:
    started = local.post(f"/v2/{PREFIX}team/app/blobs/uploads/")
    oci.assert_error(started, 405, "UNSUPPORTED")
    assert UPSTREAM in started.json()["errors"][0]["message"]
    image = oci.image(1)
    refused = oci.push_manifest_only(local, f"{PREFIX}team/app", "pushed", image)
    oci.assert_error(refused, 405, "UNSUPPORTED")
    assert UPSTREAM in refused.json()["errors"][0]["message"]
    # Outside the prefix, pushes work as ever.
    oci.push(local, "own/app", image, "v1")


def test_an_unknown_name_upstream_answers_404_naming_it(local: httpx.Client) -> None:
    missing = oci.get_manifest(local, f"{PREFIX}team/none", "latest")
    oci.assert_error(missing, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert UPSTREAM in missing.json()["errors"][0]["message"]


def test_bytes_stored_for_a_local_repository_are_not_served_through_the_cache(local: httpx.Client) -> None:
    secret = oci.Blob(os.urandom(4096))
    oci.push_blob(local, "own/private", secret)
    # Stored here, but the upstream has no such blob: knowing the digest is not enough.
    leaked = local.get(f"/v2/{PREFIX}team/app/blobs/{secret.digest}")
    oci.assert_error(leaked, 404, "BLOB_UNKNOWN")
    assert UPSTREAM in leaked.json()["errors"][0]["message"]


def test_a_cold_blob_is_served_by_the_blob_plane_while_it_arrives(
        up: httpx.Client, cold: ColdSite, relay: HoldingRelay, upstream: Distribution) -> None:
    """The gateway redirects a cold GET at once; the blob plane sends what it has stored while
    the upstream still sends (a body held before its end: the client already has bytes, never
    more than the blob but its held-back end), then the rest. That the end waits for the digest
    is what test_a_body_that_does_not_match_its_digest_commits_nothing checks. Then the blob is
    stored (on S3 too) and linked: pulled again, it is not fetched again."""
    lading = cold.stack
    layer = oci.Blob(os.urandom(8 * 1024 * 1024))
    oci.push_blob(up, f"team/tail-{cold.name}", layer)
    path = f"/v2/{PREFIX}team/tail-{cold.name}/blobs/{layer.digest}"
    held_back = 64 * 1024  # services/blob/fetch_progress.py HOLD_BYTES
    # The upstream sends its head and all but the last 1,000 bytes of the body, then is held.
    relay.hold_after(layer.size - 1000)
    try:
        with httpx.Client(base_url=lading.base_url, timeout=30) as client:
            redirect = client.get(path)
        # Answered at once by the gateway: to the blob plane's direct-read server, like a warm read.
        assert redirect.status_code == 307, redirect.text
        location = urlsplit(redirect.headers["location"])
        assert location.port != urlsplit(lading.base_url).port
        with socket.create_connection((location.hostname, location.port), timeout=30) as conn:
            conn.sendall(f"GET {location.path}?{location.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            head, body = received.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {layer.size}".encode() in head, head
            deadline = time.monotonic() + 10
            while not relay.held():
                assert time.monotonic() < deadline, "the upstream's answer was not held"
                time.sleep(0.01)
            conn.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                while data := conn.recv(1024 * 1024):
                    body += data
            assert 0 < len(body) <= layer.size - held_back
            relay.release()
            conn.settimeout(30)
            while len(body) < layer.size and (data := conn.recv(1024 * 1024)):
                body += data
        assert body == layer.data
    finally:
        relay.release()
    with httpx.Client(base_url=lading.base_url, timeout=30) as client:
        # The client had its last byte once the digest checked out; the blob plane then still
        # commits (on S3 an upload) and the link follows. A HEAD waits for the fetch's end; a GET
        # racing it would join the fetch (answered correctly, streamed) instead of a warm read.
        assert client.head(path).status_code == 200
        again = client.get(path)
        assert again.status_code == 307, again.text
        if cold.s3_endpoint:  # a stored blob: S3's own presigned URL, as for any read on S3
            assert urlsplit(again.headers["location"]).port == int(cold.s3_endpoint.rsplit(":", 1)[1])
        assert client.get(again.headers["location"]).content == layer.data
        # The fetch's URL, read again once the fetch is over: the blob's file, or on S3 (no local
        # files) a redirect to S3's presigned URL.
        late = client.get(redirect.headers["location"])
        if cold.s3_endpoint:
            assert late.status_code == 307, late.text
            assert urlsplit(late.headers["location"]).port == int(cold.s3_endpoint.rsplit(":", 1)[1])
            late = client.get(late.headers["location"])
        assert late.status_code == 200 and late.content == layer.data
    assert cold.stored(layer.digest)
    assert upstream.requests("GET", f"/v2/team/tail-{cold.name}/blobs/{layer.digest}") == 1


def test_a_ranged_get_of_a_cold_blob_answers_206_with_its_range(
        up: httpx.Client, local: httpx.Client, upstream: Distribution) -> None:
    """A client resuming a download asks for a range of a blob not cached yet: the whole blob is
    fetched (once), then the range is answered from it (here through the direct-read redirect)."""
    layer = oci.Blob(os.urandom(1024 * 1024))
    oci.push_blob(up, "team/resumed", layer)
    path = f"/v2/{PREFIX}team/resumed/blobs/{layer.digest}"
    ranged = local.get(path, headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206, ranged.text
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{layer.size}"
    assert ranged.content == layer.data[1000:2000]
    assert local.get(path).content == layer.data
    assert upstream.requests("GET", f"/v2/team/resumed/blobs/{layer.digest}") == 1


def test_a_conditional_get_of_a_cold_blob_is_answered_once_it_is_stored(
        up: httpx.Client, local: httpx.Client, upstream: Distribution) -> None:
    """A client that names the blob it holds (If-None-Match), or another one (If-Match), gets 304
    or 412 as for a stored blob (RFC 9110 section 13.2), not the bytes: the blob is fetched (once)
    and stored meanwhile, as for a HEAD."""
    for condition, status in (("If-None-Match", 304), ("If-Match", 412)):
        layer = oci.Blob(os.urandom(1000))
        oci.push_blob(up, "team/conditional", layer)
        path = f"/v2/{PREFIX}team/conditional/blobs/{layer.digest}"
        etag = f'"{layer.digest}"' if status == 304 else '"sha256:' + "0" * 64 + '"'
        answer = local.get(path, headers={condition: etag})
        assert (answer.status_code, answer.content) == (status, b""), condition
        assert local.get(path).content == layer.data
        assert upstream.requests("GET", f"/v2/team/conditional/blobs/{layer.digest}") == 1


def test_a_cold_get_storage_would_judge_otherwise_is_streamed_not_redirected(
        up: httpx.Client, local: httpx.Client, upstream: Distribution) -> None:
    """A cold GET with a date condition (which the direct-read server compares with its file's
    date, the gateway never) gets the gateway's answer, the whole blob, as a cached blob does:
    streamed through the gateway, not redirected to the direct-read server."""
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    for name, headers in (("unmodified", {"If-Unmodified-Since": old}),
                          ("if-range", {"If-Range": old, "Range": "bytes=0-9"})):
        layer = oci.Blob(os.urandom(1000))
        oci.push_blob(up, f"team/dated-{name}", layer)
        path = f"/v2/{PREFIX}team/dated-{name}/blobs/{layer.digest}"
        answer = local.get(path, headers=headers, follow_redirects=False)
        assert (answer.status_code, answer.content) == (200, layer.data), (name, answer.headers)
        assert upstream.requests("GET", f"/v2/team/dated-{name}/blobs/{layer.digest}") == 1


def test_a_body_that_does_not_match_its_digest_commits_nothing(
        up: httpx.Client, cold: ColdSite, upstream: Distribution, relay: HoldingRelay) -> None:
    """The direct-read server sends the wrong body as it arrives but never its end: the connection
    is cut once the digest fails (the upstream held mid-body meanwhile, so the client is there
    before), and nothing is stored or linked."""
    repository = f"team/bad-{cold.name}"
    image = oci.image(1, layer_size=1024 * 1024)
    oci.push(up, repository, image, "v1")
    layer = image.blobs[1]
    path = f"/v2/{PREFIX}{repository}/blobs/{layer.digest}"
    stored = upstream.blob_file(layer.digest)
    stored.write_bytes(os.urandom(layer.size))  # the upstream now serves other bytes of the same size
    try:
        with httpx.Client(base_url=cold.stack.base_url, timeout=30, follow_redirects=True) as local:
            relay.hold_after(layer.size // 2)
            try:
                with httpx.Client(base_url=cold.stack.base_url, timeout=30) as client:
                    redirect = client.get(path)
                    # Answered at once, to the blob plane's direct-read server (not the gateway, not S3).
                    assert redirect.status_code == 307, redirect.text
                    location = urlsplit(redirect.headers["location"])
                    assert location.port not in (cold.stack.port, int((cold.s3_endpoint or ":0").rsplit(":", 1)[1]))
                    received = 0
                    with pytest.raises(httpx.HTTPError):  # noqa: PT012 - the cut comes while reading
                        with client.stream("GET", redirect.headers["location"]) as response:
                            assert response.status_code == 200
                            assert int(response.headers["content-length"]) == layer.size
                            relay.release()
                            for chunk in response.iter_raw():
                                received += len(chunk)
                    assert received < layer.size
            finally:
                relay.release()
            assert not cold.stored(layer.digest)
            head = local.head(path)
            assert head.status_code == 502
    finally:
        stored.write_bytes(layer.data)
    # Fixed upstream: the retry fetches and serves the right bytes.
    with httpx.Client(base_url=cold.stack.base_url, timeout=30, follow_redirects=True) as local:
        retry = local.get(path)
        assert retry.status_code == 200 and retry.content == layer.data
        # On S3 the client may have its verified bytes before S3 took them; once they are linked
        # (a GET waits for the fetch's end), they are stored.
        assert local.get(path).content == layer.data
    assert cold.stored(layer.digest)


def test_upstream_killed_mid_blob_commits_nothing_and_a_retry_succeeds(
        up: httpx.Client, local: httpx.Client, lading: Stack, upstream: Distribution, relay: HoldingRelay) -> None:
    layer = oci.Blob(os.urandom(32 * 1024 * 1024))
    image = oci.image(0, extra={"layers": [layer.descriptor()]})
    image = oci.Manifest(image.payload, image.media_type, blobs=(*image.blobs, layer))
    oci.push(up, "team/big", image, "v1")
    received = 0
    relay.hold_after(4 * 1024 * 1024)  # the upstream is held mid-body
    try:
        with pytest.raises(httpx.HTTPError):  # noqa: PT012 - the error comes while reading
            with local.stream("GET", f"/v2/{PREFIX}team/big/blobs/{layer.digest}") as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes(64 * 1024):
                    if received == 0:
                        # The client has the first bytes; now the upstream dies mid-body.
                        upstream.kill()
                        relay.release()
                    received += len(chunk)
    finally:
        relay.release()
    assert 0 < received < layer.size
    assert layer.digest.split(":", 1)[1] not in stored_blobs(lading)
    upstream.start()
    retry = local.get(f"/v2/{PREFIX}team/big/blobs/{layer.digest}")
    assert retry.status_code == 200 and retry.content == layer.data


def test_upstream_down_serves_cached_tags_with_a_warning_and_names_it_otherwise(
        up: httpx.Client, local: httpx.Client, upstream: Distribution, relay: HoldingRelay) -> None:
    image = oci.image(1)
    oci.push(up, "team/stale", image, "v1")
    assert oci.get_manifest(local, f"{PREFIX}team/stale", "v1").status_code == 200
    upstream.stop()
    try:
        stale = oci.get_manifest(local, f"{PREFIX}team/stale", "v1")
        assert stale.status_code == 200 and stale.content == image.payload
        assert stale.headers["warning"].startswith("110 ")
        assert UPSTREAM in stale.headers["warning"]
        uncached = oci.get_manifest(local, f"{PREFIX}team/stale", "v2")
        oci.assert_error(uncached, 502, "UNAVAILABLE")
        message = uncached.json()["errors"][0]["message"]
        assert UPSTREAM in message and relay.url in message
        blob = local.get(f"/v2/{PREFIX}team/stale/blobs/{oci.sha256(b'never pushed')}")
        oci.assert_error(blob, 502, "UNAVAILABLE")
    finally:
        upstream.start()


def lading_cli(stack: Stack, *args: str) -> str:
    command = lading_command(*args, "--data-dir", str(stack.data_dir))
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env(), check=False)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
    return result.stdout


def test_mirroring_copies_matching_tags_ahead_of_pulls_incrementally(
        up: httpx.Client, local: httpx.Client, upstream: Distribution) -> None:
    index = oci.multi_arch_index(layers=1)
    oci.push(up, "team/mirrored", index, "v1")
    oci.push(up, "team/mirrored", oci.image(1), "skip-me")
    layer = index.children[0].blobs[1]
    layer_path = f"/v2/team/mirrored/blobs/{layer.digest}"
    deadline = time.monotonic() + 30
    while upstream.requests("GET", layer_path) < 1 or upstream.requests("HEAD", "/v2/team/mirrored/manifests/v1") < 2:
        assert time.monotonic() < deadline, "the mirror did not copy team/mirrored:v1 within 30 s"
        time.sleep(0.2)
    # Later runs only revalidate: nothing fetched twice.
    assert upstream.requests("GET", layer_path) == 1
    assert upstream.requests("GET", "/v2/team/mirrored/manifests/v1") == 1
    assert upstream.requests("GET", "/v2/team/mirrored/manifests/skip-me") == 0
    # Everything is here: with the upstream gone, the whole image still pulls (the tag stale, with a Warning).
    upstream.stop()
    try:
        got = oci.get_manifest(local, f"{PREFIX}team/mirrored", "v1")
        assert got.status_code == 200 and got.content == index.payload and "warning" in got.headers
        for child in index.children:
            oci.assert_pulls_back(local, f"{PREFIX}team/mirrored", child.digest, child)
    finally:
        upstream.start()


def test_status_and_eviction(up: httpx.Client, local: httpx.Client, lading: Stack, upstream: Distribution,
                            relay: HoldingRelay) -> None:
    image = oci.image(1, layer_size=64 * 1024)
    oci.push(up, "team/evict", image, "v1")
    oci.assert_pulls_back(local, f"{PREFIX}team/evict", "v1", image)
    rows = [json.loads(line) for line in lading_cli(lading, "proxy", "status", "--json").splitlines()]
    assert [row["name"] for row in rows] == [UPSTREAM]
    status = rows[0]
    assert status["prefix"] == PREFIX and status["url"] == relay.url
    assert int(status["cached_blobs"]) >= len(image.blobs)
    assert int(status["cached_bytes"]) >= sum(blob.size for blob in image.blobs)
    assert int(status["hits"]) > 0 and int(status["misses"]) > 0
    assert int(status["stale_serves"]) >= 1  # the stale test above
    planned = lading_cli(lading, "proxy", "evict", "--older-than", "0.001", "--dry-run")
    assert all(blob.digest in planned for blob in image.blobs)
    assert oci.get_manifest(local, f"{PREFIX}team/evict", "v1").status_code == 200  # a dry run changes nothing
    evicted = lading_cli(lading, "proxy", "evict", "--older-than", "0.001")
    assert all(f"evicted {UPSTREAM} {blob.digest}" in evicted for blob in image.blobs)
    layer = image.blobs[1]
    # (The mirror of team/mirrored refills its own blobs at once: eviction is checked by digest.)
    # Unlinked and unreferenced: garbage collection reclaims the bytes.
    assert layer.digest.split(":", 1)[1] in stored_blobs(lading)
    lading_cli(lading, "gc", "run")
    assert layer.digest.split(":", 1)[1] not in stored_blobs(lading)
    assert local.head(f"/v2/{PREFIX}team/evict/blobs/{layer.digest}").status_code == 200  # fetched again
    fetches = upstream.requests("GET", f"/v2/team/evict/blobs/{layer.digest}")
    assert fetches == 2, "an evicted blob is fetched from the upstream again"
    assert upstream.requests("GET", "/v2/team/evict/manifests/v1") == 1
    oci.assert_pulls_back(local, f"{PREFIX}team/evict", "v1", image)
    assert upstream.requests("GET", "/v2/team/evict/manifests/v1") == 2, "its manifest was evicted too"


def test_pull_events_metrics_and_upstream_latency_say_it_came_through_the_cache(
        up: httpx.Client, local: httpx.Client, lading: Stack) -> None:
    image = oci.image(1)
    oci.push(up, "team/observed", image, "v1")
    oci.assert_pulls_back(local, f"{PREFIX}team/observed", "v1", image)
    own = oci.image(1)
    oci.push(local, "own/observed", own, "v1")
    oci.get_manifest(local, "own/observed", "v1")
    bodies = [json.loads(line) for line in lading_cli(lading, "events", "list", "--json").splitlines()
              if line.startswith("          {")]
    pulls = {(body["target"]["repository"], json.dumps(body["target"].get("throughCache")))
             for body in bodies if body["action"] == "pull"}
    assert (f"{PREFIX}team/observed", json.dumps({"upstream": UPSTREAM})) in pulls
    assert ("own/observed", "null") in pulls
    pushes = {body["target"]["repository"] for body in bodies if body["action"] == "push"
              and body["target"].get("mediaType") == image.media_type}
    assert f"{PREFIX}team/observed" not in pushes and "own/observed" in pushes
    metadata_port, blob_port = lading.metrics_ports  # type: ignore[attr-defined]
    metadata = httpx.get(f"http://127.0.0.1:{metadata_port}/metrics").text
    blob = httpx.get(f"http://127.0.0.1:{blob_port}/metrics").text
    for outcome in ("miss", "hit"):
        assert f'lading_proxy_requests_total{{outcome="{outcome}",upstream="{UPSTREAM}"}}' in metadata
    assert f'lading_proxy_upstream_seconds_count{{method="GET",status="200",upstream="{UPSTREAM}"}}' in metadata
    fetched = [line for line in blob.splitlines()
               if line.startswith(f'lading_proxy_upstream_bytes_total{{upstream="{UPSTREAM}"}}')]
    assert fetched and float(fetched[0].split()[-1]) >= sum(blob.size for blob in image.blobs)
