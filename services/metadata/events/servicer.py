"""EventsService: `lading events list|replay` over gRPC. Translates protobuf <-> OutboxStore only."""

from __future__ import annotations

from datetime import datetime

import grpc
from lading.metadata.v1 import events_pb2 as pb
from lading.metadata.v1 import events_pb2_grpc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.events.store import OutboxStore
from services.metadata.events.tables import STATES

_DEFAULT_LIMIT = 100
_MAX_LIMIT = 10000


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, store: OutboxStore) -> None:
        self._store = store

    async def ListEvents(self, request: pb.ListEventsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListEventsResponse:
        if request.state and request.state not in STATES:
            raise RegistryError(ErrorKind.UNSUPPORTED, f"unknown state {request.state!r}: use one of "
                                f"{', '.join(STATES)}", {"state": request.state})
        limit = min(request.limit or _DEFAULT_LIMIT, _MAX_LIMIT)
        rows = await self._store.list(state=request.state, endpoint=request.endpoint, limit=limit,
                                      before_id=request.before_id)
        return pb.ListEventsResponse(rows=[
            pb.OutboxRow(
                id=row.id, event_id=row.event_id, endpoint=row.endpoint, action=row.action,
                repository=row.repository, state=row.state, attempts=row.attempts,
                created_at=_time(row.created_at), next_attempt_at=_time(row.next_attempt_at),
                delivered_at=_time(row.delivered_at), last_error=row.last_error or "", body=row.body,
            )
            for row in rows
        ])

    async def ReplayEvents(self, request: pb.ReplayEventsRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ReplayEventsResponse:
        if not request.id and not request.dead:
            raise RegistryError(ErrorKind.UNSUPPORTED, "name an event row id, or ask for every dead row", {})
        count = await self._store.replay(row_id=request.id, dead=request.dead, endpoint=request.endpoint)
        return pb.ReplayEventsResponse(replayed=count)
