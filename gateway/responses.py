"""Small response builders shared by the resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


def json_response(
    data: Any, *, headers: Mapping[str, str] | None = None, media_type: str = "application/json"
) -> Response:
    return Response(orjson.dumps(data), headers=headers, media_type=media_type)


def empty(status_code: int, headers: dict[str, str]) -> Response:
    """A body-less response; `Content-Length: 0` is stated explicitly (clients such as Docker read it)."""
    if status_code not in (204, 304):
        headers.setdefault("content-length", "0")
    return Response(b"", status_code=status_code, headers=headers)


def held_digests(request: Request) -> frozenset[str]:
    """What a request's If-None-Match says the client holds: the values of the entity tags it
    names, unquoted (weak ones too: If-None-Match compares weakly), and "*" for any. Lading's
    ETags are the quoted digest, so these are digests; empty without the header."""
    header = request.headers.get("if-none-match")
    if not header:
        return frozenset()
    held = set()
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            held.add("*")
            continue
        tag = candidate.removeprefix("W/")
        if len(tag) > 2 and tag[0] == tag[-1] == '"' and tag != '"*"':
            held.add(tag[1:-1])
    return frozenset(held)


def if_match_fails(request: Request, digest: str) -> bool:
    """True when the request's If-Match names neither `digest`'s ETag nor "*" (answered 412, RFC
    9110 section 13.1.1; strong comparison: a weak tag never matches). False without the header."""
    header = request.headers.get("if-match")
    if header is None:
        return False
    etag = f'"{digest}"'
    return not any(tag.strip() in ("*", etag) for tag in header.split(","))


def if_range_holds(request: Request, digest: str) -> bool:
    """Whether the request's Range applies (RFC 9110 section 13.1.5): no If-Range, or one naming
    `digest`'s ETag (strongly). A date never holds: the gateway sends no Last-Modified to compare
    with, so the Range is ignored and the whole blob sent, as Distribution does."""
    header = request.headers.get("if-range")
    return header is None or header.strip() == f'"{digest}"'
