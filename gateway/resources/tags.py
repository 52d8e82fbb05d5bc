"""`/v2/<name>/tags/list?n=&last=` (end-8a/8b): lexical order, `Link` when more follow."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import params
from gateway.context import Gateway
from gateway.pagination import next_link, parse_page, wants_link
from gateway.responses import json_response


async def list_tags(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    settings = gateway.settings
    page = parse_page(
        request.query_params, default_size=settings.default_page_size, max_size=settings.max_page_size
    )
    result = await gateway.metadata.list_tags(repository, page.to_proto())
    tags = list(result.tags)
    headers = {}
    if wants_link(page, result.page.has_more, len(tags)):
        headers["link"] = next_link(f"/v2/{repository}/tags/list", page, tags[-1])
    return json_response({"name": repository, "tags": tags}, headers=headers)
