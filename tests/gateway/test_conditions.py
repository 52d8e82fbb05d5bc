"""A blob GET/HEAD's conditions and Range, read once (gateway/conditions.py)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.conditions import UNCONDITIONAL, blob_conditions
from services.common.ranges import RangeRequest

DIGEST = "sha256:" + "a" * 64
ETAG = f'"{DIGEST}"'
OTHER = '"sha256:' + "0" * 64 + '"'
DATE = "Sat, 01 Jan 2000 00:00:00 GMT"


def request(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "method": "GET", "path": f"/v2/r/blobs/{DIGEST}",
                    "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                for name, value in headers.items()]})


def test_a_request_without_conditions_is_not_parsed() -> None:
    assert blob_conditions(request({"Accept": "*/*", "User-Agent": "docker"})) is UNCONDITIONAL
    assert UNCONDITIONAL.plain and UNCONDITIONAL.range_for(DIGEST) is None
    assert not UNCONDITIONAL.bodiless(DIGEST)


@pytest.mark.parametrize(
    ("headers", "plain"),
    [({"Range": "bytes=0-9"}, True), ({"Range": "bytes=10-"}, True), ({"Range": "bytes=-10"}, True),
     ({"Range": "bytes=200-300"}, True), ({"Range": " bytes=5-5 "}, True),
     ({"Range": "bytes=9223372036854775807-"}, True),
     # If-None-Match: the gateway answers 304 itself when it names the blob; no other tag matches
     # in storage either.
     ({"If-None-Match": OTHER, "Range": "bytes=0-9"}, True),
     ({"Range": "bytes="}, False), ({"Range": "bytes=-"}, False), ({"Range": "bytes=9-1"}, False),
     ({"Range": "bytes=0-1,5-9"}, False), ({"Range": "items=0-9"}, False), ({"Range": ""}, False),
     ({"Range": "bytes=0-99999999999999999999"}, False), ({"Range": "bytes=-99999999999999999999"}, False),
     # Storage compares these with its own ETag or Last-Modified.
     ({"If-Match": ETAG}, False), ({"If-Range": ETAG, "Range": "bytes=0-9"}, False),
     ({"If-Range": DATE, "Range": "bytes=0-9"}, False),
     ({"If-Modified-Since": DATE}, False), ({"If-Unmodified-Since": DATE}, False)],
)
def test_only_gets_storage_answers_alike_may_be_redirected(headers: dict[str, str], plain: bool) -> None:
    assert blob_conditions(request(headers)).plain is plain


def test_the_range_applies_unless_an_if_range_names_something_else() -> None:
    assert blob_conditions(request({"Range": "bytes=1-2"})).range_for(DIGEST) == RangeRequest(1, 2)
    assert blob_conditions(request({"Range": "bytes=-2"})).range_for(DIGEST) == RangeRequest(None, 2)
    assert blob_conditions(request({"Range": "bytes=9-1"})).range_for(DIGEST) is None
    assert blob_conditions(request({"Range": "bytes=1-2", "If-Range": f" {ETAG} "})).range_for(DIGEST) is not None
    for if_range in (OTHER, f"W/{ETAG}", DATE):
        assert blob_conditions(request({"Range": "bytes=1-2", "If-Range": if_range})).range_for(DIGEST) is None


def test_several_ranges_apply_unless_an_if_range_names_something_else() -> None:
    several = {"Range": "bytes=1-2,5-"}
    assert blob_conditions(request(several)).ranges_for(DIGEST) == (RangeRequest(1, 2), RangeRequest(5, None))
    assert blob_conditions(request(several)).range_for(DIGEST) is None
    assert not blob_conditions(request(several)).plain  # storage does not serve several ranges
    assert blob_conditions(request({**several, "If-Range": ETAG})).ranges_for(DIGEST) != ()
    for if_range in (OTHER, f"W/{ETAG}", DATE):
        assert blob_conditions(request({**several, "If-Range": if_range})).ranges_for(DIGEST) == ()
    assert blob_conditions(request({"Range": "bytes=1-2,9-1"})).ranges_for(DIGEST) == ()


def test_if_match_and_if_none_match() -> None:
    for if_match in (ETAG, "*", f"{OTHER}, {ETAG}"):
        assert not blob_conditions(request({"If-Match": if_match})).refused(DIGEST)
    for if_match in (OTHER, f"W/{ETAG}", ""):
        assert blob_conditions(request({"If-Match": if_match})).refused(DIGEST)
    for held in (ETAG, f"W/{ETAG}", "*", f"{OTHER}, {ETAG}"):
        assert blob_conditions(request({"If-None-Match": held})).not_modified(DIGEST)
    assert not blob_conditions(request({"If-None-Match": OTHER})).not_modified(DIGEST)
    assert blob_conditions(request({"If-Match": OTHER, "If-None-Match": ETAG})).bodiless(DIGEST)


def test_the_first_of_a_repeated_header_counts() -> None:
    scope = request({}).scope
    scope["headers"] = [(b"range", b"bytes=1-2"), (b"range", b"bytes=3-4")]
    assert blob_conditions(Request(scope)).range == RangeRequest(1, 2)
