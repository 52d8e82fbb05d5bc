"""`/v2/_catalog?n=&last=`: repository names in lexical order, `Link` when more follow."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.context import Gateway
from gateway.pagination import next_link, parse_page, wants_link
from gateway.responses import json_response


async def list_repositories(request: Request, gateway: Gateway) -> Response:
    settings = gateway.settings
    page = parse_page(
        request.query_params, default_size=settings.default_page_size, max_size=settings.max_page_size
    )
    result = await gateway.metadata.list_repositories(page.to_proto())
    repositories = list(result.repositories)
    headers = {}
    if wants_link(page, result.page.has_more, len(repositories)):
        headers["link"] = next_link("/v2/_catalog", page, repositories[-1])
    return json_response({"repositories": repositories}, headers=headers)
