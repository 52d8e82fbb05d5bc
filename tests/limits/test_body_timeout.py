"""A client that stalls mid-body is cut off after `body_read_timeout_seconds` with 408 and a
closed connection; an upload session it was writing to keeps its previous offset, and the client
can resume from there."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import httpx

from tests.limits.conftest import BODY_READ_TIMEOUT_SECONDS
from tests.limits.raw import closed_by_server, connect, read_response, request_head
from tests.support.oci import absolute, assert_error, random_bytes, sha256, with_digest
from tests.support.stack import Stack

OCTET = "application/octet-stream"


def start_session(client: httpx.Client, repo: str) -> str:
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    return absolute(client, started.headers["Location"])


def target_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def stall(registry: Stack, method: str, url: str, headers: dict[str, str], sent: bytes) -> dict:
    """Sends the head and `sent` (less than the body announced), then nothing. Returns the error
    body of the 408 that must come, and checks the server closed the connection."""
    with connect(registry.host, registry.port) as sock:
        sock.sendall(request_head(method, target_of(url), registry.hostport, headers) + sent)
        began = time.monotonic()
        response = read_response(sock)
        waited = time.monotonic() - began
        assert response.status == 408, response
        assert closed_by_server(sock)
    # Not a timing assertion: only that the cut-off did not come before the configured timeout.
    assert waited >= BODY_READ_TIMEOUT_SECONDS * 0.9
    return json.loads(response.body)["errors"][0]


def test_stalled_patch_keeps_the_session_at_its_previous_offset(
    client: httpx.Client, limited_registry: Stack, repo: str
) -> None:
    data = random_bytes(900)
    location = start_session(client, repo)
    first = client.patch(location, content=data[:300], headers={"Content-Type": OCTET, "Content-Range": "0-299"})
    assert first.status_code == 202
    location = absolute(client, first.headers["Location"])

    error = stall(
        limited_registry,
        "PATCH",
        location,
        {"Content-Type": OCTET, "Content-Range": "300-899", "Content-Length": "600"},
        data[300:500],  # 200 of the 600 bytes, then silence
    )
    assert error["code"] == "BLOB_UPLOAD_INVALID"
    assert error["detail"] == {"timeout_seconds": BODY_READ_TIMEOUT_SECONDS}

    # Nothing of the stalled chunk was kept: the session is where the last complete chunk left it.
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-299"
    # The client resumes from that offset and completes the blob.
    resumed = client.patch(location, content=data[300:], headers={"Content-Type": OCTET, "Content-Range": "300-899"})
    assert resumed.status_code == 202, resumed.text
    assert resumed.headers["Range"] == "0-899"
    done = client.put(with_digest(absolute(client, resumed.headers["Location"]), sha256(data)))
    assert done.status_code == 201, done.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}", follow_redirects=True).content == data


def test_stalled_streamed_patch_without_content_range(
    client: httpx.Client, limited_registry: Stack, repo: str
) -> None:
    """Docker's style: one chunked PATCH without Content-Range, stalled after a few chunks."""
    data = random_bytes(500)
    location = start_session(client, repo)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (data[:100], data[100:250]))
    stall(limited_registry, "PATCH", location, {"Content-Type": OCTET, "Transfer-Encoding": "chunked"}, chunked)
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"  # nothing received
    resumed = client.patch(location, content=data, headers={"Content-Type": OCTET})
    assert resumed.headers["Range"] == "0-499"
    done = client.put(with_digest(absolute(client, resumed.headers["Location"]), sha256(data)))
    assert done.status_code == 201, done.text


def test_stalled_monolithic_post_leaves_no_blob(client: httpx.Client, limited_registry: Stack, repo: str) -> None:
    data = random_bytes(600)
    stall(
        limited_registry,
        "POST",
        f"{limited_registry.base_url}/v2/{repo}/blobs/uploads/?digest={sha256(data)}",
        {"Content-Type": OCTET, "Content-Length": str(len(data))},
        data[:100],
    )
    assert_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"), 404)


def test_stalled_final_put_keeps_the_session(client: httpx.Client, limited_registry: Stack, repo: str) -> None:
    data = random_bytes(400)
    location = start_session(client, repo)
    stall(
        limited_registry,
        "PUT",
        with_digest(location, sha256(data)),
        {"Content-Type": OCTET, "Content-Length": str(len(data))},
        data[:10],
    )
    assert_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"), 404)
    assert client.get(location).headers["Range"] == "0-0"
    done = client.put(with_digest(location, sha256(data)), content=data, headers={"Content-Type": OCTET})
    assert done.status_code == 201, done.text


def test_stalled_manifest_put_is_cut_off(client: httpx.Client, limited_registry: Stack, repo: str) -> None:
    reference = "v1"
    manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"'
    stall(
        limited_registry,
        "PUT",
        f"{limited_registry.base_url}/v2/{repo}/manifests/{reference}",
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "4000"},
        manifest,
    )
    assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_a_slow_but_steady_body_is_not_cut_off(limited_registry: Stack, client: httpx.Client, repo: str) -> None:
    """The timeout is per read, not per request: pieces arriving within it keep the request alive
    even when the whole body takes longer than the timeout."""
    data = random_bytes(300)
    location = start_session(client, repo)
    with connect(limited_registry.host, limited_registry.port) as sock:
        head = request_head(
            "PATCH", target_of(location), limited_registry.hostport,
            {"Content-Type": OCTET, "Content-Range": "0-299", "Content-Length": "300"},
        )
        sock.sendall(head)
        # Four pauses of 0.3 × the timeout: the whole body takes longer than one timeout.
        for start in range(0, 300, 75):
            time.sleep(BODY_READ_TIMEOUT_SECONDS * 0.3)
            sock.sendall(data[start : start + 75])
        response = read_response(sock)
    assert response.status == 202
    assert response.headers["range"] == "0-299"
