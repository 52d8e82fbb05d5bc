"""Blobs over `max_blob_bytes` are refused with 413 (BLOB_UPLOAD_INVALID), whether the size is
declared (Content-Length, Content-Range) or only found while streaming, and nothing is left: no
blob, no session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.limits.conftest import MAX_BLOB_BYTES
from tests.support.oci import absolute, assert_error, random_bytes, sha256, with_digest

OCTET = {"Content-Type": "application/octet-stream"}


def start_session(client: httpx.Client, repo: str) -> str:
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    return absolute(client, started.headers["Location"])


def streamed(data: bytes, piece: int = 200) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def assert_too_large(response: httpx.Response) -> None:
    assert_error(response, 413, "BLOB_UPLOAD_INVALID")
    detail = response.json()["errors"][0]["detail"]
    assert detail["limit"] == MAX_BLOB_BYTES
    assert detail["size"] > MAX_BLOB_BYTES


def assert_gone(client: httpx.Client, repo: str, data: bytes, location: str | None = None) -> None:
    assert_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"), 404)
    if location is not None:
        assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_a_blob_of_exactly_the_limit_is_accepted(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data, headers=OCTET)
    assert response.status_code == 201, response.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}", follow_redirects=True).content == data


def test_monolithic_post_over_the_limit(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES + 1)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data, headers=OCTET)
    assert_too_large(response)
    assert_gone(client, repo, data)


def test_monolithic_post_streamed_over_the_limit(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES + 300)
    response = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=streamed(data), headers=OCTET
    )
    assert_too_large(response)
    assert_gone(client, repo, data)


def test_chunk_whose_range_passes_the_limit_cancels_the_session(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES + 100)
    location = start_session(client, repo)
    first = client.patch(location, content=data[:600], headers={**OCTET, "Content-Range": "0-599"})
    assert first.status_code == 202
    location = absolute(client, first.headers["Location"])
    second = client.patch(location, content=data[600:], headers={**OCTET, "Content-Range": f"600-{len(data) - 1}"})
    assert_too_large(second)
    assert_gone(client, repo, data, location)


def test_streamed_patch_passing_the_limit_cancels_the_session(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES * 2)
    location = start_session(client, repo)
    response = client.patch(location, content=streamed(data), headers=OCTET)
    assert_too_large(response)
    assert_gone(client, repo, data, location)


def test_final_put_passing_the_limit_cancels_the_session(client: httpx.Client, repo: str) -> None:
    data = random_bytes(MAX_BLOB_BYTES + 1)
    location = start_session(client, repo)
    first = client.patch(location, content=data[:500], headers={**OCTET, "Content-Range": "0-499"})
    assert first.status_code == 202
    location = absolute(client, first.headers["Location"])
    response = client.put(with_digest(location, sha256(data)), content=data[500:], headers=OCTET)
    assert_too_large(response)
    assert_gone(client, repo, data, location)
