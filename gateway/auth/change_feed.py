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
`lading_auth_revocation_feed_up` says which mode a gateway is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc
from lading.metadata.v1 import changes_pb2, changes_pb2_grpc, repository_changes_pb2

from gateway.auth.revocations import RevocationSet
from services.common.metrics import Metrics
from services.common.settings import RevocationFeedSettings

log = logging.getLogger("lading.gateway.auth.feed")

# Entries are kept this long after their change: longer than any token we issue lives (24 h
# at most, settings.py) plus the leeway.
_KEEP_ENTRIES_MS = (24 * 3600 + 600) * 1000
_FIRST_BACKOFF_SECONDS = 0.1


class RevocationFeed:
    def __init__(self, channel: grpc.aio.Channel, settings: RevocationFeedSettings, revocations: RevocationSet,
                 *, metrics: Metrics | None = None) -> None:
        self._stub = changes_pb2_grpc.ChangeServiceStub(channel)
        self._settings = settings
        self._revocations = revocations
        self._change_listeners: list[Callable[[changes_pb2.AccountChange], None]] = []
        self._reset_listeners: list[Callable[[], None]] = []
        self._position = 0
        self._synced = False
        self._last_message = 0.0
        self._task: asyncio.Task[None] | None = None
        self._reconnects = (
            metrics.counter("lading_auth_revocation_feed_reconnects_total",
                            "subscriptions to the metadata plane's change feed made again after a failure")
            if metrics is not None else None
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
        return self._synced and time.monotonic() - self._last_message < self._settings.stale_after_seconds

    @property
    def position(self) -> int:
        return self._position

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="revocation-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._synced = False

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF_SECONDS
        first = True
        while True:
            if not first and self._reconnects is not None:
                self._reconnects.inc()
            first = False
            try:
                await self._follow()
                reason = "the stream ended"
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                reason = f"no answer for {self._settings.stale_after_seconds:g} s"
            except grpc.RpcError as error:
                reason = f"{error.code().name}: {error.details()}"
            except Exception as exc:  # noqa: BLE001 - keep following whatever went wrong
                reason = repr(exc)
            if self._synced:
                log.warning("account revocation feed down (%s); checking accounts with the metadata plane "
                            "until it is back", reason)
                backoff = _FIRST_BACKOFF_SECONDS
            self._synced = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.reconnect_max_seconds)

    async def _follow(self) -> None:
        heartbeat_ms = int(self._settings.heartbeat_seconds * 1000)
        call = self._stub.WatchChanges(
            changes_pb2.WatchChangesRequest(after=self._position, heartbeat_ms=heartbeat_ms,
                                            kinds=[repository_changes_pb2.CHANGE_KIND_ACCOUNT])
        )
        try:
            iterator = call.__aiter__()
            while True:
                try:
                    answer = await asyncio.wait_for(anext(iterator), self._settings.stale_after_seconds)
                except StopAsyncIteration:
                    return
                self._apply(answer)
        finally:
            call.cancel()

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
        self._position = answer.position
        self._last_message = time.monotonic()
        if answer.caught_up and not self._synced:
            self._synced = True
            self._revocations.forget_before(int(time.time() * 1000) - _KEEP_ENTRIES_MS)
            log.info("account revocation feed live at position %d (%d accounts changed lately)",
                     self._position, len(self._revocations))
