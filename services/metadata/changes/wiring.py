"""Builds the change feed of the metadata service (used by services/metadata/main.py)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from lading.metadata.v1 import change_acks_pb2_grpc, changes_pb2_grpc

from services.common.settings import ChangeFeedSettings
from services.metadata.changes.acks import ChangeAcks
from services.metadata.changes.hub import ChangeHub
from services.metadata.changes.log import ChangeLog
from services.metadata.changes.repositories import RepositoryChanges
from services.metadata.changes.servicer import ChangeAckServicer, ChangeServicer
from services.metadata.store.engine import Database
from services.metadata.store.replay import ReplayGate

CHANGE_SERVICE_NAME = "lading.metadata.v1.ChangeService"
CHANGE_ACK_SERVICE_NAME = "lading.metadata.v1.ChangeAckService"


@dataclass
class ChangeParts:
    log: ChangeLog
    hub: ChangeHub
    servicer: ChangeServicer
    # What the metadata store and the collector put on the feed (tags, manifests, repositories).
    repositories: RepositoryChanges
    # The gateways' acknowledgements, which tag and manifest writes wait for (read-your-writes
    # through every cache).
    acks: ChangeAcks

    def add_to_server(self, server: grpc.aio.Server) -> None:
        changes_pb2_grpc.add_ChangeServiceServicer_to_server(self.servicer, server)
        change_acks_pb2_grpc.add_ChangeAckServiceServicer_to_server(ChangeAckServicer(self.acks), server)

    async def start(self) -> None:
        await self.hub.start()

    async def close(self) -> None:
        await self.hub.close()


def build_changes(database: Database, settings: ChangeFeedSettings, replay: ReplayGate | None = None,
                  *, read_only: bool = False, region: str = "") -> ChangeParts:
    """`read_only`: a replica region's metadata plane (its writes are forwarded to the primary
    region; its gateways' acknowledgements too, read back from the standby); `region`: `regions.local`."""
    log = ChangeLog(database)
    acks = ChangeAcks(database, settings, read_only=read_only, region=region)
    hub = ChangeHub(database, log, settings, replay, acks=acks)
    return ChangeParts(log=log, hub=hub, servicer=ChangeServicer(log, hub),
                       repositories=RepositoryChanges(log, acks), acks=acks)
