"""The one route table of the gateway, and the endpoint adapter that calls resource handlers.

Repository names contain slashes, so every route is matched from the END of the path:
`{name:path}` is greedy and the fixed suffix (`/blobs/<digest>`, `/manifests/<ref>`, ...) must
close the path, exactly as CNCF Distribution's router does. Order matters only where suffixes
overlap: upload routes precede the blob route so that `.../blobs/uploads` is never read as a digest.

Anything not in the table is a 404 with an OCI body; a known path with a method it does not
support is a 405 UNSUPPORTED carrying `Allow`.

Every route matches the WHOLE path (`FullPathRoute`): Starlette ends its patterns with `$`, which
also matches before a final newline, so `/v2/x/tags/list%0A` would be served as `/v2/x/tags/list`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import request_context
from gateway.auth import rules, token_endpoint
from gateway.auth.rules import CATALOG, DELETE, PULL, PUSH, UPLOAD, UPLOAD_CANCEL, UPLOAD_STATUS, Rule
from gateway.console.routes import console_routes
from gateway.context import Gateway
from gateway.errors import HttpRegistryError, render_error
from gateway.resources import (
    base,
    blobs,
    catalog,
    health,
    history,
    manifests,
    referrers,
    tags,
    uploads,
    watch,
)
from services.common.errors import ErrorKind, RegistryError

Handler = Callable[[Request, Gateway], Awaitable[Response]]

# Key under which the lifespan state holds the Gateway (see gateway.app).
STATE_KEY = "gateway"


class Endpoint:
    """An ASGI app that dispatches one path's methods to handlers and renders any failure.

    This is where every handler exception meets the gateway's one error renderer, and where
    access control runs (when auth is on): `access` maps a method to the Rule it needs
    (gateway.auth.rules); methods not listed need LOGIN under /v2 and nothing elsewhere.
    """

    def __init__(self, access: Mapping[str, Rule] | None = None, **handlers: Handler) -> None:
        self.handlers = {method.upper(): handler for method, handler in handlers.items()}
        self.allow = ", ".join(sorted(self.handlers))
        self.access = dict(access or {})

    def rule(self, scope: Scope) -> Rule:
        found = self.access.get(scope["method"])
        if found is not None:
            return found
        return rules.LOGIN if scope["path"].startswith("/v2") else rules.OPEN

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        handler = self.handlers.get(scope["method"])
        try:
            if handler is None:
                raise HttpRegistryError(
                    ErrorKind.UNSUPPORTED,
                    f"{scope['method']} is not supported here; allowed: {self.allow}",
                    {"method": scope["method"], "allowed": sorted(self.handlers)},
                    headers={"allow": self.allow},
                )
            gateway = scope["state"][STATE_KEY]
            if gateway.auth is not None:
                await gateway.auth.enforce(request, self.rule(scope))
            request_context.bind(scope)
            response = await handler(request, gateway)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OCI error response here
            response = render_error(exc)
        await response(scope, receive, send)


async def _not_found(request: Request, gateway: Gateway) -> Response:
    raise RegistryError(
        ErrorKind.NAME_UNKNOWN,
        f"no registry endpoint at {request.url.path}; the API lives under /v2/ (OCI distribution spec)",
        {"path": request.url.path},
    )


class FullPathRoute(Route):
    """A Route whose pattern must match the whole path, control characters included: what follows
    a newline is never dropped, and a name or reference holding one reaches its handler, whose
    validation refuses it with the spec's error."""

    def __init__(self, path: str, endpoint: Endpoint) -> None:
        super().__init__(path, endpoint)
        pattern = self.path_regex.pattern.removesuffix("$") + r"\Z"
        self.path_regex = re.compile(pattern, self.path_regex.flags | re.DOTALL)


class QueryNameEndpoint(Endpoint):
    """An Endpoint for a path that names its repository in the query (`?repository=`): the name
    is put where access control and handlers look for it (the `name` path parameter)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = Request(scope).query_params.get("repository", "")
        scope["path_params"] = {**scope.get("path_params", {}), "name": name}
        await super().__call__(scope, receive, send)


def _everything(handler: Handler) -> Endpoint:
    return Endpoint(**{m: handler for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")})


def build_routes() -> list[BaseRoute]:
    """The route table. `methods=None` on every Route: the Endpoint owns method dispatch."""
    version_check = Endpoint(GET=base.version_check, HEAD=base.version_check)
    upload_collection = Endpoint(POST=uploads.start, access={"POST": PUSH})
    return [
        FullPathRoute("/v2/", version_check),
        FullPathRoute("/v2", version_check),
        FullPathRoute("/healthz", Endpoint(GET=base.healthz, HEAD=base.healthz)),
        FullPathRoute("/readyz", Endpoint(GET=health.readyz, HEAD=health.readyz)),
        FullPathRoute("/token", Endpoint(GET=token_endpoint.get_token, POST=token_endpoint.post_token)),
        FullPathRoute("/v2/_catalog", Endpoint(GET=catalog.list_repositories, access={"GET": CATALOG})),
        FullPathRoute(
            "/v2/{name:path}/manifests/{reference}",
            Endpoint(
                GET=manifests.get, HEAD=manifests.head, PUT=manifests.put, DELETE=manifests.delete,
                access={"GET": PULL, "HEAD": PULL, "PUT": PUSH, "DELETE": DELETE},
            ),
        ),
        FullPathRoute("/v2/{name:path}/blobs/uploads/", upload_collection),
        FullPathRoute("/v2/{name:path}/blobs/uploads", upload_collection),
        FullPathRoute(
            "/v2/{name:path}/blobs/uploads/{upload_id}",
            Endpoint(
                GET=uploads.status, PATCH=uploads.patch, PUT=uploads.put, DELETE=uploads.cancel,
                access={"GET": UPLOAD_STATUS, "PATCH": UPLOAD, "PUT": UPLOAD, "DELETE": UPLOAD_CANCEL},
            ),
        ),
        FullPathRoute(
            "/v2/{name:path}/blobs/{digest}",
            Endpoint(
                GET=blobs.get, HEAD=blobs.head, DELETE=blobs.delete,
                access={"GET": PULL, "HEAD": PULL, "DELETE": DELETE},
            ),
        ),
        FullPathRoute("/v2/{name:path}/tags/list", Endpoint(GET=tags.list_tags, access={"GET": PULL})),
        FullPathRoute(
            "/v2/{name:path}/referrers/{digest}", Endpoint(GET=referrers.list_referrers, access={"GET": PULL})
        ),
        # A repository's tag changes as Server-Sent Events (gateway/resources/watch.py).
        FullPathRoute("/lading/v1/watch", QueryNameEndpoint(GET=watch.watch, access={"GET": PULL})),
        # Governance (services/metadata/policies): a tag's history.
        FullPathRoute("/lading/v1/repositories/{name:path}/tags/{tag}/history",
                      Endpoint(GET=history.tag_history, access={"GET": PULL})),
        # The web console (gateway/console): HTML pages under /ui/.
        *console_routes(),
        FullPathRoute("/{path:path}", _everything(_not_found)),
    ]
