"""`/v2/` (end-1: the API version check) and `/healthz` (the gateway's own liveness probe)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.context import Gateway


async def version_check(request: Request, gateway: Gateway) -> Response:
    return Response(b"{}", media_type="application/json")


async def healthz(request: Request, gateway: Gateway) -> Response:
    return Response(b"{}", media_type="application/json")
