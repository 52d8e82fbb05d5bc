"""Read-only maintenance mode, as the gateway enforces it on blob uploads.

The metadata plane refuses every mutating call while `lading maintenance on` is set, but an
upload session lives on the blob plane: without a check here a client could start a session and
stream gigabytes only to be refused at the closing PUT. So starting a session (POST, including
mounts and monolithic uploads), PATCH and the closing PUT ask `MaintenanceGate.refuse_writes()`
first and get `405 UNSUPPORTED` with the metadata plane's message. GET (status) and DELETE
(cancelling a session, which frees space) still work.

The flag is the metadata plane's (AdminService.GetMaintenance, one indexed read there); the gateway
never touches SQL. The answer is cached for `gateway.maintenance_check_seconds` (default 1 s; 0 =
ask on every upload request), and concurrent requests share one call when it is stale, so the
upload hot path pays at most one small gRPC call per second per gateway process. When the
metadata plane cannot answer, the last known state is kept (off at start): the closing PUT needs
the metadata plane anyway and is refused there if the mode is on.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from lading.metadata.v1 import admin_pb2, admin_pb2_grpc

from services.common.errors import ErrorKind, RegistryError, from_rpc_error

log = logging.getLogger("lading.gateway.maintenance")

# The metadata plane's words (services/metadata/gc/store.py: MAINTENANCE_MESSAGE), so that a
# client sees one message whichever plane refused it.
MESSAGE = "registry is in read-only maintenance mode; retry when it is over"
# Longest wait for the metadata plane's answer before the last known state is used.
ASK_TIMEOUT_SECONDS = 2.0


class MaintenanceGate:
    def __init__(self, channel: grpc.aio.Channel, *, ttl_seconds: float,
                 timeout_seconds: float = ASK_TIMEOUT_SECONDS) -> None:
        self._stub = admin_pb2_grpc.AdminServiceStub(channel)
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._on = False
        self._checked_at: float | None = None
        self._pending: asyncio.Future[bool] | None = None

    async def refuse_writes(self) -> None:
        """Raises UNSUPPORTED (HTTP 405) while maintenance mode is on."""
        if await self.on():
            raise RegistryError(ErrorKind.UNSUPPORTED, MESSAGE, {"reason": "maintenance"})

    async def on(self) -> bool:
        """Whether maintenance mode is on (cached for the TTL; see the module docstring)."""
        checked = self._checked_at
        if checked is not None and time.monotonic() - checked < self._ttl:
            return self._on
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ask())
        # shield: a request cancelled while waiting must not cancel the others' answer.
        return await asyncio.shield(self._pending)

    async def _ask(self) -> bool:
        try:
            reply = await self._stub.GetMaintenance(admin_pb2.GetMaintenanceRequest(), timeout=self._timeout)
            self._on = bool(reply.on)
        except grpc.RpcError as error:
            log.warning("could not ask the metadata plane about maintenance mode (assuming %s): %s",
                        "on" if self._on else "off", from_rpc_error(error).message)
        finally:
            self._checked_at = time.monotonic()
            self._pending = None
        return self._on
