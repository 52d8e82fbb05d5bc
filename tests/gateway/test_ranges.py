"""Range (blob reads, RFC 9110), Content-Range (upload chunks, OCI) and the session Range header."""

from __future__ import annotations

import pytest

from gateway.ranges import (
    ByteRange,
    Multipart,
    parse_blob_range,
    parse_blob_ranges,
    parse_chunk_range,
    upload_range,
)
from services.common.errors import ErrorKind, RegistryError


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, ByteRange(0, 9, 100)),
        ("bytes=10-", 100, ByteRange(10, 99, 100)),
        ("bytes=-10", 100, ByteRange(90, 99, 100)),
        ("bytes=-1000", 100, ByteRange(0, 99, 100)),  # a suffix longer than the blob is the blob
        ("bytes=50-1000", 100, ByteRange(50, 99, 100)),  # end clamped to the last byte
        ("bytes=99-99", 100, ByteRange(99, 99, 100)),
        (" bytes=0-0 ", 1, ByteRange(0, 0, 1)),
    ],
)
def test_satisfiable_ranges(header: str, size: int, expected: ByteRange) -> None:
    assert parse_blob_range(header, size) == expected


def test_byte_range_headers() -> None:
    byte_range = ByteRange(10, 19, 100)
    assert byte_range.length == 10
    assert byte_range.content_range() == "bytes 10-19/100"


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=", "bytes=-", "items=0-9", "bytes=0-1,5-9", "bytes=9-1", "bytes=a-b", "0-9"],
)
def test_ignored_ranges_mean_the_whole_blob(header: str | None) -> None:
    assert parse_blob_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_blob_range(header, size)
    assert caught.value.kind is ErrorKind.BLOB_RANGE_INVALID
    assert caught.value.kind.http_status == 416
    assert caught.value.detail == {"size": size}


@pytest.mark.parametrize(
    ("header", "expected"), [("0-0", (0, 0)), ("0-1023", (0, 1023)), ("1024-2047", (1024, 2047))]
)
def test_chunk_ranges(header: str, expected: tuple[int, int]) -> None:
    assert parse_chunk_range(header) == expected


@pytest.mark.parametrize(
    "header", ["", "0", "-1", "0-", "bytes 0-9/10", "bytes=0-9", "5-4", "a-b", "0-9/10", "+1-2"]
)
def test_malformed_chunk_ranges_are_416(header: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_chunk_range(header)
    assert caught.value.kind is ErrorKind.RANGE_INVALID
    assert caught.value.kind.http_status == 416


@pytest.mark.parametrize(("offset", "header"), [(0, "0-0"), (1, "0-0"), (2, "0-1"), (1024, "0-1023")])
def test_upload_range_header(offset: int, header: str) -> None:
    assert upload_range(offset) == header


@pytest.mark.parametrize(
    ("header", "expected"),
    [("bytes=0-9,20-29", [(0, 9), (20, 29)]),
     ("bytes=0-0, 1-1 ,,-10", [(0, 0), (1, 1), (90, 99)]),
     ("bytes=50-,0-9", None),  # descending: the guard
     ("bytes=0-9,5-20", None),  # overlapping: the guard
     ("bytes=0-9,200-,-0,10-10", [(0, 9), (10, 10)]),  # unsatisfiable ones dropped
     ("bytes=200-,5-9", (5, 9)),  # one left: a single range
     ("bytes=0-9,a-b", None), ("bytes=0-9,-", None), ("bytes=0-9,9-1", None)],  # invalid: ignored
)
def test_several_ranges(header: str, expected: list[tuple[int, int]] | tuple[int, int] | None) -> None:
    selected = parse_blob_ranges(header, 100, max_ranges=4)
    if isinstance(expected, list):
        assert isinstance(selected, Multipart)
        assert [(part.start, part.end) for part in selected.parts] == expected
    elif expected is None:
        assert selected is None
    else:
        assert selected == ByteRange(*expected, 100)


def test_more_ranges_than_allowed_mean_the_whole_blob() -> None:
    assert isinstance(parse_blob_ranges("bytes=0-0,2-2,4-4,6-6", 100, max_ranges=4), Multipart)
    assert parse_blob_ranges("bytes=0-0,2-2,4-4,6-6,8-8", 100, max_ranges=4) is None


def test_no_satisfiable_range_among_several_is_416() -> None:
    with pytest.raises(RegistryError) as caught:
        parse_blob_ranges("bytes=100-,200-300,-0", 100, max_ranges=4)
    assert caught.value.kind is ErrorKind.BLOB_RANGE_INVALID and caught.value.detail == {"size": 100}


def test_a_multipart_body_length_is_exact() -> None:
    selected = Multipart((ByteRange(0, 9, 100), ByteRange(20, 29, 100)), boundary="B")
    body = selected.head(0) + b"x" * 10 + selected.head(1) + b"y" * 10 + selected.tail()
    assert body == (b"--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/100\r\n\r\n"
                    + b"x" * 10 + b"\r\n--B\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Range: bytes 20-29/100\r\n\r\n" + b"y" * 10 + b"\r\n--B--\r\n")
    assert selected.length == len(body)
    assert selected.content_type == "multipart/byteranges; boundary=B"
