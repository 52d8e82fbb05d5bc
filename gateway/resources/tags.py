"""`/v2/<name>/tags/list?n=&last=` (end-8a/8b): lexical order, `Link` when more follow.

Pages are kept in the gateway's ManifestCache for its TTL (1 s by default): a manifest or tag
write through this gateway drops them at once; one through another replica shows within the TTL.
"""

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
    cache = gateway.manifests
    cached = None if cache is None else cache.get_tag_page(repository, page.limit, page.last)
    if cached is not None:
        tags, has_more = list(cached.tags), cached.has_more
    else:
        ticket = None if cache is None else cache.ticket()
        result = await gateway.metadata.list_tags(repository, page.to_proto())
        tags, has_more = list(result.tags), result.page.has_more
        if cache is not None:
            cache.put_tag_page(repository, page.limit, page.last, tags, has_more, ticket=ticket)
    headers = {}
    if wants_link(page, has_more, len(tags)):
        headers["link"] = next_link(f"/v2/{repository}/tags/list", page, tags[-1])
    return json_response({"name": repository, "tags": tags}, headers=headers)
