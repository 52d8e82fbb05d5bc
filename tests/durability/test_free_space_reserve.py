"""`lading serve` whose blob disk is below its free-space reserve (blob.filesystem.min_free_bytes),
end to end: a push answers 507 naming the reserve and leaves nothing behind, pulls and deletes
(of a tag, of a manifest) go on, and once the reserve is lowered (a restart with the setting
changed) the same push succeeds.

No disk is filled (no mount, no root): the reserve is set above the size of the real disk, which
is what a disk down to its reserve looks like to the blob plane."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.support import oci
from tests.support.stack import Stack

REPO = "team/app"
RESERVE = "LADING_BLOB__FILESYSTEM__MIN_FREE_BYTES"


def beyond_the_disk(path: Path) -> int:
    info = os.statvfs(path)
    return 2 * info.f_blocks * info.f_frsize + 1


def session_files(data: Path) -> list[Path]:
    """Upload bookkeeping of the blob plane (states, staged bytes, owner markers)."""
    blobs = data / "blobs"
    return sorted(path for folder in ("uploads", "owners") for path in (blobs / folder).rglob("*") if path.is_file())


def assert_refused_by_the_reserve(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    message = error["message"]
    assert "free-space reserve is reached" in message and "blob.filesystem.min_free_bytes" in message, message
    assert "free or add space" in message


def test_below_the_reserve_pushes_answer_507_while_pulls_and_deletes_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kept = oci.image(layers=2)
    dropped = oci.image(layers=1)
    refused = oci.image(layers=2)
    chunk = oci.random_bytes(64 * 1024)

    with Stack(data, env={RESERVE: "0"}) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        oci.push(client, REPO, kept, tag="kept")
        oci.push(client, REPO, dropped, tag="dropped")
        assert client.put(f"/v2/{REPO}/manifests/also-dropped", content=dropped.payload,
                          headers={"Content-Type": dropped.media_type}).status_code == 201
        # A session started while there was room, continued below the reserve.
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        assert started.status_code == 202
        # The session's path (and query), for the next registry on another port.
        session = httpx.URL(oci.absolute(client, started.headers["Location"])).raw_path.decode()
    before = session_files(data)

    env = {RESERVE: str(beyond_the_disk(tmp_path))}
    with Stack(data, env=env) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        assert_refused_by_the_reserve(client.post(f"/v2/{REPO}/blobs/uploads/"))
        layer = refused.blobs[0]
        assert_refused_by_the_reserve(
            client.post(oci.with_query(f"/v2/{REPO}/blobs/uploads/", digest=layer.digest), content=layer.data,
                        headers={"Content-Type": "application/octet-stream"})
        )
        assert_refused_by_the_reserve(
            client.patch(session, content=chunk,
                         headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(chunk) - 1}"})
        )
        # Nothing partial: no new session, no staged bytes (the refused append made no file), no blob.
        assert session_files(data) == before
        for blob in refused.blobs:
            assert client.head(f"/v2/{REPO}/blobs/{blob.digest}").status_code == 404

        # Pulls and deletes need no new blob bytes.
        oci.assert_pulls_back(client, REPO, "kept", kept)
        assert client.delete(f"/v2/{REPO}/manifests/also-dropped").status_code == 202
        assert client.delete(f"/v2/{REPO}/manifests/{dropped.digest}").status_code == 202
        assert oci.get_manifest(client, REPO, "dropped").status_code == 404
        assert client.delete(session).status_code == 204  # a cancel is never refused
        assert "free-space reserve is reached" in stack.log()

    # The reserve lowered (the default 256 MiB: the disk has room for it), the push succeeds.
    with Stack(data) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        oci.push(client, REPO, refused, tag="refused")
        oci.assert_pulls_back(client, REPO, "refused", refused)
        oci.assert_pulls_back(client, REPO, "kept", kept)
