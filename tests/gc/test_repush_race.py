"""A manifest pushed again while the collector (gc.delete_untagged_manifests) deletes the stored copy.

The interleaving is forced, not hoped for: a SQLAlchemy hook pauses the push right after its
INSERT ... ON CONFLICT DO NOTHING found the stored copy, and in that pause a collector on another
connection (its own thread and event loop) deletes that copy and commits. Only PostgreSQL can
interleave there; SQLite writers take turns (BEGIN IMMEDIATE), so a collector would simply wait.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from services.common.settings import MetadataSettings
from services.metadata.gc.store import GcStore
from services.metadata.store.engine import Database, open_database
from tests.gc.test_gc_store import collect, manifest, upload


def _collect_elsewhere(url: str, results: list[bool]) -> None:
    """One manifest sweep by a collector with its own pool, in this (other) thread."""
    async def work() -> None:
        other = open_database(MetadataSettings(database_url=url, pool_size=1, max_overflow=0))
        try:
            gc = GcStore(other, delay_seconds=0)
            for candidate in await gc.manifest_candidates():
                results.append(await gc.delete_manifest_if_unreferenced(candidate))
        finally:
            await other.dispose()

    asyncio.run(work())


async def test_a_repush_racing_the_collector_stores_the_manifest_again(make, storage, database: Database,
                                                                       dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite writers take turns (BEGIN IMMEDIATE): the collector cannot run mid-push")
    store, gc, _ = make()
    layer = await upload(store, storage, "race/repush")
    image = manifest([layer])
    await store.put_manifest("race/repush", image, None)  # stored, untagged: collectable

    url = database.engine.url.render_as_string(hide_password=False)
    collected: list[bool] = []
    paused: list[str] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not paused and statement.lstrip().upper().startswith("INSERT INTO MANIFESTS"):
            paused.append(statement)
            # The push's transaction waits here (its event loop is blocked) while the collector
            # deletes the copy the INSERT just found, and commits.
            collector = threading.Thread(target=_collect_elsewhere, args=(url, collected))
            collector.start()
            collector.join()

    event.listen(database.engine.sync_engine, "after_cursor_execute", after_execute)
    try:
        await store.put_manifest("race/repush", image, "v1")  # no internal error
    finally:
        event.remove(database.engine.sync_engine, "after_cursor_execute", after_execute)

    assert paused and collected == [True], "the collector must have deleted the stored copy mid-push"
    stored = await store.get_manifest("race/repush", tag="v1")
    assert stored.digest == image.digest and stored.payload == image.payload
    # Stored anew with its references: a run now keeps the manifest (tagged) and its layer.
    manifests, _, blobs, _ = await collect(gc, storage, delete_untagged=True)
    assert (manifests, blobs) == (0, 0)
    assert await store.stat_blob("race/repush", layer) == 100


async def test_a_repush_holding_the_stored_copy_keeps_the_collector_off(make, storage, database: Database,
                                                                        dialect: str) -> None:
    """The other order: the push found and locked the stored copy first. The collector, started
    in that moment, must wait for the push to commit and then see the tag (nothing deleted);
    without the lock it would delete the copy and the push's tag would point at nothing."""
    if dialect != "postgresql":
        pytest.skip("SQLite writers take turns (BEGIN IMMEDIATE): the collector cannot run mid-push")
    store, _, _ = make()
    layer = await upload(store, storage, "race/held")
    image = manifest([layer])
    await store.put_manifest("race/held", image, None)

    url = database.engine.url.render_as_string(hide_password=False)
    plain_dsn = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    collected: list[bool] = []
    collector: list[threading.Thread] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = statement.lstrip().upper()
        if not collector and text.startswith("SELECT MANIFESTS.ID") and "FROM MANIFESTS" in text:
            thread = threading.Thread(target=_collect_elsewhere, args=(url, collected))
            collector.append(thread)
            thread.start()
            # Hold the push here until the collector either waits for a row lock or is done.
            while thread.is_alive() and not _lock_waits(plain_dsn):
                thread.join(0.02)

    event.listen(database.engine.sync_engine, "after_cursor_execute", after_execute)
    try:
        await store.put_manifest("race/held", image, "v1")
    finally:
        event.remove(database.engine.sync_engine, "after_cursor_execute", after_execute)
    assert collector, "the push must have looked up the stored copy"
    await asyncio.to_thread(collector[0].join)
    assert collected == [False]  # it waited, re-checked, and found the manifest tagged
    assert (await store.get_manifest("race/held", tag="v1")).digest == image.digest


def _lock_waits(dsn: str) -> bool:
    """Whether some session of this database waits for a lock (asked from a helper thread: the
    caller's event loop is blocked)."""
    answer: list[bool] = []

    async def ask() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")
            answer.append(waiting > 0)
        finally:
            await connection.close()

    helper = threading.Thread(target=lambda: asyncio.run(ask()))
    helper.start()
    helper.join()
    return bool(answer and answer[0])
