"""Is this gateway ready for traffic? Both planes answer grpc.health.v1 SERVING, and it is not
shutting down.

`Readiness` asks each plane's health service over the gateway's own channels (so the answer
covers exactly the path requests take: the same targets, the same load balancing) with a short
deadline, both planes at once. `Drain` is the one flag shutdown flips: set from uvicorn's signal
handler before the server stops accepting (see gateway.main), it makes every later readiness
check fail at once, so a load balancer that probes `/readyz` takes the gateway out of rotation
while in-flight requests finish.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# What a plane that did not answer SERVING is reported as (besides the health service's own
# status names, e.g. NOT_SERVING).
UNREACHABLE = "UNREACHABLE"
SERVING = health_pb2.HealthCheckResponse.ServingStatus.Name(health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Drain:
    """Set once, when the process starts shutting down. A plain attribute: setting it is safe
    from a signal handler."""

    draining: bool = False

    def start(self) -> None:
        self.draining = True


@dataclass(frozen=True, slots=True)
class PlaneCheck:
    """One plane's channel and the service name its health service reports on."""

    name: str
    channel: grpc.aio.Channel
    service: str


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """`planes` maps each plane ("metadata", "blob") to SERVING or what it answered instead."""

    planes: dict[str, str]
    draining: bool

    @property
    def ready(self) -> bool:
        return not self.draining and all(status == SERVING for status in self.planes.values())

    def not_ready(self) -> list[str]:
        """Names of the planes that did not answer SERVING."""
        return [name for name, status in self.planes.items() if status != SERVING]


@dataclass
class Readiness:
    """Checks every plane in `planes` with `timeout_seconds` each, concurrently."""

    planes: list[PlaneCheck]
    timeout_seconds: float = 1.0
    drain: Drain = field(default_factory=Drain)

    async def check(self) -> ReadinessReport:
        """Never raises for a plane that is down, slow or unknown: it is reported, not thrown."""
        statuses = await asyncio.gather(*(self._check_one(plane) for plane in self.planes))
        return ReadinessReport(
            planes={plane.name: status for plane, status in zip(self.planes, statuses, strict=True)},
            draining=self.drain.draining,
        )

    async def _check_one(self, plane: PlaneCheck) -> str:
        stub = health_pb2_grpc.HealthStub(plane.channel)
        try:
            # No wait_for_ready: a plane that cannot be reached answers at once, not at the deadline.
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=plane.service), timeout=self.timeout_seconds
            )
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            return code.name if isinstance(code, grpc.StatusCode) else UNREACHABLE
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
