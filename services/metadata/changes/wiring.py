"""Builds the change feed of the metadata service (used by services/metadata/main.py)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from lading.metadata.v1 import changes_pb2_grpc

from services.common.settings import ChangeFeedSettings
from services.metadata.changes.hub import ChangeHub
from services.metadata.changes.log import ChangeLog
from services.metadata.changes.repositories import RepositoryChanges
from services.metadata.changes.servicer import ChangeServicer
from services.metadata.store.engine import Database
from services.metadata.store.replay import ReplayGate

CHANGE_SERVICE_NAME = "lading.metadata.v1.ChangeService"


@dataclass
class ChangeParts:
    log: ChangeLog
    hub: ChangeHub
    servicer: ChangeServicer
    # What the metadata store and the collector put on the feed (tags, manifests, repositories).
    repositories: RepositoryChanges

    def add_to_server(self, server: grpc.aio.Server) -> None:
        changes_pb2_grpc.add_ChangeServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.hub.start()

    async def close(self) -> None:
        await self.hub.close()


def build_changes(database: Database, settings: ChangeFeedSettings, replay: ReplayGate | None = None) -> ChangeParts:
    log = ChangeLog(database)
    hub = ChangeHub(database, log, settings, replay)
    return ChangeParts(log=log, hub=hub, servicer=ChangeServicer(log, hub), repositories=RepositoryChanges(log))
