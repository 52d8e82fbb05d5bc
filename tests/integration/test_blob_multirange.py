"""Blob GETs with several ranges (RFC 9110 sections 14.2, 14.6 and 15.3.7): `206 multipart/byteranges`,
as Distribution answers them (Go's http.ServeContent). zstd:chunked pulls (podman, CRI-O) fetch
the chunks they miss this way, up to 1024 ranges in one header.

Every answer here is the registry's own (`follow_redirects=False`): storage behind a redirect (S3,
the direct-read server) does not serve several ranges, so such a GET streams through the gateway
on every profile.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.oci import push_blob, random_bytes, sha256

SIZE = 1000
_PART_HEAD = re.compile(rb"Content-Type: application/octet-stream\r\nContent-Range: bytes (\d+)-(\d+)/(\d+)\r\n\r\n")


@pytest.fixture
def blob(client: httpx.Client, repo: str) -> bytes:
    data = random_bytes(SIZE)
    push_blob(client, repo, data)
    return data


def _get(client: httpx.Client, repo: str, blob: bytes, **headers: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/blobs/{sha256(blob)}", headers=headers, follow_redirects=False)


def _parts(response: httpx.Response) -> list[tuple[int, int, int, bytes]]:
    """(first, last, size, bytes) of each part of a multipart/byteranges body, read strictly
    (RFC 9110 section 14.6, RFC 2046 section 5.1.1): every byte of the body accounted for."""
    media_type, _, parameter = response.headers["Content-Type"].partition("; boundary=")
    assert media_type == "multipart/byteranges" and re.fullmatch(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", parameter)
    delimiter, body = b"--" + parameter.encode(), response.content
    assert int(response.headers["Content-Length"]) == len(body)
    parts, at = [], 0
    while True:
        assert body.startswith((b"\r\n" if parts else b"") + delimiter, at), body[at : at + 100]
        at += len(delimiter) + (2 if parts else 0)
        if body.startswith(b"--\r\n", at):
            assert at + 4 == len(body)
            return parts
        assert body.startswith(b"\r\n", at)
        head = _PART_HEAD.match(body, at + 2)
        assert head is not None, body[at : at + 200]
        first, last, size = (int(number) for number in head.groups())
        at = head.end() + last - first + 1
        parts.append((first, last, size, body[head.end() : at]))


def _assert_multipart(response: httpx.Response, blob: bytes, expected: list[tuple[int, int]]) -> None:
    assert response.status_code == 206, (response.status_code, response.headers)
    assert "Content-Range" not in response.headers
    assert response.headers["Docker-Content-Digest"] == sha256(blob)
    assert response.headers["ETag"] == f'"{sha256(blob)}"'
    parts = _parts(response)
    assert [(first, last) for first, last, _, _ in parts] == expected
    for first, last, size, data in parts:
        assert size == len(blob) and data == blob[first : last + 1], (first, last)


@pytest.mark.parametrize(
    ("range_header", "expected"),
    [("bytes=0-9,100-199,-50", [(0, 9), (100, 199), (950, 999)]),
     # Adjacent ranges, an end past the blob, whitespace and empty list elements (RFC 9110 5.6.1).
     ("bytes= 0-0 , ,1-1,990-5000", [(0, 0), (1, 1), (990, 999)]),
     # Unsatisfiable ones are dropped, the rest answered.
     ("bytes=10-19,500-,2000-3000", [(10, 19), (500, 999)])],
)
def test_several_ranges_are_206_multipart_byteranges(
    client: httpx.Client, repo: str, blob: bytes, range_header: str, expected: list[tuple[int, int]]
) -> None:
    _assert_multipart(_get(client, repo, blob, Range=range_header), blob, expected)


@pytest.mark.parametrize(
    "ranges",
    [[(offset, offset + 9) for offset in range(0, 2_000_000, 2000)],  # 1000 close together: one read
     # More than a MiB apart: one read each (gateway/resources/blobs.py, _SPAN_GAP).
     [(0, 99), (1_100_000, 1_100_999), (2_300_000, 2_300_000), (3_499_990, 3_499_999)]],
    ids=["a-thousand-neighbours", "far-apart"],
)
def test_many_ranges_of_a_large_blob(client: httpx.Client, repo: str, ranges: list[tuple[int, int]]) -> None:
    data = random_bytes(3_500_000)
    push_blob(client, repo, data)
    header = "bytes=" + ",".join(f"{first}-{last}" for first, last in ranges)
    _assert_multipart(_get(client, repo, data, Range=header), data, ranges)


def test_one_satisfiable_range_among_several_is_a_plain_206(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = _get(client, repo, blob, Range="bytes=5000-6000,10-19,1000-")
    assert response.status_code == 206, response.headers
    assert response.headers["Content-Range"] == f"bytes 10-19/{SIZE}"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == blob[10:20]


def test_no_satisfiable_range_is_416_with_the_size(client: httpx.Client, repo: str, blob: bytes) -> None:
    response = _get(client, repo, blob, Range="bytes=1000-,2000-3000,-0")
    assert response.status_code == 416, response.headers
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "guarded",
    ["bytes=0-99,50-149",  # overlapping
     "bytes=500-599,0-9",  # descending
     "bytes=0-9,-10,990-999",  # the suffix overlaps the last range
     "bytes=" + ",".join(f"{offset}-{offset}" for offset in range(1025))],  # more than max_ranges (1024)
    ids=["overlapping", "descending", "suffix-overlapping", "too-many"],
)
def test_the_abuse_guard_answers_the_whole_blob(client: httpx.Client, repo: str, blob: bytes, guarded: str) -> None:
    # RFC 9110 section 14.2: ranges that overlap, are out of order or too many get 200 and the blob,
    # never more bytes than it; the same count in ascending order, disjoint, is answered in parts.
    response = _get(client, repo, blob, Range=guarded)
    assert (response.status_code, "Content-Range" in response.headers) == (200, False), response.headers
    assert response.content == blob
    assert response.headers["Content-Type"] == "application/octet-stream"
    allowed = "bytes=" + ",".join(f"{offset}-{offset}" for offset in range(1024))
    _assert_multipart(_get(client, repo, blob, Range=allowed), blob, [(offset, offset) for offset in range(SIZE)])


def test_if_range_and_conditions_apply_to_several_ranges(client: httpx.Client, repo: str, blob: bytes) -> None:
    etag, other = f'"{sha256(blob)}"', '"sha256:' + "0" * 64 + '"'
    ranges = "bytes=0-9,20-29"
    # If-Range naming another blob: the whole blob (RFC 9110 section 13.1.5); naming this one: parts.
    for if_range in (other, f"W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT"):
        whole = _get(client, repo, blob, Range=ranges, **{"If-Range": if_range})
        assert (whole.status_code, whole.content) == (200, blob), if_range
    _assert_multipart(_get(client, repo, blob, Range=ranges, **{"If-Range": etag}), blob, [(0, 9), (20, 29)])
    _assert_multipart(_get(client, repo, blob, Range=ranges, **{"If-Match": etag}), blob, [(0, 9), (20, 29)])
    assert _get(client, repo, blob, Range=ranges, **{"If-Match": other}).status_code == 412
    assert _get(client, repo, blob, Range=ranges, **{"If-None-Match": etag}).status_code == 304
    # HEAD is unchanged: no parts, the blob's own length.
    head = client.head(f"/v2/{repo}/blobs/{sha256(blob)}", headers={"Range": ranges})
    assert (head.status_code, int(head.headers["Content-Length"])) == (200, SIZE)
