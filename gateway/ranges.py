"""Byte ranges on the wire: `Range` for blob reads, `Content-Range` for upload chunks, and the
`Range` header an upload session reports.

Two different grammars meet here:
- blob reads follow RFC 9110 (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`, or several of them
  separated by commas), parsed by services.common.ranges as the blob plane's direct-read server
  parses them; several are answered as `multipart/byteranges` (`blob_ranges`, `Multipart`);
- upload chunks follow the OCI distribution spec (`Content-Range: <start>-<end>`, inclusive, matching
  `^[0-9]+-[0-9]+$`), and sessions answer with `Range: 0-<last byte>`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from services.common.errors import ErrorKind, RegistryError
from services.common.numbers import MAX_INT64, wire_int
from services.common.ranges import OWS, RangeRequest, Unsatisfiable, parse_range, parse_ranges

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

    Returns None when the whole blob should be sent with 200: no range, or one that is ignored
    (services.common.ranges.parse_range: another unit, an invalid value; RFC 9110 lets a server
    ignore those; several ranges are `blob_ranges`' business). Returns the clamped range for a 206 otherwise; numbers past 64
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


def parse_blob_ranges(header: str | None, size: int, *, max_ranges: int) -> ByteRange | Multipart | None:
    """`blob_ranges` of what services.common.ranges.parse_ranges reads in a `Range` header."""
    return blob_ranges((parse_ranges(header) or ()) if header else (), size, max_ranges=max_ranges)


def blob_ranges(wanted: tuple[RangeRequest, ...], size: int, *, max_ranges: int) -> ByteRange | Multipart | None:
    """What a GET's parsed `Range` (one range or several, in the order sent) selects of a blob of
    `size` bytes, as RFC 9110 sections 14.2 and 15.3.7 (and Go's http.ServeContent, which serves
    CNCF Distribution's blobs) answer it.

    Ranges that start at or past the end of the blob are dropped. Of those left, one is a
    ByteRange (a single-part 206 with Content-Range); several are a Multipart (206
    `multipart/byteranges`, its parts in the order requested). None (the whole blob, 200): no
    range, or the abuse guard of RFC 9110 section 14.2: more than `max_ranges` ranges sent, or
    satisfiable ranges that overlap or are not in ascending order (a client asking for the same
    bytes twice, or seeking back and forth). The guard answers the whole blob rather than
    coalescing: the client gets what it would from a server without ranges, and never more bytes
    than the blob plus the part headers (ascending disjoint ranges sum to at most the blob).

    Raises BLOB_RANGE_INVALID (416, the `size` in its detail) when no range is satisfiable.
    """
    if not wanted:
        return None
    if len(wanted) == 1:
        return blob_range(wanted[0], size)
    if len(wanted) > max_ranges:
        return None
    parts: list[ByteRange] = []
    for one in wanted:
        try:
            start, end = one.within(size)
        except Unsatisfiable:
            continue
        if parts and start <= parts[-1].end:
            return None  # overlapping, or not ascending: the guard
        parts.append(ByteRange(start, end, size))
    if not parts:
        raise _unsatisfiable(wanted[0], size, several=True)
    if len(parts) == 1:
        return parts[0]
    return Multipart(tuple(parts))


@dataclass(frozen=True, slots=True)
class Multipart:
    """A `multipart/byteranges` body (RFC 9110 section 14.6): each part a `--boundary` line,
    `Content-Type: application/octet-stream` and `Content-Range: bytes a-b/size`, a blank line
    and the bytes; a closing `--boundary--` line. Its length is known before any byte is read, so
    the response carries an exact Content-Length. `parts`: at least two, ascending and disjoint."""

    parts: tuple[ByteRange, ...]
    # 40 hex digits: a token (RFC 9110 section 5.6.2), never found in a header line, and as good as
    # never in the bytes (a client finds parts by the boundary, RFC 2046 section 5.1.1).
    boundary: str = ""

    def __post_init__(self) -> None:
        if not self.boundary:
            object.__setattr__(self, "boundary", secrets.token_hex(20))

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    def head(self, index: int) -> bytes:
        """What precedes part `index`'s bytes (the line break ending the part before it, too)."""
        part = self.parts[index]
        before = "" if index == 0 else "\r\n"
        return (f"{before}--{self.boundary}\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Content-Range: {part.content_range()}\r\n\r\n").encode("ascii")

    def tail(self) -> bytes:
        """What follows the last part's bytes."""
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def length(self) -> int:
        """The body's length in bytes."""
        return sum(len(self.head(index)) + part.length for index, part in enumerate(self.parts)) + len(self.tail())


def _unsatisfiable(wanted: RangeRequest, size: int, *, several: bool = False) -> RegistryError:
    sent = f"bytes={'' if wanted.first is None else wanted.first}-{'' if wanted.last is None else wanted.last}"
    what = f"ranges {sent!r}, ... are all" if several else f"range {sent!r} is"
    return RegistryError(
        ErrorKind.BLOB_RANGE_INVALID,
        f"{what} outside the blob's {size} bytes; request a range within 0-{max(size - 1, 0)}",
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
