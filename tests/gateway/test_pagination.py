"""`n`/`last` parsing and the `Link` header."""

from __future__ import annotations

import pytest

from gateway.pagination import Page, next_link, parse_page, wants_link
from services.common.errors import ErrorKind, RegistryError


def test_defaults_when_n_is_absent_or_empty() -> None:
    assert parse_page({}, default_size=100, max_size=1000) == Page(limit=100, last="")
    assert parse_page({"n": ""}, default_size=100, max_size=1000) == Page(limit=100, last="")


def test_n_and_last() -> None:
    page = parse_page({"n": "5", "last": "v1.2"}, default_size=100, max_size=1000)
    assert page == Page(limit=5, last="v1.2")
    proto = page.to_proto()
    assert (proto.limit, proto.has_limit, proto.last) == (5, True, "v1.2")


def test_n_is_capped() -> None:
    assert parse_page({"n": "999999"}, default_size=100, max_size=1000).limit == 1000


def test_n_zero_is_an_empty_page_with_a_limit() -> None:
    proto = parse_page({"n": "0"}, default_size=100, max_size=1000).to_proto()
    assert proto.limit == 0 and proto.has_limit


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", " 1", "+1", "1e3", "0x10"])
def test_invalid_n(n: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_page({"n": n}, default_size=100, max_size=1000)
    assert caught.value.kind is ErrorKind.PAGINATION_NUMBER_INVALID
    assert caught.value.kind.http_status == 400


def test_next_link() -> None:
    link = next_link("/v2/library/ubuntu/tags/list", Page(limit=2, last=""), "b")
    assert link == '</v2/library/ubuntu/tags/list?n=2&last=b>; rel="next"'


def test_next_link_escapes_and_keeps_extra_filters() -> None:
    link = next_link(
        "/v2/a/referrers/sha256:" + "0" * 64,
        Page(limit=1, last=""),
        "sha256:" + "1" * 64,
        {"artifactType": "application/vnd.example+json", "empty": ""},
    )
    assert link == (
        "</v2/a/referrers/sha256:"
        + "0" * 64
        + "?n=1&last=sha256:"
        + "1" * 64
        + '&artifactType=application/vnd.example%2Bjson>; rel="next"'
    )


def test_catalog_link_keeps_slashes_in_names() -> None:
    assert (
        next_link("/v2/_catalog", Page(limit=3, last=""), "a/b c")
        == '</v2/_catalog?n=3&last=a/b+c>; rel="next"'
    )


@pytest.mark.parametrize(
    ("limit", "has_more", "returned", "expected"),
    [(2, True, 2, True), (2, False, 2, False), (0, True, 0, False), (2, True, 0, False)],
)
def test_wants_link(limit: int, has_more: bool, returned: int, expected: bool) -> None:
    assert wants_link(Page(limit=limit, last=""), has_more, returned) is expected
