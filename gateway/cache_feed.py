"""`CacheFeed`: keeps this gateway's manifest cache coherent with every other gateway (issue 15,
item 5) by following the repository changes of the metadata plane's change feed.

Every tag pushed, moved or deleted, manifest deleted or repository deleted, through any gateway,
reaches every gateway's CacheFeed (one stream per gateway process; any metadata replica serves it,
and replicas hear of each other's commits by PostgreSQL LISTEN/NOTIFY) and drops the repository's
cache entries. While the stream is live the cache keeps entries `coherent_ttl_seconds`; when it
goes down the whole cache is dropped and new entries live `gateway.manifest_cache_ttl_seconds`
again (the bound without the feed) until it is back. `lading_gateway_cache_feed_up` says which.
"""

from __future__ import annotations

import logging

import grpc
from lading.metadata.v1 import changes_pb2, repository_changes_pb2

from gateway.change_stream import ChangeStream
from gateway.manifest_cache import ManifestCache
from services.common.metrics import Metrics
from services.common.settings import CacheFeedSettings

log = logging.getLogger("lading.gateway.cache_feed")


class CacheFeed:
    def __init__(self, channel: grpc.aio.Channel, settings: CacheFeedSettings, cache: ManifestCache,
                 *, metrics: Metrics | None = None) -> None:
        self._cache = cache
        self._was_live = False
        self._stream = ChangeStream(
            channel, kinds=[repository_changes_pb2.CHANGE_KIND_REPOSITORY],
            heartbeat_seconds=settings.heartbeat_seconds, stale_after_seconds=settings.stale_after_seconds,
            reconnect_max_seconds=settings.reconnect_max_seconds,
            on_answer=self._apply, on_down=self._down, on_reconnect=self._reconnected,
        )
        cache.coherent_ttl_seconds = settings.coherent_ttl_seconds
        cache.coherent = lambda: self._stream.live
        self._invalidations = self._reconnects = None
        if metrics is not None:
            self._invalidations = metrics.counter(
                "lading_gateway_cache_invalidations_total",
                "repository changes from the change feed that dropped manifest cache entries")
            self._reconnects = metrics.counter(
                "lading_gateway_cache_feed_reconnects_total",
                "subscriptions to the change feed made again after the stream failed or went quiet")
            metrics.register_gauge_callback(
                "lading_gateway_cache_feed_up",
                "1 while the manifest cache follows the change feed (changes through other gateways show "
                "at once); 0: entries expire after gateway.manifest_cache_ttl_seconds instead",
                lambda: 1 if self.live else 0)

    @property
    def live(self) -> bool:
        return self._stream.live

    def start(self) -> None:
        self._stream.start()

    async def close(self) -> None:
        await self._stream.close()

    def _apply(self, answer: changes_pb2.WatchChangesResponse) -> None:
        if answer.reset:
            self._cache.clear()
        for change in answer.changes:
            if change.WhichOneof("change") == "repository":
                self._cache.invalidate_repository(change.repository.repository)
                if self._invalidations is not None:
                    self._invalidations.inc()
        if answer.caught_up and not self._was_live:
            self._was_live = True
            log.info("manifest cache follows the change feed from position %d", answer.position)

    def _down(self, reason: str) -> None:
        # Entries kept for the coherent lifetime cannot be trusted without the feed.
        self._cache.clear()
        if self._was_live:
            log.warning("change feed down (%s): manifest cache entries now expire after %.3g s until it is back",
                        reason, self._cache.ttl_seconds)
        self._was_live = False

    def _reconnected(self) -> None:
        if self._reconnects is not None:
            self._reconnects.inc()
