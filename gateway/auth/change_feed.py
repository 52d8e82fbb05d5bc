"""`RevocationFeed`: keeps the gateway's revocation set current from ChangeService.WatchChanges.

One long-lived server stream per gateway process, on the metadata channel (any metadata replica
serves it). The metadata plane sends changes as they commit and a heartbeat every
`revocation_feed.heartbeat_seconds`. The feed is *live* once an answer said `caught_up` and as long
as some answer arrived within `stale_after_seconds`; a stream that fails, ends or goes quiet is
cancelled and subscribed again from the last position seen (resumable: nothing is missed), after a
short backoff growing to `reconnect_max_seconds`.

While the feed is not live (at start-up, or the metadata plane unreachable) the gate does not trust
the set alone: it asks the metadata plane for the state of each account it sees, at most once per
`degraded_check_seconds` per account (gateway/auth/gate.py). The metric
`lading_auth_revocation_feed_up` says which mode a gateway is in. The stream itself (subscribe,
resume, heartbeats, backoff) is gateway/change_stream.py's, asking for account changes only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from lading.metadata.v1 import changes_pb2, repository_changes_pb2

from gateway.auth.revocations import RevocationSet
from gateway.change_stream import ChangeStream
from services.common.metrics import Metrics
from services.common.settings import RevocationFeedSettings

log = logging.getLogger("lading.gateway.auth.feed")

# Entries are kept this long after their change: longer than any token we issue lives (24 h
# at most, settings.py) plus the leeway.
_KEEP_ENTRIES_MS = (24 * 3600 + 600) * 1000


class RevocationFeed:
    def __init__(self, channel: grpc.aio.Channel, settings: RevocationFeedSettings, revocations: RevocationSet,
                 *, metrics: Metrics | None = None) -> None:
        self._revocations = revocations
        self._change_listeners: list[Callable[[changes_pb2.AccountChange], None]] = []
        self._reset_listeners: list[Callable[[], None]] = []
        self._synced = False
        self._reconnects = (
            metrics.counter("lading_auth_revocation_feed_reconnects_total",
                            "subscriptions to the metadata plane's change feed made again after a failure")
            if metrics is not None else None
        )
        self._stream = ChangeStream(
            channel, kinds=[repository_changes_pb2.CHANGE_KIND_ACCOUNT],
            heartbeat_seconds=settings.heartbeat_seconds, stale_after_seconds=settings.stale_after_seconds,
            reconnect_max_seconds=settings.reconnect_max_seconds,
            on_answer=self._apply, on_down=self._down, on_reconnect=self._reconnected,
        )
        if metrics is not None:
            metrics.register_gauge_callback(
                "lading_auth_revocation_feed_up",
                "1 while the account revocation feed is live; 0: token and cached Basic checks ask the "
                "metadata plane instead (fail safe)", lambda: 1 if self.live else 0)
            metrics.register_gauge_callback(
                "lading_auth_revocation_entries", "accounts in the gateway's revocation set",
                lambda: len(self._revocations))

    def listen(self, *, on_change: Callable[[changes_pb2.AccountChange], None],
               on_reset: Callable[[], None]) -> None:
        """`on_change(account change)` after each change is applied to the set; `on_reset()` when
        the feed starts over (what it told before may be incomplete)."""
        self._change_listeners.append(on_change)
        self._reset_listeners.append(on_reset)

    @property
    def live(self) -> bool:
        """True while the revocation set is known to be current (see the module docstring)."""
        return self._stream.live

    @property
    def position(self) -> int:
        return self._stream.position

    def start(self) -> None:
        self._stream.start()

    async def close(self) -> None:
        await self._stream.close()
        self._synced = False

    def _reconnected(self) -> None:
        if self._reconnects is not None:
            self._reconnects.inc()

    def _down(self, reason: str) -> None:
        if self._synced:
            log.warning("account revocation feed down (%s); checking accounts with the metadata plane "
                        "until it is back", reason)
        self._synced = False

    def _apply(self, answer: changes_pb2.WatchChangesResponse) -> None:
        if answer.reset:
            self._revocations.reset()
            for on_reset in self._reset_listeners:
                on_reset()
        for change in answer.changes:
            if change.WhichOneof("change") == "account":
                self._revocations.apply(change.account, change.changed_at_ms)
                for on_change in self._change_listeners:
                    on_change(change.account)
        if answer.caught_up and not self._synced:
            self._synced = True
            self._revocations.forget_before(int(time.time() * 1000) - _KEEP_ENTRIES_MS)
            log.info("account revocation feed live at position %d (%d accounts changed lately)",
                     answer.position, len(self._revocations))
