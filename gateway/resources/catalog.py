"""`/v2/_catalog?n=&last=`: repository names in lexical order, `Link` when more follow.

With auth on, only repositories the caller may pull are listed: pages of the full listing are
scanned and filtered (AuthGate.pullable) until `n` names are found or `MAX_SCANNED_PAGES` pages
were read; the `Link` then continues from the last name scanned, so no name is skipped or repeated.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.context import Gateway
from gateway.pagination import Page, next_link, parse_page, wants_link
from gateway.responses import json_response

# Bound on the work one filtered catalog request does (pages of `n` names each).
MAX_SCANNED_PAGES = 20


async def list_repositories(request: Request, gateway: Gateway) -> Response:
    settings = gateway.settings
    page = parse_page(
        request.query_params, default_size=settings.default_page_size, max_size=settings.max_page_size
    )
    if gateway.auth is not None:
        return await _filtered(request, gateway, page)
    result = await gateway.metadata.list_repositories(page.to_proto())
    repositories = list(result.repositories)
    headers = {}
    if wants_link(page, result.page.has_more, len(repositories)):
        headers["link"] = next_link("/v2/_catalog", page, repositories[-1])
    return json_response({"repositories": repositories}, headers=headers)


async def _filtered(request: Request, gateway: Gateway, page: Page) -> Response:
    assert gateway.auth is not None
    found: list[str] = []
    last, has_more = page.last, False
    for _ in range(MAX_SCANNED_PAGES if page.limit > 0 else 0):
        result = await gateway.metadata.list_repositories(Page(limit=page.limit, last=last).to_proto())
        names = list(result.repositories)
        has_more = result.page.has_more
        for name in await gateway.auth.pullable(request, names):
            found.append(name)
            if len(found) == page.limit:
                # Continue after this name next time; more may follow it in this page or later.
                last, has_more = name, has_more or name != names[-1]
                break
        else:
            if names:
                last = names[-1]
            if has_more:
                continue
        break
    headers = {}
    if wants_link(page, has_more, 1 if last else 0):
        headers["link"] = next_link("/v2/_catalog", page, last)
    return json_response({"repositories": found}, headers=headers)
