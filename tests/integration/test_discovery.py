"""end-8a/8b (tags/list) and /v2/_catalog, with pagination."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.oci import absolute, assert_error, error_codes, image, push, push_manifest_only

TAGS = ["v1.0", "latest", "1.0", "10", "2", "a_b", "b-1", "zeta", "alpha", "0"]


def next_link(response: httpx.Response) -> str | None:
    """The target of a `Link: <...>; rel="next"` header, or None."""
    header = response.headers.get("Link")
    if not header:
        return None
    match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', header)
    assert match, f"malformed Link header {header!r}"
    return match.group(1)


@pytest.fixture
def tagged_repo(client: httpx.Client, repo: str) -> str:
    manifest = image(1)
    push(client, repo, manifest, tag=TAGS[0])
    for tag in TAGS[1:]:
        assert push_manifest_only(client, repo, tag, manifest).status_code == 201
    return repo


def test_tags_list_is_complete_and_lexically_ordered(client: httpx.Client, tagged_repo: str) -> None:
    response = client.get(f"/v2/{tagged_repo}/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": tagged_repo, "tags": sorted(TAGS)}
    assert next_link(response) is None


def test_tags_list_with_n_pages_through_link(client: httpx.Client, tagged_repo: str) -> None:
    collected: list[str] = []
    url: str | None = f"/v2/{tagged_repo}/tags/list?n=3"
    pages = 0
    while url:
        response = client.get(absolute(client, url))
        assert response.status_code == 200
        page = response.json()["tags"]
        assert len(page) <= 3
        collected.extend(page)
        url = next_link(response)
        if url:
            assert len(page) == 3, "a page followed by a Link must be full"
            query = parse_qs(urlsplit(url).query)
            assert query["n"] == ["3"] and query["last"] == [page[-1]]
        pages += 1
        assert pages < 10
    assert collected == sorted(TAGS)


def test_tags_list_with_last(client: httpx.Client, tagged_repo: str) -> None:
    ordered = sorted(TAGS)
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"n": 2, "last": ordered[3]})
    assert response.json()["tags"] == ordered[4:6]
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"last": ordered[3]})
    assert response.json()["tags"] == ordered[4:]
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"last": ordered[-1]})
    assert response.json()["tags"] == []
    assert next_link(response) is None


def test_tags_list_n_larger_than_the_list(client: httpx.Client, tagged_repo: str) -> None:
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"n": 100})
    assert response.json()["tags"] == sorted(TAGS)
    assert next_link(response) is None


def test_tags_list_exact_last_page(client: httpx.Client, tagged_repo: str) -> None:
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"n": len(TAGS)})
    assert response.json()["tags"] == sorted(TAGS)
    # A Link is only allowed when more tags may follow; if one is sent, it must lead to nothing.
    link = next_link(response)
    if link:
        assert client.get(absolute(client, link)).json()["tags"] == []


def test_tags_list_n_zero_is_empty_without_link(client: httpx.Client, tagged_repo: str) -> None:
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"n": 0})
    assert response.status_code == 200
    assert response.json() == {"name": tagged_repo, "tags": []}
    assert "Link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5"])
def test_tags_list_bad_n_is_400(client: httpx.Client, tagged_repo: str, n: str) -> None:
    response = client.get(f"/v2/{tagged_repo}/tags/list?n={n}")
    assert_error(response, 400)
    assert error_codes(response)


def test_tags_list_of_unknown_repository_is_name_unknown(client: httpx.Client) -> None:
    assert_error(client.get(f"/v2/{unique_repo()}/tags/list"), 404, "NAME_UNKNOWN")


def test_tags_list_of_nested_repository_name(client: httpx.Client) -> None:
    repo = f"{unique_repo()}/deeper/still"
    push(client, repo, image(1), tag="v1")
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}


def fetch_catalog(client: httpx.Client, url: str = "/v2/_catalog") -> list[str]:
    names: list[str] = []
    hops = 0
    while url:
        response = client.get(absolute(client, url))
        assert response.status_code == 200, response.text
        names.extend(response.json()["repositories"])
        url = next_link(response)
        hops += 1
        assert hops < 1000
    return names


def test_catalog_lists_repositories_in_order_with_pagination(client: httpx.Client) -> None:
    prefix = unique_repo("catalog")
    repos = [f"{prefix}/r{i}" for i in range(5)]
    manifest = image(1)
    for name in repos:
        push(client, name, manifest, tag="v1")

    everything = client.get("/v2/_catalog")
    assert everything.status_code == 200
    full = fetch_catalog(client)
    assert full == sorted(full), "the catalog must be in lexical order"
    assert len(full) == len(set(full))
    assert [name for name in full if name.startswith(prefix + "/")] == repos

    # Pages of 2 starting after the first of ours: r1 r2 | r3 r4 ...
    first = client.get("/v2/_catalog", params={"n": 2, "last": repos[0]})
    assert first.json()["repositories"] == repos[1:3]
    link = next_link(first)
    assert link is not None
    query = parse_qs(urlsplit(link).query)
    assert query["n"] == ["2"] and query["last"] == [repos[2]]
    second = client.get(absolute(client, link))
    assert second.json()["repositories"][:2] == repos[3:5]

    # Following the Link headers from the start gives exactly the unpaginated list.
    assert fetch_catalog(client, "/v2/_catalog?n=3") == full


def test_catalog_n_zero_is_empty_without_link(client: httpx.Client) -> None:
    push(client, unique_repo(), image(1), tag="v1")
    response = client.get("/v2/_catalog", params={"n": 0})
    assert response.status_code == 200
    assert response.json() == {"repositories": []}
    assert "Link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "abc"])
def test_catalog_bad_n_is_400(client: httpx.Client, n: str) -> None:
    response = client.get(f"/v2/_catalog?n={n}")
    assert_error(response, 400)
    assert error_codes(response)


def test_repository_with_only_deleted_tags_lists_no_tags(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    push(client, repo, manifest, tag="only")
    assert client.delete(f"/v2/{repo}/manifests/only").status_code == 202
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.json()["tags"] in ([], None)


def test_tags_list_shows_each_write_through_the_gateway_at_once(client: httpx.Client, repo: str) -> None:
    """The gateway keeps tag-list pages for a moment; its own tag writes and deletes drop them."""
    manifest = image(1)
    push(client, repo, manifest, tag="one")

    def listed(**params: str) -> list[str]:
        response = client.get(f"/v2/{repo}/tags/list", params=params)
        assert response.status_code == 200, response.text
        return response.json()["tags"] or []

    assert listed() == ["one"] and listed(n="1") == ["one"]
    assert push_manifest_only(client, repo, "two", manifest).status_code == 201
    assert listed() == ["one", "two"] and listed(n="1") == ["one"]
    assert listed(n="1", last="one") == ["two"]
    assert client.delete(f"/v2/{repo}/manifests/two").status_code == 202
    assert listed() == ["one"] and listed(n="1", last="one") == []
    digest = client.head(f"/v2/{repo}/manifests/one").headers["Docker-Content-Digest"]
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert listed() == []


def test_last_with_a_nul_pages_as_if_cut_there(client: httpx.Client, tagged_repo: str) -> None:
    # PostgreSQL refuses a NUL in a parameter: this once answered 500. No tag or name holds one,
    # so "x\0y" has the successors of "x".
    ordered = sorted(TAGS)
    response = client.get(f"/v2/{tagged_repo}/tags/list", params={"last": ordered[3] + "\0junk"})
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ordered[4:]
    response = client.get("/v2/_catalog", params={"n": 1000, "last": tagged_repo + "\0junk"})
    assert response.status_code == 200, response.text
    assert tagged_repo not in response.json()["repositories"]
