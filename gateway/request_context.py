"""The HTTP request behind the metadata calls being made, for event notifications.

`Endpoint` (gateway.routes) binds each request with `bind(scope)`; MetadataClient attaches
`current()` (a `lading.common.v1.RequestContext`, built lazily once per request) to the calls
that can produce events. Starlette serves each request in its own task, so the binding is per request.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import Any

from lading.common.v1 import common_pb2

from gateway.middleware import BASE_URL_SCOPE_KEY, CLIENT_ADDRESS_SCOPE_KEY

_scope: ContextVar[dict[str, Any] | None] = ContextVar("lading_request_scope", default=None)
_built: ContextVar[common_pb2.RequestContext | None] = ContextVar("lading_request_context", default=None)
_PRINCIPAL_KEY = "lading.auth.principal"


def bind(scope: dict[str, Any]) -> None:
    _scope.set(scope)
    _built.set(None)


def current() -> common_pb2.RequestContext | None:
    """The bound request as a RequestContext, None outside a request."""
    built = _built.get()
    if built is not None:
        return built
    scope = _scope.get()
    if scope is None:
        return None
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    client = scope.get("client")
    principal = scope.get(_PRINCIPAL_KEY)
    # Through a trusted proxy: the client it named (X-Forwarded-For), and the external base URL.
    forwarded_client = scope.get(CLIENT_ADDRESS_SCOPE_KEY)
    built = common_pb2.RequestContext(
        request_id=headers.get("x-request-id") or str(uuid.uuid4()),
        addr=forwarded_client or (f"{client[0]}:{client[1]}" if client else ""),
        host=headers.get("host", ""),
        method=scope.get("method", ""),
        user_agent=headers.get("user-agent", ""),
        actor=getattr(principal, "account", "") or "",
        scheme=scope.get("scheme", "http"),
        base_url=scope.get(BASE_URL_SCOPE_KEY) or "",
    )
    _built.set(built)
    return built
