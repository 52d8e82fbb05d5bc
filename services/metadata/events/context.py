"""The request behind the gRPC call being served, for events written deep inside the store.

The servicer binds the request's `RequestContext` (protobuf) with `bind(...)`; the outbox reads it
with `current()`. grpc.aio serves each call in its own task, so the binding is per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from services.metadata.events.envelope import RequestInfo

_EMPTY = RequestInfo()
_current: ContextVar[RequestInfo] = ContextVar("lading_event_request", default=_EMPTY)


def from_proto(context: Any) -> RequestInfo:
    """A RequestInfo from a `lading.common.v1.RequestContext` (None or unset: empty)."""
    if context is None:
        return _EMPTY
    return RequestInfo(
        request_id=context.request_id, addr=context.addr, host=context.host, method=context.method,
        user_agent=context.user_agent, actor=context.actor, scheme=context.scheme or "http",
        base_url=context.base_url,
    )


def bind(request: Any) -> None:
    """Binds `request.context` (a gRPC request with an optional `context` field) to this call."""
    if request.HasField("context"):
        _current.set(from_proto(request.context))


def current() -> RequestInfo:
    return _current.get()


@contextmanager
def acting_as(request: RequestInfo) -> Iterator[None]:
    """Changes made inside the block record `request` (an `internal_request`) as their request."""
    token = _current.set(request)
    try:
        yield
    finally:
        _current.reset(token)
