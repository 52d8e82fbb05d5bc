"""`CacheFeed`: keeps this gateway's manifest cache coherent with every other gateway (issue 15,
item 5) by following the repository changes of the metadata plane's change feed.

Every tag pushed, moved or deleted, manifest deleted or repository deleted, through any gateway,
reaches every gateway's CacheFeed (one stream per gateway process; any metadata replica serves it,
and replicas hear of each other's commits by PostgreSQL LISTEN/NOTIFY) and drops the repository's
cache entries. While the stream is live the cache keeps entries `coherent_ttl_seconds`; when it
goes down the whole cache is dropped and new entries live `gateway.manifest_cache_ttl_seconds`
again (the bound without the feed) until it is back. `lading_gateway_cache_feed_up` says which.

Read-your-writes through every gateway (services/metadata/changes/acks.py): after applying an
answer the feed acknowledges its position (ChangeAckService.AcknowledgeChanges, at once, and at
least four times per lease while idle); a write through any gateway answers only once every
gateway holding a lease has acknowledged it. The answer renews this gateway's lease, counted from
when the acknowledgement was sent; the cache is coherent only while the stream is live AND the
lease holds (`lading_gateway_cache_coherent`). When the metadata plane counted this gateway out
(a new `epoch`: writes answered without waiting for it) or the lease ran out here, everything
cached is dropped before the lease is used again. A metadata plane without the acknowledgement
call (UNIMPLEMENTED, an older version) leaves the feed alone to keep the cache coherent, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import grpc
from lading.metadata.v1 import change_acks_pb2, change_acks_pb2_grpc, changes_pb2, repository_changes_pb2

from gateway.change_stream import ChangeStream
from gateway.manifest_cache import ManifestCache
from services.common.metrics import Metrics
from services.common.settings import CacheFeedSettings
from services.common.tasks import cancel_and_wait

log = logging.getLogger("lading.gateway.cache_feed")

# Renewals per lease while nothing changes; the share of a granted lease this gateway uses (its
# clock may run a little faster than the database's).
_RENEWALS_PER_LEASE = 4
_LEASE_SHARE = 0.9
# Before the first grant (or after an answer without a lease): how often to ask.
_IDLE_ACK_SECONDS = 0.25
_ACK_TIMEOUT_SECONDS = 2.0
# How long close() waits for the acknowledging task to unwind.
_CLOSE_SECONDS = 2.0


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
        cache.coherent = self._coherent
        self._acks = change_acks_pb2_grpc.ChangeAckServiceStub(channel)
        self.subscriber = f"{socket.gethostname()[:64]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._applied = 0
        self._acked = -1
        self._ack_wanted = asyncio.Event()
        self._ack_task: asyncio.Task[None] | None = None
        # time.monotonic() until which the lease holds (0: none); the metadata plane's epoch seen last.
        self._lease_until = 0.0
        self._lease_seconds = 0.0
        self._epoch = 0
        # True when the metadata plane has no acknowledgement call (an older version).
        self._legacy = False
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
            metrics.register_gauge_callback(
                "lading_gateway_cache_coherent",
                "1 while the manifest cache is coherent with every write (change feed live and its "
                "acknowledgement lease held: writes through other gateways wait for it); 0: short TTL",
                lambda: 1 if self._coherent() else 0)

    @property
    def live(self) -> bool:
        return self._stream.live

    @property
    def coherent(self) -> bool:
        return self._coherent()

    def _coherent(self) -> bool:
        return self._stream.live and (self._legacy or time.monotonic() < self._lease_until)

    def start(self) -> None:
        self._stream.start()
        if self._ack_task is None:
            self._ack_task = asyncio.create_task(self._ack_loop(), name="cache-feed-acks")

    async def close(self) -> None:
        if self._ack_task is not None:
            await cancel_and_wait(self._ack_task, _CLOSE_SECONDS)
            self._ack_task = None
            if self._lease_until > 0 and not self._legacy:
                # Writes need not wait for a gateway that is going away.
                with contextlib.suppress(grpc.RpcError, TimeoutError):
                    await self._acks.AcknowledgeChanges(change_acks_pb2.AcknowledgeChangesRequest(
                        subscriber=self.subscriber, position=self._applied, leaving=True), timeout=1.0)
        await self._stream.close()

    async def _ack_loop(self) -> None:
        """Acknowledges what was applied, at once and to renew the lease (see the module docstring)."""
        while True:
            wanted = self._ack_wanted
            pause = self._lease_seconds / _RENEWALS_PER_LEASE if self._lease_seconds > 0 else _IDLE_ACK_SECONDS
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # lands as the event is set, and close() then waited for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await wanted.wait()
            wanted.clear()
            if not self._stream.live:
                continue
            position = self._applied
            sent = time.monotonic()
            try:
                answer = await self._acks.AcknowledgeChanges(change_acks_pb2.AcknowledgeChangesRequest(
                    subscriber=self.subscriber, position=position), timeout=_ACK_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("the metadata plane takes no change acknowledgements (older version): "
                                "the change feed alone keeps the manifest cache coherent")
                    self._legacy = True
                    return
                log.debug("could not acknowledge the change feed: %s", error)
                await asyncio.sleep(0.05)
                continue
            except Exception as exc:  # noqa: BLE001 - keep acknowledging whatever went wrong
                log.debug("could not acknowledge the change feed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            self._granted(answer, sent, position)

    def _granted(self, answer: change_acks_pb2.AcknowledgeChangesResponse, sent: float, position: int) -> None:
        if answer.epoch != self._epoch or time.monotonic() >= self._lease_until:
            # Counted out by the metadata plane, or our own lease ran out: writes may have answered
            # without this gateway, so nothing cached before may be served in the coherent mode.
            self._cache.clear()
            if self._epoch and answer.epoch != self._epoch:
                log.warning("the metadata plane counted this gateway's cache out (it lagged); cache dropped")
            self._epoch = answer.epoch
        if answer.lease_ms > 0:
            self._lease_seconds = answer.lease_ms / 1000
            self._lease_until = max(self._lease_until, sent + self._lease_seconds * _LEASE_SHARE)
        self._acked = position

    def _apply(self, answer: changes_pb2.WatchChangesResponse) -> None:
        if answer.reset:
            self._cache.clear()
        for change in answer.changes:
            if change.WhichOneof("change") == "repository":
                self._cache.invalidate_repository(change.repository.repository)
                if self._invalidations is not None:
                    self._invalidations.inc()
        self._applied = answer.position
        # Acknowledge at once when there is something new, and when the feed first goes live: until
        # its first lease the cache is not coherent (it keeps entries for the fallback TTL only).
        first_live = answer.caught_up and not self._was_live
        if answer.changes or answer.reset or answer.position > self._acked or first_live:
            self._ack_wanted.set()
        if answer.caught_up and not self._was_live:
            self._was_live = True
            log.info("manifest cache follows the change feed from position %d", answer.position)

    def _down(self, reason: str) -> None:
        # Entries kept for the coherent lifetime cannot be trusted without the feed; neither is
        # the lease (it is renewed only with positions the stream delivered).
        self._cache.clear()
        self._lease_until = 0.0
        if self._was_live:
            log.warning("change feed down (%s): manifest cache entries now expire after %.3g s until it is back",
                        reason, self._cache.ttl_seconds)
        self._was_live = False

    def _reconnected(self) -> None:
        if self._reconnects is not None:
            self._reconnects.inc()
