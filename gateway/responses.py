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


def etag_matches(request: Request, etag: str) -> bool:
    """True when the request's If-None-Match names `etag` (or `*`); weak tags compare equal."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False
