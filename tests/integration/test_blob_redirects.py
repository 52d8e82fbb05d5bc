"""Blob GETs redirected to signed URLs, and S3's small-chunk uploads, over HTTP.

In profiles whose blob plane redirects reads, a blob GET answers `307` with `Location: <signed
URL>` and `Docker-Content-Digest`: a presigned SeaweedFS URL ("postgres-s3"), or the blob plane's
direct-read server ("sqlite", the embedded default). Following it gives the exact bytes, and a
Range header sent along gives the exact slice (206). HEAD, empty blobs, 304s and range errors are
answered by the registry itself. With the profile's `streaming_env` the bytes stream through the
gateway again ("postgres" runs that way throughout).

S3 needs parts of ≥ 5 MiB; the upload POST advertises it (`OCI-Chunk-Min-Length`) and chunks far
smaller still work (the blob plane merges small trailing parts).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Profile, unique_repo
from tests.support.clients import require_binary
from tests.support.oci import Layout, absolute, image, push, push_blob, random_bytes, sha256, with_digest
from tests.support.stack import Stack

MiB = 1024 * 1024
SIZE = 200_000
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def blob(client: httpx.Client, repo: str) -> bytes:
    data = random_bytes(SIZE)
    push_blob(client, repo, data)
    return data


def _registry_answer(client: httpx.Client, path: str, **headers: str) -> httpx.Response:
    """The registry's own answer to a GET (never following a redirect)."""
    return client.get(path, headers=headers, follow_redirects=False)


def _assert_redirect(response: httpx.Response, digest: str, base_url: str, profile: Profile) -> str:
    assert response.status_code == 307, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == b""
    location = response.headers["Location"]
    # An absolute, signed URL of the storage, not of the registry.
    assert location.startswith("http://") and not location.startswith(base_url), location
    assert ("X-Amz-Signature=" if profile.s3 else "&signature=") in location, location
    if not profile.s3:
        # The direct-read server is reached under the host name the client used for the registry.
        assert httpx.URL(location).host == httpx.URL(base_url).host, location
    return location


def test_get_redirects_to_the_storage_only_where_it_can(
    client: httpx.Client, registry: Stack, profile: Profile, repo: str, blob: bytes
) -> None:
    digest = sha256(blob)
    response = _registry_answer(client, f"/v2/{repo}/blobs/{digest}")
    if not profile.redirects_reads:
        assert response.status_code == 200, response.text
        assert "Location" not in response.headers
        assert response.content == blob
        return
    location = _assert_redirect(response, digest, registry.base_url, profile)
    # The presigned URL needs no credentials: a bare GET gets the exact bytes.
    fetched = httpx.get(location, timeout=60.0)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == blob


def test_following_the_redirect_gives_the_exact_bytes(registry: Stack, repo: str, client: httpx.Client) -> None:
    data = random_bytes(3 * MiB + 17)
    push_blob(client, repo, data)
    with httpx.Client(base_url=registry.base_url, timeout=60.0, follow_redirects=True) as follower:
        response = follower.get(f"/v2/{repo}/blobs/{sha256(data)}")
    assert response.status_code == 200
    assert sha256(response.content) == sha256(data)
    assert all(hop.status_code == 307 for hop in response.history)


@pytest.mark.parametrize(("range_header", "start", "end"), [("bytes=100-199", 100, 199), ("bytes=-50", SIZE - 50, SIZE - 1)])
def test_range_is_honoured_through_the_redirect(
    registry: Stack, profile: Profile, client: httpx.Client, repo: str, blob: bytes,
    range_header: str, start: int, end: int,
) -> None:
    digest = sha256(blob)
    path = f"/v2/{repo}/blobs/{digest}"
    first = _registry_answer(client, path, Range=range_header)
    if profile.redirects_reads:
        _assert_redirect(first, digest, registry.base_url, profile)
    else:
        assert first.status_code == 206
    # httpx re-sends the Range header to the redirect target, as Go and other clients do.
    with httpx.Client(base_url=registry.base_url, timeout=60.0, follow_redirects=True) as follower:
        response = follower.get(path, headers={"Range": range_header})
    assert response.status_code == 206, response.text
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.content == blob[start : end + 1]


