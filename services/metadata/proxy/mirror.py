"""Pull-based mirroring (`[[proxy.mirrors]]`): the pull-through cache filled ahead of any pull.

Each run lists the upstream repository's tags, passes every matching tag through the cache
(`ProxyCache.get_manifest`: a tag whose digest did not move costs a HEAD, a moved one is fetched),
then walks each manifest's children and blobs: a blob already linked costs nothing, a missing one
is fetched by the blob plane (FetchService.FetchBlob) under the same per-blob lease clients use,
and linked. Everything a run did is in the database, so a run cut short (a crash, a restart, the
upstream failing) is completed by the next one, which only does what is left. A lease row per
mirror lets one metadata replica at a time run it; the run renews it (and each blob's) as it goes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import grpc
from lading.blob.v1 import fetch_pb2, fetch_pb2_grpc
from lading.common.v1 import sources_pb2

from services.common.errors import RegistryError, from_rpc_error
from services.common.settings import ProxyMirrorSettings
from services.common.tasks import cancel_and_wait
from services.metadata.proxy.cache import ProxyCache
from services.metadata.store.base import StoredManifest

log = logging.getLogger("lading.proxy.mirror")
# The blob plane's fetch of one blob may take this long (and its lease is renewed as long).
_FETCH_TIMEOUT_SECONDS = 3600.0


@dataclass
class MirrorReport:
    tags: int = 0
    manifests: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    skipped: bool = False  # another replica held the mirror's lease


class MirrorLoop:
    def __init__(self, cache: ProxyCache, mirrors: list[ProxyMirrorSettings],
                 blob_channel: grpc.aio.Channel | None) -> None:
        self._cache = cache
        self._mirrors = mirrors
        self._fetch = fetch_pb2_grpc.FetchServiceStub(blob_channel) if blob_channel is not None else None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._fetch is None:
            log.warning("proxy.mirrors is set but the metadata plane has no channel to the blob plane "
                        "(gc.blob_target): mirroring is off")
            return
        for index, mirror in enumerate(self._mirrors):
            self._tasks.append(asyncio.create_task(self._run(index, mirror), name=f"lading-mirror-{index}"))

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    async def _run(self, index: int, mirror: ProxyMirrorSettings) -> None:
        while True:
            try:
                report = await self.run_once(index, mirror)
                if not report.skipped:
                    log.info("mirror of %s %s: %d tag(s), %d manifest(s), %d blob(s) fetched (%d bytes)",
                             mirror.upstream, ", ".join(mirror.repositories), report.tags, report.manifests,
                             report.blobs_fetched, report.bytes_fetched)
            except RegistryError as error:
                log.warning("mirror of %s: %s (the next run completes it)", mirror.upstream, error.message)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad run
                log.exception("mirror of %s failed", mirror.upstream)
            await asyncio.sleep(mirror.interval_seconds)

    async def run_once(self, index: int, mirror: ProxyMirrorSettings) -> MirrorReport:
        report = MirrorReport()
        key = f"mirror:{mirror.upstream}:{index}"
        lease = await self._cache.take_lease(key)
        if lease is None:
            report.skipped = True
            return report
        try:
            async with self._cache.leases.keeper(key, lease):
                await self._mirror(mirror, report)
        finally:
            await self._cache.release_lease(key, lease)
        return report

    async def _mirror(self, mirror: ProxyMirrorSettings, report: MirrorReport) -> None:
        upstream = self._cache.upstreams.named(mirror.upstream)
        wanted = re.compile(mirror.tags)
        for remote in mirror.repositories:
            local = f"{upstream.prefix}{remote}"
            for tag in await upstream.list_tags(remote):
                if not wanted.fullmatch(tag):
                    continue
                manifest, _warning, _ = await self._cache.get_manifest(local, tag, omit_payload=False)
                report.tags += 1
                await self._complete(local, manifest, report)

    async def _complete(self, repository: str, manifest: StoredManifest, report: MirrorReport) -> None:
        report.manifests += 1
        parsed = await self._cache.core.parse_stored(manifest.payload or b"", manifest.media_type)
        for child in parsed.manifest_digests:
            stored, _warning, _ = await self._cache.get_manifest(repository, child, omit_payload=False)
            await self._complete(repository, stored, report)
        for digest in parsed.blob_digests:
            if await self._cache.store.stat_blob(repository, digest) is not None:
                continue
            decision = await self._cache.begin_blob_fetch(repository, digest, wait_seconds=300)
            if decision.outcome != "fetch":
                continue
            fetched, size = False, 0
            keeper = self._cache.leases.keeper(digest, decision.lease_id, limit_seconds=_FETCH_TIMEOUT_SECONDS)
            keeper.start()
            try:
                source = sources_pb2.BlobSource(
                    upstream=sources_pb2.UpstreamSource(upstream=decision.upstream, repository=decision.remote))
                assert self._fetch is not None
                async for message in self._fetch.FetchBlob(fetch_pb2.FetchBlobRequest(digest=digest, source=source),
                                                           timeout=_FETCH_TIMEOUT_SECONDS):
                    size += len(message.data)
                fetched = True
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            finally:
                keeper.stop()
                await self._cache.end_blob_fetch(repository, digest, lease_id=decision.lease_id, fetched=fetched,
                                                 size=size)
            report.blobs_fetched += 1
            report.bytes_fetched += size
