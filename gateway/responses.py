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


def not_modified(headers: dict[str, str]) -> Response:
    """304 Not Modified: a conditional GET/HEAD of what the client holds (RFC 9110 section
    15.4.5: the headers a 200 would carry that describe the representation, no body)."""
    return empty(304, headers)


def precondition_failed(headers: dict[str, str]) -> Response:
    """412 Precondition Failed: a request whose If-Match names something else (RFC 9110 section
    13.1.1), with no body (as Distribution and S3 answer)."""
    return empty(412, headers)


def held_digests(request: Request) -> frozenset[str]:
    """What a request's If-None-Match says the client holds (see `held_in`)."""
    return held_in(request.headers.get("if-none-match"))


def held_in(header: str | None) -> frozenset[str]:
    """What an If-None-Match value says the client holds: the values of the entity tags it
    names, unquoted (weak ones too: If-None-Match compares weakly), and "*" for any. Lading's
    ETags are the quoted digest, so these are digests; empty without the header."""
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


