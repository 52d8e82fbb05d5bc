"""`ChangeStream`: follows the metadata plane's change feed (ChangeService.WatchChanges) for one
consumer, resubscribing from the last position it applied whenever the stream fails, ends or goes
quiet (resumable: nothing is missed).

The stream is *live* once an answer said `caught_up` and as long as some answer arrived within
`stale_after_seconds` (the metadata plane sends one at least every `heartbeat_seconds`). The
consumer gets every answer (`on_answer`, changes in position order, `reset` when it must forget
what it built) and hears when the stream stops being live (`on_down`, with the reason), so it can
fall back to whatever it does without the feed.

Used by the manifest cache (gateway/cache_feed.py) and the watch endpoint's server-sent events
(gateway/resources/watch.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import grpc
from lading.metadata.v1 import changes_pb2, changes_pb2_grpc

from services.common.tasks import cancel_and_wait

log = logging.getLogger("lading.gateway.changes")

_FIRST_BACKOFF_SECONDS = 0.1
# How long close() waits for the following task to unwind (cancelling the gRPC call).
_CLOSE_SECONDS = 2.0


class ChangeStream:
    def __init__(self, channel: grpc.aio.Channel, *, kinds: Sequence[int] = (), subject: str = "",
                 heartbeat_seconds: float, stale_after_seconds: float, reconnect_max_seconds: float,
                 on_answer: Callable[[changes_pb2.WatchChangesResponse], None],
                 on_down: Callable[[str], None] = lambda reason: None,
                 on_reconnect: Callable[[], None] = lambda: None, after: int = 0) -> None:
        self._stub = changes_pb2_grpc.ChangeServiceStub(channel)
        self._kinds = list(kinds)
        self._subject = subject
        self._heartbeat_ms = int(heartbeat_seconds * 1000)
        self._stale_after = stale_after_seconds
        self._reconnect_max = reconnect_max_seconds
        self._on_answer = on_answer
        self._on_down = on_down
        self._on_reconnect = on_reconnect
        self._position = after
        self._synced = False
        self._last_message = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return self._synced and time.monotonic() - self._last_message < self._stale_after

    @property
    def position(self) -> int:
        return self._position

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="change-stream")

    async def close(self) -> None:
        # Bounded: a gateway that stops must not wait for ever on a stream to a metadata plane that
        # may be gone (services/common/tasks.py).
        await cancel_and_wait(self._task, _CLOSE_SECONDS)
        self._task = None
        self._synced = False

    async def run(self) -> None:
        """Follows the feed until cancelled."""
        backoff = _FIRST_BACKOFF_SECONDS
        first = True
        while True:
            if not first:
                self._on_reconnect()
            first = False
            try:
                await self._follow()
                reason = "the stream ended"
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                reason = f"no answer for {self._stale_after:g} s"
            except grpc.RpcError as error:
                reason = f"{error.code().name}: {error.details()}"
            except Exception as exc:  # noqa: BLE001 - keep following whatever went wrong
                reason = repr(exc)
            if self._synced:
                backoff = _FIRST_BACKOFF_SECONDS
            self._synced = False
            self._on_down(reason)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max)

    async def _follow(self) -> None:
        call = self._stub.WatchChanges(changes_pb2.WatchChangesRequest(
            after=self._position, heartbeat_ms=self._heartbeat_ms, kinds=self._kinds, subject=self._subject,
        ))
        try:
            iterator = call.__aiter__()
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                    # that lands as an answer arrives, and close() then waited for ever.
                    async with asyncio.timeout(self._stale_after):
                        answer = await anext(iterator)
                except StopAsyncIteration:
                    return
                self._on_answer(answer)
                self._position = answer.position
                self._last_message = time.monotonic()
                if answer.caught_up:
                    self._synced = True
        finally:
            call.cancel()
