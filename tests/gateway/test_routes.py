"""The route table: names with slashes are matched from the end of the path."""

from __future__ import annotations

import pytest
from starlette.routing import Match, Route

from gateway.resources import blobs, catalog, manifests, referrers, tags, uploads
from gateway.routes import build_routes

DIGEST = "sha256:" + "a" * 64


def resolve(method: str, path: str) -> tuple[object, dict[str, str]]:
    """The handler the table picks for `method path`, and the path parameters."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in build_routes():
        assert isinstance(route, Route)
        match, child = route.matches(scope)
        if match is Match.FULL:
            endpoint = route.endpoint
            return endpoint.handlers.get(method), child["path_params"]  # type: ignore[attr-defined]
    raise AssertionError(f"nothing matched {path}")


@pytest.mark.parametrize(
    ("method", "path", "handler", "path_params"),
    [
        ("GET", "/v2/_catalog", catalog.list_repositories, {}),
        (
            "GET",
            "/v2/library/ubuntu/manifests/latest",
            manifests.get,
            {"name": "library/ubuntu", "reference": "latest"},
        ),
        ("HEAD", f"/v2/a/b/c/manifests/{DIGEST}", manifests.head, {"name": "a/b/c", "reference": DIGEST}),
        ("PUT", "/v2/x/manifests/v1", manifests.put, {"name": "x", "reference": "v1"}),
        ("GET", f"/v2/x/blobs/{DIGEST}", blobs.get, {"name": "x", "digest": DIGEST}),
        ("DELETE", f"/v2/x/blobs/{DIGEST}", blobs.delete, {"name": "x", "digest": DIGEST}),
        ("POST", "/v2/org/app/blobs/uploads/", uploads.start, {"name": "org/app"}),
        ("POST", "/v2/org/app/blobs/uploads", uploads.start, {"name": "org/app"}),
        (
            "PATCH",
            "/v2/org/app/blobs/uploads/0f3c-id",
            uploads.patch,
            {"name": "org/app", "upload_id": "0f3c-id"},
        ),
        ("PUT", "/v2/org/app/blobs/uploads/abc", uploads.put, {"name": "org/app", "upload_id": "abc"}),
        ("GET", "/v2/org/app/blobs/uploads/abc", uploads.status, {"name": "org/app", "upload_id": "abc"}),
        ("DELETE", "/v2/org/app/blobs/uploads/abc", uploads.cancel, {"name": "org/app", "upload_id": "abc"}),
        ("GET", "/v2/a/b/tags/list", tags.list_tags, {"name": "a/b"}),
        ("GET", f"/v2/a/b/referrers/{DIGEST}", referrers.list_referrers, {"name": "a/b", "digest": DIGEST}),
        # Path components that look like route keywords belong to the name: the suffix decides.
        ("GET", "/v2/tags/list/tags/list", tags.list_tags, {"name": "tags/list"}),
        ("GET", "/v2/a/manifests/b/manifests/c", manifests.get, {"name": "a/manifests/b", "reference": "c"}),
        (
            "GET",
            f"/v2/x/blobs/uploads/blobs/{DIGEST}",
            blobs.get,
            {"name": "x/blobs/uploads", "digest": DIGEST},
        ),
        ("PATCH", "/v2/x/blobs/blobs/uploads/u1", uploads.patch, {"name": "x/blobs", "upload_id": "u1"}),
        ("GET", "/v2/a/blobs/manifests/latest", manifests.get, {"name": "a/blobs", "reference": "latest"}),
    ],
)
def test_routes_match_from_the_end(
    method: str, path: str, handler: object, path_params: dict[str, str]
) -> None:
    found, params = resolve(method, path)
    assert found is handler
    assert params == path_params


@pytest.mark.parametrize(
    "path", ["/", "/v2/foo", "/v2/foo/bar", "/v1/_ping", "/v2/a/manifests/", "/v2/a/blobs/x/y"]
)
def test_unknown_paths_fall_through_to_the_catch_all(path: str) -> None:
    routes = build_routes()
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    full = [r for r in routes if r.matches(scope)[0] is Match.FULL]
    assert full[0] is routes[-1]


def test_known_path_with_an_unknown_method_has_no_handler() -> None:
    handler, _ = resolve("POST", "/v2/a/manifests/latest")
    assert handler is None
