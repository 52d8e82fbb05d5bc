"""The change feed's acknowledgements (services/metadata/changes/acks.py), on SQLite (in memory of
the one metadata process) and PostgreSQL (the `change_subscribers` table), through the real store:

- a tag write answers only once every subscriber holding a lease acknowledged its change;
- a subscriber that stops applying changes (silent, or renewing without catching up) holds a write
  at most `ack_wait_seconds + lease_seconds`; it is fenced (no renewal for positions below the
  write's) and, once renewed after its lease ran out, gets a new epoch (it must drop its cache);
- a subscriber that leaves is not waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.settings import ChangeFeedSettings
from services.metadata.changes.wiring import ChangeParts, build_changes
from services.metadata.store.sql import SqlMetadataStore
from tests.contracts.metadata_store_suite import new_manifest
from tests.support.metadata_db import migrated_database

# The lease of `hasty`. A write that fenced a silent subscriber answers once its lease ran out (the
# test waits that long), and the lease must outlive a loaded machine's stall between two renewals.
HASTY_LEASE_SECONDS = 2.0
# Deadline of waits that must succeed (generous: a loaded CI machine).
DEADLINE_SECONDS = 30.0


async def _parts(request: pytest.FixtureRequest, tmp_path: Path, settings: ChangeFeedSettings
                 ) -> AsyncIterator[tuple[SqlMetadataStore, ChangeParts]]:
    async with migrated_database(request.param, request, tmp_path) as db:
        changes = build_changes(db, settings)
        await changes.start()
        try:
            yield SqlMetadataStore(db, None, changes.repositories), changes
        finally:
            await changes.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def patient(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[SqlMetadataStore, ChangeParts]]:
    async for parts in _parts(request, tmp_path, ChangeFeedSettings(poll_seconds=0.05, ack_wait_seconds=10,
                                                                    lease_seconds=20)):
        yield parts


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def hasty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[SqlMetadataStore, ChangeParts]]:
    async for parts in _parts(request, tmp_path, ChangeFeedSettings(poll_seconds=0.05, ack_wait_seconds=0.2,
                                                                    lease_seconds=HASTY_LEASE_SECONDS)):
        yield parts



async def _head_beyond(changes: ChangeParts, position: int) -> int:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        head = await changes.log.head()
        if head > position:
            return head
        await asyncio.sleep(0.01)
    raise AssertionError("the write did not commit")


async def test_a_tag_write_waits_for_every_lease_holder(patient: tuple[SqlMetadataStore, ChangeParts]) -> None:
    store, changes = patient
    start = await changes.log.head()
    for name in ("gateway-1", "gateway-2"):
        grant = await changes.acks.acknowledge(name, start)
        assert grant.lease_seconds == 20 and grant.epoch == 1
    write = asyncio.create_task(store.put_manifest("team/app", new_manifest(b'{"schemaVersion":2}'), "latest"))
    position = await _head_beyond(changes, start)
    await asyncio.sleep(0.2)
    assert not write.done()  # committed, but nobody acknowledged it
    await changes.acks.acknowledge("gateway-1", position)
    await asyncio.sleep(0.2)
    assert not write.done()  # gateway-2 still holds its lease without having applied it
    await changes.acks.acknowledge("gateway-2", position)
    await asyncio.wait_for(write, DEADLINE_SECONDS)
    assert changes.acks.waits == 1 and changes.acks.fenced == 0

    # A delete waits the same way; a gateway that leaves is not waited for.
    await changes.acks.acknowledge("gateway-2", position, leaving=True)
    delete = asyncio.create_task(store.delete_tag("team/app", "latest"))
    position = await _head_beyond(changes, position)
    await asyncio.sleep(0.2)
    assert not delete.done()
    await changes.acks.acknowledge("gateway-1", position)
    await asyncio.wait_for(delete, DEADLINE_SECONDS)


async def test_a_silent_lease_holder_holds_a_write_only_within_the_bound(
    hasty: tuple[SqlMetadataStore, ChangeParts],
) -> None:
    store, changes = hasty
    start = await changes.log.head()
    assert (await changes.acks.acknowledge("stuck", start)).lease_seconds == HASTY_LEASE_SECONDS

    # Its feed is stuck at `start`: it renews there until the write fences it (a renewal refused),
    # then falls silent. Renewing until then keeps its lease valid when the write commits, however
    # long a loaded machine takes to commit it; the write must then answer once that lease ran out.
    async def renew_until_refused() -> None:
        while (await changes.acks.acknowledge("stuck", start)).lease_seconds:  # noqa: ASYNC110 - renewals
            await asyncio.sleep(0.05)

    renewing = asyncio.create_task(renew_until_refused())
    try:
        started = time.monotonic()
        await store.put_manifest("team/app", new_manifest(b'{"schemaVersion":2}'), "latest")
        took = time.monotonic() - started
        # Answered only after its lease ran out, so its renewals had been refused (fenced) before.
        assert renewing.done(), "the write answered while the stuck subscriber still held its lease"
        await renewing
    finally:
        renewing.cancel()
    # The bound is 0.2 s + the lease; a stalled write would never answer.
    assert took < 0.2 + HASTY_LEASE_SECONDS + 5.0, took
    position = await changes.log.head()
    assert changes.acks.waits == 1 and changes.acks.fenced == 1
    # Renewed below the write it fell behind: no lease.
    assert (await changes.acks.acknowledge("stuck", start)).lease_seconds == 0
    # Caught up: a lease again, under a new epoch (writes answered without it: drop the cache).
    grant = await changes.acks.acknowledge("stuck", position)
    assert grant.lease_seconds == HASTY_LEASE_SECONDS and grant.epoch == 2
    # Holding its lease and acknowledging, it does not slow writes down beyond its acknowledgement.
    write = asyncio.create_task(store.put_manifest("team/app", new_manifest(b'{"schemaVersion":2,"n":2}'), "latest"))
    position = await _head_beyond(changes, position)
    assert (await changes.acks.acknowledge("stuck", position)).epoch == 2
    await asyncio.wait_for(write, DEADLINE_SECONDS)


@pytest.mark.postgres
async def test_a_write_waits_only_for_the_subscribers_of_its_own_region(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A replica region's gateways acknowledge into the same table (forwarded, `region` set): the
    primary region's writes never wait for them, and their rows keep their region."""
    async with migrated_database("postgresql", request, tmp_path) as db:
        changes = build_changes(db, ChangeFeedSettings(poll_seconds=0.05, ack_wait_seconds=10, lease_seconds=20),
                                region="eu")
        await changes.start()
        try:
            store = SqlMetadataStore(db, None, changes.repositories)
            start = await changes.log.head()
            assert (await changes.acks.acknowledge("us-gateway", start, region="us")).lease_seconds == 20
            assert (await changes.acks.acknowledge("eu-gateway", start)).lease_seconds == 20
            write = asyncio.create_task(store.put_manifest("team/app", new_manifest(b'{"schemaVersion":2}'), "latest"))
            position = await _head_beyond(changes, start)
            await asyncio.sleep(0.2)
            assert not write.done()  # eu's gateway has not acknowledged it
            await changes.acks.acknowledge("eu-gateway", position)
            await asyncio.wait_for(write, DEADLINE_SECONDS)  # us's gateway (still at `start`) is not waited for
            assert changes.acks.fenced == 0
            async with db.engine.connect() as conn:
                rows = dict((await conn.execute(text("SELECT subscriber, region FROM change_subscribers"))).all())
            assert rows == {"us-gateway": "us", "eu-gateway": "eu"}
            # A replica region's write that waited too long fences that region's laggards on the
            # primary (FenceSubscribers): only them, and they get no renewal until they catch up.
            assert await changes.acks.fence_region("us", position + 1) == ["us-gateway"]
            assert (await changes.acks.acknowledge("us-gateway", position, region="us")).lease_seconds == 0
            assert (await changes.acks.acknowledge("eu-gateway", position)).lease_seconds == 20
            assert (await changes.acks.acknowledge("us-gateway", position + 1, region="us")).lease_seconds == 20
        finally:
            await changes.close()
