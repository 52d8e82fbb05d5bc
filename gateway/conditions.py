"""A blob GET/HEAD's conditions (RFC 9110 section 13) and Range, read once per request.

`blob_conditions` scans the request's headers once and parses what it finds (the Range with
services.common.ranges, the one parser the blob plane's direct-read server uses too); a request
with none of them (nearly every pull) gets `UNCONDITIONAL` without any parsing. The resource then
asks this value, never the headers again: which answer the conditions force (412, 304), which Range
applies, and whether storage would answer the GET as the gateway does (`plain`), which decides
whether it may be redirected there.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.responses import held_in
from services.common.digests import client_holds
from services.common.ranges import RangeRequest, etag_matches, parse_range, parse_ranges

# Header names as ASGI servers give them (lowercase, latin-1 bytes).
_IF_NONE_MATCH, _IF_MATCH, _IF_RANGE, _RANGE = b"if-none-match", b"if-match", b"if-range", b"range"
_IF_MODIFIED_SINCE, _IF_UNMODIFIED_SINCE = b"if-modified-since", b"if-unmodified-since"
_NAMES = frozenset((_IF_NONE_MATCH, _IF_MATCH, _IF_RANGE, _RANGE, _IF_MODIFIED_SINCE, _IF_UNMODIFIED_SINCE))


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a blob GET/HEAD asks beyond the blob itself.

    `held`: the digests its If-None-Match names (gateway.responses.held_in; "*" for any).
    `if_match`, `if_range`: those headers as sent (None: absent).
    `range`: its Range, parsed, when it is exactly one range (None: absent, several ranges, or a
    value the registry ignores).
    `ranges`: every range its Range asks for, in the order sent (services.common.ranges.
    parse_ranges; empty: absent, or a value the registry ignores).
    `plain`: storage reached by a redirect (an S3 presigned URL, the blob plane's direct-read
    server) would answer the GET as the gateway does. Storage judges If-Match, If-Range,
    If-Modified-Since and If-Unmodified-Since against its own ETag and Last-Modified (the gateway
    sends neither date nor S3's ETag, and ignores the dates), and some Ranges the gateway ignores
    or reads as the rest of the blob (numbers past 64 bits) by its own parser, and does not serve
    several ranges (the gateway answers those in parts); a GET that carries any of those is not
    plain and is streamed from the gateway. If-None-Match is plain: when it
    names the blob the gateway answers 304 itself, and any other tag fails in storage too.
    """

    held: frozenset[str] = frozenset()
    if_match: str | None = None
    if_range: str | None = None
    range: RangeRequest | None = None
    ranges: tuple[RangeRequest, ...] = ()
    plain: bool = True

    def refused(self, digest: str) -> bool:
        """If-Match names neither `digest`'s ETag nor "*" (412, RFC 9110 section 13.1.1; a strong
        comparison: a weak tag never matches)."""
        return self.if_match is not None and not etag_matches(self.if_match, f'"{digest}"', weak=False)

    def not_modified(self, digest: str) -> bool:
        """If-None-Match names `digest` (or "*"): 304."""
        return client_holds(self.held, digest)

    def bodiless(self, digest: str) -> bool:
        """Answered 412 or 304, without the bytes."""
        return self.refused(digest) or self.not_modified(digest)

    def range_for(self, digest: str) -> RangeRequest | None:
        """The Range that applies to `digest` (RFC 9110 section 13.1.5): None without one, or
        under an If-Range that does not name the blob's ETag (strongly). An If-Range date never
        names it: the gateway sends no Last-Modified and does not know storage's (a client
        redirected before may have one from the direct-read server or S3), so the Range is
        ignored and the whole blob sent, as Distribution does; such a GET is not `plain`, so
        storage never gets to compare the date itself."""
        return self.range if self._range_applies(digest) else None

    def ranges_for(self, digest: str) -> tuple[RangeRequest, ...]:
        """Every range that applies to `digest`, as `range_for` decides (empty: none)."""
        return self.ranges if self._range_applies(digest) else ()

    def _range_applies(self, digest: str) -> bool:
        return self.if_range is None or self.if_range.strip() == f'"{digest}"'


UNCONDITIONAL = Conditions()


def blob_conditions(request: Request) -> Conditions:
    """The conditions and Range of a blob GET/HEAD (the first of each header, as Starlette's
    `Headers.get` reads them), in one pass over its headers."""
    found: dict[bytes, bytes] = {}
    for name, value in request.headers.raw:
        if name in _NAMES and name not in found:
            found[name] = value
    if not found:
        return UNCONDITIONAL
    text = {name: value.decode("latin-1") for name, value in found.items()}
    range_header = text.get(_RANGE)
    wanted = parse_range(range_header) if range_header is not None else None
    ranges = (parse_ranges(range_header) or ()) if range_header is not None else ()
    plain = not (_IF_MATCH in found or _IF_RANGE in found or _IF_MODIFIED_SINCE in found
                 or _IF_UNMODIFIED_SINCE in found) and (
        range_header is None or (wanted is not None and wanted.plain))
    if_none_match = text.get(_IF_NONE_MATCH)
    return Conditions(held=held_in(if_none_match) if if_none_match else frozenset(),
                      if_match=text.get(_IF_MATCH), if_range=text.get(_IF_RANGE), range=wanted, ranges=ranges,
                      plain=plain)
