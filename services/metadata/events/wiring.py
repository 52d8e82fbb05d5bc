"""Builds the event-notification pieces of the metadata service from Settings (used by main.py)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

import grpc
from lading.metadata.v1 import events_pb2_grpc

from services.common.settings import EventsSettings
from services.metadata.events.delivery import DeliveryWorker
from services.metadata.events.destinations import validate
from services.metadata.events.envelope import Source
from services.metadata.events.outbox import EventOutbox
from services.metadata.events.servicer import EventsServicer
from services.metadata.events.store import OutboxStore
from services.metadata.store.engine import Database

EVENTS_SERVICE_NAME = "lading.metadata.v1.EventsService"


@dataclass
class EventParts:
    outbox: EventOutbox
    store: OutboxStore
    worker: DeliveryWorker
    servicer: EventsServicer

    def add_to_server(self, server: grpc.aio.Server) -> None:
        events_pb2_grpc.add_EventsServiceServicer_to_server(self.servicer, server)

    def start(self) -> None:
        self.worker.start()

    async def close(self) -> None:
        await self.worker.close()


def build_events(settings: EventsSettings, database: Database) -> EventParts:
    """Raises EventsConfigError (destinations.py) for endpoints that cannot work, on every replica
    (a replica with `deliver = false` too: the settings are shared)."""
    validate(settings)
    source = Source(addr=settings.source_addr or socket.gethostname(), instance_id=str(uuid.uuid4()))
    store = OutboxStore(database)
    worker = DeliveryWorker(settings, store) if settings.deliver else DeliveryWorker(
        settings.model_copy(update={"endpoints": []}), store)
    return EventParts(outbox=EventOutbox(settings, source), store=store, worker=worker,
                      servicer=EventsServicer(store))
