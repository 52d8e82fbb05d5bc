"""The optional periodic collector inside the metadata service (gc.interval_seconds > 0 and
gc.blob_target set). It runs the same steps as `lading gc` (worker.run_gc) against this process's
AdminService servicer directly and the blob plane over gRPC. Several replicas may run it at once:
every step locks and re-checks its row, so they only repeat each other's reads.

In a replica region (issue 15) the loop collects only the region's own bucket (worker.run_gc with
`replica_region`): its admin calls go to the primary region's metadata plane over the channel that
forwards writes (`PrimaryAdmin`), as this plane's own identity (the primary must grant it the
`operator` role, e.g. its `regions.tls` client certificate name, or a trusted unix socket)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from services.common.errors import RegistryError
from services.common.tasks import cancel_and_wait
from services.metadata.gc.worker import run_gc

log = logging.getLogger("lading.metadata.gc")


class LocalAdmin:
    """AdminService stub look-alike that calls the servicer in this process."""

    def __init__(self, servicer: Any) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._servicer, name)

        async def call(request: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - a stub's signature
            return await method(request, None)

        return call


class PrimaryAdmin:
    """AdminService stub look-alike that calls the primary region's metadata plane, naming this
    region (`lading-region`), as the replica region's ForwardWrites does for a caller."""

    def __init__(self, channel: Any, region: str) -> None:
        from lading.metadata.v1 import admin_pb2_grpc

        from services.metadata.blob_regions import REGION_HEADER

        self._stub = admin_pb2_grpc.AdminServiceStub(channel)
        self._metadata = ((REGION_HEADER, region),)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        async def call(request: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - a stub's signature
            return await method(request, timeout=timeout, metadata=self._metadata)

        return call


class GcLoop:
    def __init__(self, servicer: Any, blob_stub: Any, interval_seconds: float) -> None:
        self._admin: Any = LocalAdmin(servicer)
        self._blob = blob_stub
        self._interval = interval_seconds
        self._replica_region = False
        # Runs before each collection (main.py: retention, services/metadata/policies/retention.py).
        self.before_run: Any = None
        self._task: asyncio.Task[None] | None = None

    def in_replica_region(self, primary_channel: Any, region: str) -> None:
        """From now on: only this region's bucket, claims and forgetting on the primary region."""
        self._admin = PrimaryAdmin(primary_channel, region)
        self._replica_region = True
        self.before_run = None  # retention writes: the primary region's collector runs it

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lading-gc-loop")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                if self.before_run is not None:
                    _, done = await self.before_run()
                    if done.tags_deleted or done.manifests_deleted:
                        log.info("retention: %d tag(s), %d manifest(s) deleted", done.tags_deleted,
                                 done.manifests_deleted)
                report = await run_gc(self._admin, self._blob, replica_region=self._replica_region)
                if report.blobs_deleted or report.links_removed or report.manifests_deleted or report.errors:
                    log.info("gc run: %d manifest(s), %d link(s), %d blob(s), %d bytes freed, %d error(s)",
                             report.manifests_deleted, report.links_removed, report.blobs_deleted,
                             report.bytes_freed, report.errors)
            except RegistryError as error:  # maintenance mode, database down: try again next time
                log.warning("gc run skipped: %s", error.message)
            except grpc.RpcError as error:  # a replica region cut off from the primary: next time
                log.warning("gc run skipped: %s", error.details() if hasattr(error, "details") else error)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad run
                log.exception("gc run failed")
