"""`GET /lading/v1/repositories/<name>/tags/<tag>/history?n=`: every creation, move and delete of
a tag, newest first (services/metadata/policies). Needs pull on the repository, like the tag itself.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import params
from gateway.context import Gateway
from gateway.responses import json_response
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_tag


async def tag_history(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    tag = validate_tag(request.path_params["tag"])
    raw = request.query_params.get("n", "0")
    if not raw.isdigit():
        raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID, f"invalid n={raw!r}: use a non-negative integer",
                            {"n": raw})
    reply = await gateway.metadata.tag_history(repository, tag, int(raw))
    return json_response({"name": repository, "tag": tag, "history": [
        {"at": e.at, "action": e.action, "actor": e.actor, "old_digest": e.old_digest or None,
         "new_digest": e.new_digest or None} for e in reply.entries]})
