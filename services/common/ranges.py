"""RFC 9110 byte ranges (section 14.1.2) and entity-tag comparison (section 8.8.3.2), as both
planes that answer blob reads apply them: the gateway (gateway/ranges.py, gateway/conditions.py)
and the blob plane's direct-read server (services/blob/direct_reads.py). Those two must agree on
every value, since a redirected client re-sends its headers from one to the other: one parser
here, and each plane maps its outcome to its own answer (an OCI error, a bare 416).

`parse_ranges` reads a `bytes=` range set (one range or several: `bytes=0-9,20-29,-5`);
`parse_range` takes only a single one (the direct-read server, and whether a GET may be
redirected, go by it). Anything else (another unit, a value that is not a valid range set) is
ignored, and the whole blob is sent, as RFC 9110 allows. The gateway answers several ranges with
`multipart/byteranges` (gateway/ranges.py); the direct-read server never sees them (such a GET is
not redirected) and would send the whole blob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.numbers import MAX_INT64, wire_int

_BYTES_RANGE = re.compile(r"bytes=[0-9]*-[0-9]*")
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_BYTES_UNIT = "bytes="
# Optional whitespace around a header value (RFC 9110: SP and HTAB only, never a line break).
OWS = " \t"


class Unsatisfiable(ValueError):
    """A valid range that selects nothing of the representation (answered 416): it starts at or
    past its end, asks for a suffix of nothing, or targets an empty one."""


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """One `bytes=` range as sent, before the size is known: `first`-`last` (inclusive), `first`-
    (`last` None) or the last `last` bytes (`first` None). Numbers past 64 bits read as
    services.common.numbers.OUT_OF_RANGE."""

    first: int | None
    last: int | None

    @property
    def plain(self) -> bool:
        """Its numbers are within 64 bits: any storage reads it the same (S3 answers some larger
        ones 416, others 206)."""
        return (self.first is None or self.first <= MAX_INT64) and (self.last is None or self.last <= MAX_INT64)

    def within(self, size: int) -> tuple[int, int]:
        """(start, end), inclusive, of this range of a `size`-byte representation, clamped to it.
        Raises Unsatisfiable (see there)."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                raise Unsatisfiable(self)
            return max(size - self.last, 0), size - 1
        if self.first >= size:
            raise Unsatisfiable(self)
        return self.first, size - 1 if self.last is None else min(self.last, size - 1)


def parse_range(header: str) -> RangeRequest | None:
    """The range a `Range` header asks for, or None when it is to be ignored: another unit,
    several ranges, `bytes=-`, a range that ends before it starts, or any other invalid value.
    Strictly `bytes=first-last` (either number may be left out), nothing around the range: what
    every storage behind a redirect (S3, the direct-read server) reads alike."""
    if _BYTES_RANGE.fullmatch(header.strip(OWS)) is None:
        return None
    ranges = parse_ranges(header)
    return ranges[0] if ranges is not None else None


def parse_ranges(header: str) -> tuple[RangeRequest, ...] | None:
    """The ranges a `Range` header asks for, in the order sent (RFC 9110 section 14.1.2:
    `bytes=` and a comma-separated list of range-specs, empty list elements and whitespace around
    them allowed), or None when the header is to be ignored: another unit, no range at all, or any
    range-spec that is invalid (`-`, one that ends before it starts, anything not digits)."""
    value = header.strip(OWS)
    if not value.startswith(_BYTES_UNIT):
        return None
    ranges = []
    for spec in value[len(_BYTES_UNIT):].split(","):
        spec = spec.strip(OWS)
        if not spec:
            continue  # an empty list element (RFC 9110 section 5.6.1)
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return None
        first_digits, last_digits = match.groups()
        first = wire_int(first_digits) if first_digits else None
        last = wire_int(last_digits) if last_digits else None
        if first is None and last is None:
            return None  # `-`: no range at all
        if first is not None and last is not None and last < first:
            return None  # invalid: ends before it starts
        ranges.append(RangeRequest(first, last))
    return tuple(ranges) if ranges else None


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match value names `etag` (a strong tag) or is `*`. `weak`
    compares weak tags too (`W/"..."`), as If-None-Match does; If-Match compares strongly."""
    for tag in (part.strip() for part in header.split(",")):
        if tag == "*":
            return True
        if weak and tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False
