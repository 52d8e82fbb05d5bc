"""Byte ranges on the wire: `Range` for blob reads, `Content-Range` for upload chunks, and the
`Range` header an upload session reports.

Two different grammars meet here:
- blob reads follow RFC 9110 (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`);
- upload chunks follow the OCI distribution spec (`Content-Range: <start>-<end>`, inclusive, matching
  `^[0-9]+-[0-9]+$`), and sessions answer with `Range: 0-<last byte>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.numbers import MAX_INT64, wire_int
from services.common.errors import ErrorKind, RegistryError

_BYTES_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_CHUNK_RANGE = re.compile(r"([0-9]+)-([0-9]+)")
# Optional whitespace around a header value (RFC 9110: SP and HTAB only, never a line break).
_OWS = " \t"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive, satisfiable byte range [start, end] of a blob of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_blob_range(header: str | None, size: int) -> ByteRange | None:
    """Interprets a blob GET's `Range` header against a blob of `size` bytes.

    Returns None when the whole blob should be sent with 200: no header, another unit, several
    ranges, or a syntactically invalid value (RFC 9110 lets a server ignore those). Returns the
    clamped range for a 206 otherwise.

    Raises BLOB_RANGE_INVALID (416) when the range is valid but unsatisfiable: it starts at or past
    the end of the blob, asks for a zero-length suffix, or targets an empty blob. The error's
    detail carries `size` so the caller can send `Content-Range: bytes */<size>`.
    """
    if not header:
        return None
    match = _BYTES_RANGE.fullmatch(header.strip(_OWS))
    if match is None:
        return None
    # Numbers past 64 bits read as OUT_OF_RANGE, beyond any blob: a start there is unsatisfiable,
    # an end or suffix there covers the rest of the blob.
    first, last = _optional_number(match.group(1)), _optional_number(match.group(2))
    if first is None and last is None:
        return None
    if first is None:
        # A suffix range: the last n bytes.
        assert last is not None
        suffix = last
        if suffix == 0 or size == 0:
            raise _unsatisfiable(header, size)
        start = max(size - suffix, 0)
        return ByteRange(start, size - 1, size)
    start = first
    end = last if last is not None else size - 1
    if last is not None and end < start:
        return None  # invalid syntax per RFC 9110: ignore the header
    if start >= size:
        raise _unsatisfiable(header, size)
    return ByteRange(start, min(end, size - 1), size)


def plain_blob_range(header: str | None) -> bool:
    """Whether a storage that answers a redirected GET itself (an S3 presigned URL, the blob
    plane's direct-read server) reads the request's `Range` as `parse_blob_range` does: none, or
    one `bytes=` range with numbers within 64 bits that does not end before it starts. Other
    values (ignored here, or past 64 bits) differ between stores (S3 answers some of them 416,
    others 206), so the gateway answers them itself."""
    if header is None:
        return True
    match = _BYTES_RANGE.fullmatch(header.strip(_OWS))
    if match is None:
        return False
    first, last = _optional_number(match.group(1)), _optional_number(match.group(2))
    if first is None and last is None:
        return False
    if any(number is not None and number > MAX_INT64 for number in (first, last)):
        return False
    return first is None or last is None or last >= first


def _optional_number(digits: str) -> int | None:
    return wire_int(digits) if digits else None


def _unsatisfiable(header: str, size: int) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_RANGE_INVALID,
        f"range {header!r} is outside the blob's {size} bytes; request a range within 0-{max(size - 1, 0)}",
        {"size": size},
    )


def parse_chunk_range(header: str) -> tuple[int, int]:
    """Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive both ends).

    Raises RANGE_INVALID (416) when the value does not match `^[0-9]+-[0-9]+$`, ends before it
    starts, or holds a number past 64 bits (no blob can reach such an offset).
    """
    match = _CHUNK_RANGE.fullmatch(header.strip(_OWS))
    if match is None:
        raise RegistryError(
            ErrorKind.RANGE_INVALID,
            f"malformed Content-Range {header!r}: expected <start>-<end>, such as 0-1023",
            {"content_range": header},
        )
    start, end = wire_int(match.group(1)), wire_int(match.group(2))
    assert start is not None and end is not None  # the pattern admits digits only
    if end > MAX_INT64:
        raise RegistryError(
            ErrorKind.RANGE_INVALID,
            f"Content-Range {header!r} reaches past the largest blob offset (2^63 - 1); "
            "send the chunk at the session's offset",
            {"content_range": header},
        )
    if end < start:
        raise RegistryError(
            ErrorKind.RANGE_INVALID,
            f"Content-Range {header!r} ends before it starts",
            {"content_range": header},
        )
    return start, end


def upload_range(offset: int) -> str:
    """The `Range` header for a session that has received `offset` bytes.

    `0-<offset-1>`, and `0-0` when nothing has been received yet (CNCF Distribution's convention,
    which clients expect even though it is ambiguous with a one-byte upload).
    """
    return f"0-{offset - 1}" if offset > 0 else "0-0"