def test_unsatisfiable_range_is_answered_by_the_registry(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = _registry_answer(client, f"/v2/{repo}/blobs/{sha256(blob)}", Range=f"bytes={SIZE}-")
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


def test_head_never_redirects(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = client.head(f"/v2/{repo}/blobs/{sha256(blob)}", follow_redirects=False)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.headers["Docker-Content-Digest"] == sha256(blob)
    assert int(response.headers["Content-Length"]) == SIZE


def test_empty_blob_and_matching_etag_are_answered_without_redirect(
    client: httpx.Client, repo: str, blob: bytes
) -> None:
    push_blob(client, repo, b"")
    empty = _registry_answer(client, f"/v2/{repo}/blobs/{sha256(b'')}")
    assert empty.status_code == 200 and empty.content == b""
    cached = _registry_answer(client, f"/v2/{repo}/blobs/{sha256(blob)}", **{"If-None-Match": f'"{sha256(blob)}"'})
    assert cached.status_code == 304


@pytest.fixture(scope="module")
def streaming_registry(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second stack of a redirecting profile with its redirects turned off (`streaming_env`)."""
    if not profile.redirects_reads:
        pytest.skip(f"profile {profile.name!r} never redirects reads")
    with profile.environment() as env:
        data_dir = tmp_path_factory.mktemp(f"streaming-{profile.name}") / "data"
        with Stack(data_dir, env={**env, **profile.streaming_env},
                   name=f"lading-streaming-{profile.name}") as stack:
            yield stack


def test_redirects_can_be_turned_off(streaming_registry: Stack) -> None:
    repo = unique_repo("streaming")
    data = random_bytes(2 * MiB + 3)
    with httpx.Client(base_url=streaming_registry.base_url, timeout=60.0, follow_redirects=False) as client:
        push_blob(client, repo, data)
        response = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == sha256(data)
        assert sha256(response.content) == sha256(data)
        ranged = client.get(f"/v2/{repo}/blobs/{sha256(data)}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.content == data[10:20]


def test_upload_advertises_the_minimum_chunk_length(client: httpx.Client, profile: Profile, repo: str) -> None:
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    if profile.s3:  # S3's 5 MiB minimum part size
        assert started.headers["OCI-Chunk-Min-Length"] == str(5 * MiB)
    else:
        assert "OCI-Chunk-Min-Length" not in started.headers
    client.delete(absolute(client, started.headers["Location"]))


def test_chunks_far_below_the_minimum_length_still_work(client: httpx.Client, repo: str) -> None:
    """Many 64 KiB PATCHes, one chunk past S3's 5 MiB minimum, then small ones again: the blob
    plane merges small trailing parts so the final compose only sees parts of ≥ 5 MiB."""
    small = 64 * 1024
    chunks = [random_bytes(small) for _ in range(12)] + [random_bytes(5 * MiB)] + [
        random_bytes(small) for _ in range(12)
    ] + [random_bytes(777)]
    data = b"".join(chunks)
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    offset = 0
    for i, chunk in enumerate(chunks):
        response = client.patch(
            absolute(client, location), content=chunk,
            headers={**OCTET, "Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
        )
        assert response.status_code == 202, f"chunk {i}: {response.text}"
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = response.headers["Location"]
    done = client.put(with_digest(absolute(client, location), sha256(data)))
    assert done.status_code == 201, done.text
    pulled = client.get(f"/v2/{repo}/blobs/{sha256(data)}", follow_redirects=True)
    assert pulled.status_code == 200
    assert sha256(pulled.content) == sha256(data)


@pytest.mark.clients
def test_skopeo_pulls_through_redirects(registry: Stack, profile: Profile, client: httpx.Client, tmp_path: Path) -> None:
    """skopeo (containers/image) follows the 307s to the storage and gets byte-identical blobs."""
    skopeo = require_binary("skopeo", install_hint="apt-get install skopeo")
    repo = unique_repo("redirect")
    manifest = image(2, layer_size=256 * 1024)
    assert push(client, repo, manifest, tag="v1").status_code == 201
    layer = manifest.all_blobs()[-1]
    expected = 307 if profile.redirects_reads else 200
    assert _registry_answer(client, f"/v2/{repo}/blobs/{layer.digest}").status_code == expected
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "auth.json").write_text("{}")
    layout = tmp_path / "pulled"
    command = [skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests",
               f"docker://{registry.hostport}/{repo}:v1", f"oci:{layout}:v1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                 "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")})
    assert result.returncode == 0, result.stderr
    pulled = Layout(layout)
    assert pulled.descriptor_for("v1")["digest"] == manifest.digest
    for blob in manifest.all_blobs():
        assert pulled.blob(blob.digest) == blob.data, f"blob {blob.digest} differs after the pull"
