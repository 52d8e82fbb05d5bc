"""ReplicationService (`lading replication run`): translates between protobuf and the replicators."""

from __future__ import annotations

import grpc
from lading.metadata.v1 import replication_pb2 as pb
from lading.metadata.v1 import replication_pb2_grpc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.replication.replicator import ENDPOINT_PREFIX, Replicator

SERVICE_NAME = "lading.metadata.v1.ReplicationService"


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, replicators: dict[str, Replicator]) -> None:
        # Keyed by event endpoint name (`replicate-<rule>`), as build_replicators makes them.
        self._replicators = replicators

    async def RunReplication(self, request: pb.RunReplicationRequest, context: grpc.aio.ServicerContext
                             ) -> pb.RunReplicationResponse:
        replicator = self._replicators.get(ENDPOINT_PREFIX + request.rule)
        if replicator is None:
            known = ", ".join(sorted(r.rule.name for r in self._replicators.values())) or "none"
            raise RegistryError(
                ErrorKind.UNSUPPORTED,
                f"no replication rule named {request.rule!r} is configured on this metadata plane (rules: {known}); "
                "see `lading replication list`",
            )
        result = await replicator.run()
        return pb.RunReplicationResponse(repositories=result.repositories, tags=result.tags, copied=result.copied,
                                         unchanged=result.unchanged, failures=result.failures)


def add_to_server(replicators: dict[str, Replicator], server: grpc.aio.Server) -> None:
    replication_pb2_grpc.add_ReplicationServiceServicer_to_server(ReplicationServicer(replicators), server)
