"""end-2 (GET/HEAD blob, with Range) and end-10 (DELETE blob)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.oci import assert_error, push_blob, random_bytes, sha256

SIZE = 1000


@pytest.fixture
def blob(client: httpx.Client, repo: str) -> bytes:
    data = random_bytes(SIZE)
    push_blob(client, repo, data)
    return data


def test_get_blob_returns_exact_bytes_and_headers(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
    assert response.status_code == 200
    assert response.content == blob
    # Where the registry redirects to its storage (S3), the digest is on its 307 answer.
    registry_answer = response.history[0] if response.history else response
    assert registry_answer.headers["Docker-Content-Digest"] == sha256(blob)
    assert int(response.headers["Content-Length"]) == SIZE


def test_head_blob_has_headers_and_no_body(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = client.head(f"/v2/{repo}/blobs/{sha256(blob)}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Docker-Content-Digest"] == sha256(blob)
    assert int(response.headers["Content-Length"]) == SIZE


def test_large_blob_round_trips(client: httpx.Client, repo: str) -> None:
    # Bigger than the gateway's 1 MiB streaming messages, and not a multiple of them.
    data = random_bytes(5 * 1024 * 1024 + 12345)
    push_blob(client, repo, data)
    response = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
    assert response.status_code == 200
    assert sha256(response.content) == sha256(data)


def test_empty_blob_round_trips(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"")
    response = client.get(f"/v2/{repo}/blobs/{sha256(b'')}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Docker-Content-Digest"] == sha256(b"")


def test_unknown_blob_is_404(client: httpx.Client, repo: str, blob: bytes) -> None:
    missing = sha256(b"not pushed " + blob)
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    assert_error(client.head(f"/v2/{repo}/blobs/{missing}"), 404)


def test_blob_is_only_visible_in_repositories_it_is_linked_to(
    client: httpx.Client, repo: str, blob: bytes
) -> None:
    other = repo + "-other"
    push_blob(client, other, random_bytes(10))  # the other repository exists
    assert_error(client.get(f"/v2/{other}/blobs/{sha256(blob)}"), 404, "BLOB_UNKNOWN")
    assert_error(client.head(f"/v2/{other}/blobs/{sha256(blob)}"), 404)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=900-", 900, SIZE - 1),  # open-ended
        ("bytes=-50", SIZE - 50, SIZE - 1),  # suffix
        ("bytes=990-5000", 990, SIZE - 1),  # end past the blob is clamped (RFC 9110 14.1.2)
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
    ],
)
def test_range_request_returns_206_with_content_range(
    client: httpx.Client, repo: str, blob: bytes, range_header: str, start: int, end: int
) -> None:
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": range_header})
    assert response.status_code == 206, response.text
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert int(response.headers["Content-Length"]) == end - start + 1
    assert response.content == blob[start : end + 1]


@pytest.mark.parametrize("range_header", ["bytes=1000-", "bytes=1000-1100", "bytes=5000-6000"])
def test_unsatisfiable_range_is_416_with_the_size(
    client: httpx.Client, repo: str, blob: bytes, range_header: str
) -> None:
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": range_header})
    assert response.status_code == 416, response.text
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("range_header", ["bytes=10-19", "bytes=5000-"])
@pytest.mark.parametrize("if_range", ['"sha256:' + "0" * 64 + '"', "W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT"])
def test_a_range_under_an_if_range_that_does_not_hold_is_ignored(
    client: httpx.Client, repo: str, blob: bytes, range_header: str, if_range: str
) -> None:
    # RFC 9110 section 13.1.5: another ETag (or a weak one: strong comparison), or a date where no
    # Last-Modified was sent, means the client's partial copy may be of something else: the whole
    # blob, 200, never 206 nor 416 (as Distribution answers).
    etag = f'"{sha256(blob)}"'
    headers = {"Range": range_header, "If-Range": if_range.format(etag=etag)}
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers=headers)
    assert (response.status_code, "Content-Range" in response.headers) == (200, False), response.text
    assert response.content == blob


def test_conditions_on_blob_get_and_head_follow_rfc_9110(
    client: httpx.Client, repo: str, blob: bytes
) -> None:
    url, etag = f"/v2/{repo}/blobs/{sha256(blob)}", f'"{sha256(blob)}"'
    other = '"sha256:' + "0" * 64 + '"'
    # If-Match naming another blob: 412, on GET (before any redirect) and HEAD alike.
    for method in ("GET", "HEAD"):
        refused = client.request(method, url, headers={"If-Match": other, "Range": "bytes=0-9"},
                                 follow_redirects=False)
        assert (refused.status_code, refused.content) == (412, b""), method
        assert refused.headers["ETag"] == etag
    # Never redirected: S3 would compare the If-Match with its own ETag, and answer 412.
    matched = client.get(url, headers={"If-Match": f"{other}, {etag}"}, follow_redirects=False)
    assert (matched.status_code, matched.content) == (200, blob), matched.headers
    assert client.head(url, headers={"If-Match": "*"}).status_code == 200
    # If-None-Match naming this blob: 304 on HEAD too, as on GET (and as manifests answer).
    held = client.head(url, headers={"If-None-Match": etag})
    assert (held.status_code, held.headers["ETag"], held.headers["Docker-Content-Digest"]) == (304, etag, sha256(blob))
    assert client.head(url, headers={"If-None-Match": other}).status_code == 200
    # If-Match comes first (RFC 9110 section 13.2.2).
    assert client.head(url, headers={"If-Match": other, "If-None-Match": etag}).status_code == 412


@pytest.mark.parametrize(
    "condition",
    [{"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, {"If-Modified-Since": "{last_modified}"},
     {"If-Range": "{last_modified}", "Range": "bytes=10-19"}],
    ids=["if-unmodified-since-before-the-push", "if-modified-since-its-date", "if-range-its-date"],
)
def test_a_date_condition_is_answered_alike_on_every_backend(
    client: httpx.Client, repo: str, blob: bytes, condition: dict[str, str]
) -> None:
    # The gateway sends no Last-Modified and ignores these dates (an If-Range date never holds:
    # the whole blob), but storage behind a redirect (the direct-read server, S3) compares them
    # with its own Last-Modified, which a client got from it (412, 304, 206 there): such GETs are
    # answered by the gateway itself, never redirected.
    url = f"/v2/{repo}/blobs/{sha256(blob)}"
    last_modified = client.get(url).headers.get("Last-Modified", "Sat, 01 Jan 2000 00:00:00 GMT")
    headers = {name: value.format(last_modified=last_modified) for name, value in condition.items()}
    response = client.get(url, headers=headers)
    assert (response.status_code, "Content-Range" in response.headers) == (200, False), response.headers
    assert response.content == blob
    assert client.get(url, headers=headers, follow_redirects=False).status_code == 200


# Several valid ranges are answered in parts (test_blob_multirange.py); one invalid among them is not.
@pytest.mark.parametrize("range_header", ["bytes=9-1", "bytes=a-b", "bytes=0-1,a-b", "bytes=-", "lines=0-9", "0-9"])
def test_a_range_the_registry_ignores_is_the_whole_blob_on_every_backend(
    client: httpx.Client, repo: str, blob: bytes, range_header: str
) -> None:
    # RFC 9110 section 14.2 lets a server ignore these; the gateway does, so its storage (the
    # direct-read server, an S3 presigned URL) must not answer them otherwise after a redirect.
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": range_header})
    assert (response.status_code, "Content-Range" in response.headers) == (200, False), response.text
    assert response.content == blob


@pytest.mark.parametrize("range_header", ["bytes=0-99999999999999999999", "bytes=-99999999999999999999"])
def test_a_range_reaching_past_64_bits_is_the_rest_of_the_blob(
    client: httpx.Client, repo: str, blob: bytes, range_header: str
) -> None:
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": range_header})
    assert (response.status_code, response.headers.get("Content-Range")) == (206, f"bytes 0-{SIZE - 1}/{SIZE}")
    assert response.content == blob


def test_blob_is_served_whole_after_a_range_request(client: httpx.Client, repo: str, blob: bytes) -> None:
    client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": "bytes=10-20"})
    response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
    assert response.status_code == 200
    assert response.content == blob


def test_delete_blob_is_202_then_404(client: httpx.Client, repo: str, blob: bytes) -> None:
    digest = sha256(blob)
    response = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 202, response.text
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.head(f"/v2/{repo}/blobs/{digest}"), 404)
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_deleting_a_blob_link_leaves_other_repositories_alone(
    client: httpx.Client, repo: str, blob: bytes
) -> None:
    other = repo + "-keep"
    push_blob(client, other, blob)
    assert client.delete(f"/v2/{repo}/blobs/{sha256(blob)}").status_code == 202
    response = client.get(f"/v2/{other}/blobs/{sha256(blob)}")
    assert response.status_code == 200
    assert response.content == blob


def test_blob_can_be_pushed_again_after_delete(client: httpx.Client, repo: str, blob: bytes) -> None:
    assert client.delete(f"/v2/{repo}/blobs/{sha256(blob)}").status_code == 202
    push_blob(client, repo, blob)
    assert client.get(f"/v2/{repo}/blobs/{sha256(blob)}").content == blob
