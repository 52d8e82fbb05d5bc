"""Fetch leases (services/metadata/fetch_leases.py) on a real database, SQLite and PostgreSQL: a
renewed lease outlives its lifetime, an unrenewed one lapses and is taken over, and a renewal
after a take-over says so (its holder stops claiming the lease; ending it releases nothing of the
new holder's). The region fetch's lease (services/metadata/region_fetch.py) renews under the key
it was taken with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from services.common.settings import RegionSettings
from services.metadata.fetch_leases import FetchLeases
from services.metadata.region_fetch import RegionFetches
from services.metadata.store.engine import Database
from tests.support.metadata_db import migrated_database

# Leases that are renewed (every third of it): a loaded machine would have to stall a renewal for
# two thirds of it to lose one. Leases meant to lapse are taken with SHORT.
LIFETIME = 2.0
SHORT = 0.3
# Deadline of waits that must succeed (generous: a loaded CI machine).
DEADLINE_SECONDS = 30.0
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request, tmp_path_factory.mktemp("leases")) as db:
        yield db


async def test_a_kept_lease_outlives_its_lifetime_and_an_unkept_one_is_taken_over(database: Database) -> None:
    leases = FetchLeases(database, LIFETIME)
    kept = await leases.take("kept")
    dropped = await FetchLeases(database, SHORT).take("dropped")
    assert kept and dropped
    async with leases.keeper("kept", kept) as keeper:
        await asyncio.sleep(LIFETIME + 0.3)
        assert await leases.running("kept")
        assert await leases.take("kept") is None
        assert not keeper.lost
    # Nobody renewed "dropped": it lapsed, and a waiter takes it over.
    assert not await leases.running("dropped")
    taker = await leases.take("dropped")
    assert taker is not None
    # The first holder's renewal finds it taken; its release leaves the new holder's lease alone.
    assert await leases.renew("dropped", dropped) is False
    await leases.release("dropped", dropped)
    assert await leases.running("dropped")
    assert await leases.renew("dropped", taker) is True
    await leases.release("dropped", taker)
    await leases.release("kept", kept)
    assert not await leases.running("dropped") and not await leases.running("kept")


async def test_a_keeper_whose_lease_was_taken_over_stops(database: Database) -> None:
    leases = FetchLeases(database, LIFETIME)
    first = await FetchLeases(database, SHORT).take("lost")
    assert first
    await asyncio.sleep(SHORT * 1.5)
    second = await leases.take("lost")  # lapsed (never renewed) and taken over
    assert second
    async with leases.keeper("lost", first) as keeper:
        # Its first renewal (a third of the lifetime in) finds the lease taken over.
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not keeper.lost:
            assert time.monotonic() < deadline, "the keeper still renews a lease taken over"
            await asyncio.sleep(0.05)
    await leases.release("lost", second)


async def test_a_region_fetch_lease_is_renewed_under_its_own_key(database: Database) -> None:
    leases = FetchLeases(database, LIFETIME)
    fetches = RegionFetches(RegionSettings(), database, leases)
    lease = await leases.take(f"region:us:{DIGEST}")
    assert lease
    assert await fetches.renew(DIGEST, "us", lease) is True
    assert await fetches.renew(DIGEST, "eu", lease) is False
    await fetches.end(DIGEST, "us", lease, fetched=False)
    assert await fetches.renew(DIGEST, "us", lease) is False
