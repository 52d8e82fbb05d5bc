"""`/readyz`: the gateway's readiness probe (`/healthz`, in base.py, only says the process is alive).

200 `{"metadata": "SERVING", "blob": "SERVING"}` when both planes answer grpc.health SERVING and
the gateway is not shutting down; otherwise 503 with the OCI error envelope (code UNAVAILABLE)
whose `detail` names each plane's status and whether the gateway is draining.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import Gateway
from services.common.errors import ErrorKind, RegistryError


async def readyz(request: Request, gateway: Gateway) -> Response:
    if gateway.readiness is None:
        raise RegistryError(ErrorKind.UNAVAILABLE, "this gateway was built without a readiness check")
    report = await gateway.readiness.check()
    if report.ready:
        return Response(orjson.dumps(report.planes), media_type="application/json")
    if report.draining:
        reason = "the gateway is shutting down"
    else:
        reason = "not ready: " + ", ".join(f"{name} plane {report.planes[name]}" for name in report.not_ready())
    raise RegistryError(ErrorKind.UNAVAILABLE, reason, {"planes": report.planes, "draining": report.draining})
