"""`?n=&last=` pagination shared by tags/list, _catalog and referrers, and the RFC 5988 `Link` header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from lading.common.v1 import common_pb2

from services.common.errors import ErrorKind, RegistryError
from services.common.numbers import MAX_INT64, wire_int


@dataclass(frozen=True, slots=True)
class Page:
    """What a client asked for: up to `limit` items strictly after `last` ("" from the start)."""

    limit: int
    last: str

    def to_proto(self) -> common_pb2.PageRequest:
        return common_pb2.PageRequest(limit=self.limit, has_limit=True, last=self.last)


def parse_page(query: Mapping[str, str], *, default_size: int, max_size: int) -> Page:
    """Reads `n` and `last` from a query string.

    `n` absent or empty means `default_size`; `n` must otherwise be a non-negative decimal
    integer within 64 bits (else PAGINATION_NUMBER_INVALID); values above `max_size` are capped
    to it. `n=0` is valid and asks for an empty page.
    """
    raw = query.get("n", "")
    number = wire_int(raw)
    if raw == "":
        limit = default_size
    elif number is not None and number <= MAX_INT64:
        limit = number
    else:
        raise RegistryError(
            ErrorKind.PAGINATION_NUMBER_INVALID,
            f"invalid page size n={raw!r}: use a non-negative integer of at most {max_size}",
            {"n": raw},
        )
    return Page(limit=min(limit, max_size), last=query.get("last", ""))


def next_link(path: str, page: Page, last_item: str, extra: Mapping[str, str] | None = None) -> str:
    """The `Link` header value pointing at the page after `last_item`.

    `path` is the resource path (e.g. `/v2/library/ubuntu/tags/list`); the link is relative, which
    clients resolve against the URL they requested.
    """
    params: dict[str, str | int] = {"n": page.limit, "last": last_item}
    if extra:
        params.update({k: v for k, v in extra.items() if v})
    return f'<{path}?{urlencode(params, safe="/:")}>; rel="next"'


def wants_link(page: Page, has_more: bool, items_returned: int) -> bool:
    """A `Link` is sent only when more items follow; never for `n=0` (the spec forbids it)."""
    return has_more and page.limit > 0 and items_returned > 0
