"""`ChangeHub`: one per metadata process; knows the newest change position and wakes the streams.

The hub learns that the feed advanced in three ways, all leading to one indexed read of the newest
position (`ChangeLog.head`), whatever the number of subscribed gateways:
- this process committed a change (`ChangeLog.committed` → `committed`). When the appender names
  the position it committed, the hub takes it as the newest without reading (rows become visible
  in position order, changes/log.py: every row up to it is visible once it is); with a hot
  standby as the read replica it reads as below, since the standby must replay first;
- PostgreSQL `NOTIFY lading_changes` from any replica (a LISTEN on a connection of its own,
  re-established when it drops);
- a poll every `change_feed.poll_seconds`, the safety net when LISTEN is down or the database is
  SQLite written by another process.
Each WatchChanges stream waits on the hub (`wait_beyond`) and reads the new rows itself.
The hub also deletes expired changes every `prune_interval_seconds` (and subscribers gone long
ago), and its LISTEN connection also hears `NOTIFY lading_change_acks`, which wakes the writes
waiting for the gateways' acknowledgements (changes/acks.py).

With a hot standby as the read replica (store/replay.py) the hub tells the streams of a new change
only once the standby has replayed it (bounded by `read_your_writes.wait_seconds`): a gateway that
drops a moved tag from its cache re-reads it from the standby, which must not answer the old digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text

from services.common.settings import ChangeFeedSettings
from services.common.tasks import cancel_and_wait
from services.metadata.changes.acks import ACK_NOTIFY_CHANNEL, ChangeAcks
from services.metadata.changes.log import NOTIFY_CHANNEL, ChangeLog
from services.metadata.store.access import Kind
from services.metadata.store.engine import Database
from services.metadata.store.replay import ReplayGate

log = logging.getLogger("lading.metadata.changes")

# Seconds between liveness checks of the LISTEN connection, and the wait before a new LISTEN
# after it failed.
_LISTEN_CHECK_SECONDS = 30.0
_LISTEN_RETRY_SECONDS = 2.0


class ChangeHub:
    def __init__(self, database: Database, changes: ChangeLog, settings: ChangeFeedSettings,
                 replay: ReplayGate | None = None, *, acks: ChangeAcks | None = None) -> None:
        self._db = database
        # Woken by `NOTIFY lading_change_acks` on the same LISTEN connection (changes/acks.py).
        self._acks = acks
        self._replay = replay if replay is not None and replay.enabled else None
        self._log = changes
        self._settings = settings
        self.latest = 0
        self._kicked = asyncio.Event()
        self._advanced = asyncio.Event()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False
        changes.on_commit(self.committed)

    @property
    def closed(self) -> bool:
        return self._closed

    def kick(self) -> None:
        """Something may have changed: read the newest position soon."""
        self._kicked.set()

    def committed(self, position: int | None) -> None:
        """This process committed changes up to `position` (None: unknown, read it). Without a
        replay gate that is the newest position at once: no read (one per tag push otherwise)."""
        if position is None or self._replay is not None:
            self.kick()
            return
        if position > self.latest:
            self.latest = position
            self._wake_streams()

    async def start(self) -> None:
        """Reads the newest position, then starts the poll, LISTEN and prune tasks."""
        self.latest = await self._log.head()
        self._tasks.append(asyncio.create_task(self._follow(), name="change-hub-follow"))
        self._tasks.append(asyncio.create_task(self._prune_loop(), name="change-hub-prune"))
        if self._db.dialect == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="change-hub-listen"))

    async def wait_beyond(self, position: int, seconds: float) -> bool:
        """True as soon as a change newer than `position` is known; False after `seconds` or when
        the hub closes."""
        if self.latest > position:
            return True
        advanced = self._advanced
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await advanced.wait()
        return self.latest > position and not self._closed

    async def close(self) -> None:
        """Ends every stream's wait (they return) and stops the background tasks."""
        self._closed = True
        self._wake_streams()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)
        self._tasks.clear()

    def _wake_streams(self) -> None:
        previous, self._advanced = self._advanced, asyncio.Event()
        previous.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_seconds):
                    await self._kicked.wait()
            self._kicked.clear()
            try:
                head = await self._log.head()
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.warning("could not read the change feed's position: %s", exc)
                continue
            if head > self.latest:
                if self._replay is not None:
                    with contextlib.suppress(Exception):
                        await self._replay.wait_for(await self._replay.primary_position(),
                                                    self._replay.bound_seconds)
                self.latest = head
                self._wake_streams()

    async def _prune_loop(self) -> None:
        while True:
            try:
                deleted = await self._log.prune(self._settings.retention_seconds)
                if deleted:
                    log.info("deleted %d changes older than %.0f s", deleted, self._settings.retention_seconds)
                if self._acks is not None:
                    await self._acks.forget_gone()
            except Exception as exc:  # noqa: BLE001 - pruning is housekeeping; retried later
                log.warning("could not prune the change feed: %s", exc)
            await asyncio.sleep(self._settings.prune_interval_seconds)

    async def _listen_loop(self) -> None:
        told = False
        while True:
            try:
                if await self._in_recovery():
                    # A hot standby (a replica region's database) takes no LISTEN and gets no NOTIFY:
                    # the poll delivers; look again later, it may have been promoted.
                    if not told:
                        log.info("the database is a standby: changes arrive by polling every %g s",
                                 self._settings.poll_seconds)
                        told = True
                    await asyncio.sleep(_LISTEN_CHECK_SECONDS)
                    continue
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the poll covers the gap; LISTEN again soon
                log.warning("LISTEN %s failed (changes still arrive by polling): %s", NOTIFY_CHANNEL, exc)
            self.listening = False
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)

    async def _in_recovery(self) -> bool:
        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            return bool((await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar())

    async def _listen_once(self) -> None:
        """LISTENs on a pooled connection of its own until that connection fails."""
        lost = asyncio.Event()

        def on_notify(*_args: Any) -> None:
            self.kick()

        def on_ack(*_args: Any) -> None:
            if self._acks is not None:
                self._acks.wake()

        def on_terminated(*_args: Any) -> None:
            lost.set()

        async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(NOTIFY_CHANNEL, on_notify)
            await driver.add_listener(ACK_NOTIFY_CHANNEL, on_ack)
            driver.add_termination_listener(on_terminated)
            self.listening = True
            # A change committed between our head read and the LISTEN would otherwise wait for a poll.
            self.kick()
            try:
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_LISTEN_CHECK_SECONDS):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(10.0):
                            await driver.execute("SELECT 1")
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    driver.remove_termination_listener(on_terminated)
                    await driver.remove_listener(NOTIFY_CHANNEL, on_notify)
                    await driver.remove_listener(ACK_NOTIFY_CHANNEL, on_ack)
        raise ConnectionError("the LISTEN connection was closed")
