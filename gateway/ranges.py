"""Byte ranges on the wire: `Range` for blob reads, `Content-Range` for upload chunks, and the
`Range` header an upload session reports.

Two different grammars meet here:
- blob reads follow RFC 9110 (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`), parsed by
  services.common.ranges as the blob plane's direct-read server parses them;
- upload chunks follow the OCI distribution spec (`Content-Range: <start>-<end>`, inclusive, matching
  `^[0-9]+-[0-9]+$`), and sessions answer with `Range: 0-<last byte>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import ErrorKind, RegistryError
from services.common.numbers import MAX_INT64, wire_int
from services.common.ranges import OWS, RangeRequest, Unsatisfiable, parse_range

_CHUNK_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


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
    """Interprets a blob GET's `Range` header against a blob of `size` bytes: `blob_range` of
    what services.common.ranges.parse_range reads in it (None without the header)."""
    return blob_range(parse_range(header) if header else None, size)


def blob_range(wanted: RangeRequest | None, size: int) -> ByteRange | None:
    """The range of a blob of `size` bytes that a GET's parsed `Range` asks for.

    Returns None when the whole blob should be sent with 200: no header, or one that is ignored
    (services.common.ranges.parse_range: another unit, several ranges, an invalid value; RFC 9110
    lets a server ignore those). Returns the clamped range for a 206 otherwise; numbers past 64
    bits are beyond any blob (a start there is unsatisfiable, an end or suffix there covers the
    rest of the blob).

    Raises BLOB_RANGE_INVALID (416) when the range is valid but unsatisfiable: it starts at or past
    the end of the blob, asks for a zero-length suffix, or targets an empty blob. The error's
    detail carries `size` so the caller can send `Content-Range: bytes */<size>`.
    """
    if wanted is None:
        return None
    try:
        start, end = wanted.within(size)
    except Unsatisfiable:
        raise _unsatisfiable(wanted, size) from None
    return ByteRange(start, end, size)


def _unsatisfiable(wanted: RangeRequest, size: int) -> RegistryError:
    sent = f"bytes={'' if wanted.first is None else wanted.first}-{'' if wanted.last is None else wanted.last}"
    return RegistryError(
        ErrorKind.BLOB_RANGE_INVALID,
        f"range {sent!r} is outside the blob's {size} bytes; request a range within 0-{max(size - 1, 0)}",
        {"size": size},
    )


def parse_chunk_range(header: str) -> tuple[int, int]:
    """Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive both ends).

    Raises RANGE_INVALID (416) when the value does not match `^[0-9]+-[0-9]+$`, ends before it
    starts, or holds a number past 64 bits (no blob can reach such an offset).
    """
    match = _CHUNK_RANGE.fullmatch(header.strip(OWS))
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
