"""Vouched first links on SQLite and PostgreSQL: a LinkBlob whose caller's blob plane has just
written the bytes (`stored_seconds_ago`) is written without asking the blob plane, but only while
the orphan grace covers those bytes; a row being collected still refuses it."""

from __future__ import annotations

import time

import pytest

from services.common.errors import ErrorKind, RegistryError
from services.metadata.gc import sweep
from services.metadata.gc.guard import VouchLapsed
from services.metadata.gc.sweep import ListedBlob
from tests.gc.test_gc_store import state_of
from tests.metadata import docs

HOUR = 3600.0


async def test_a_link_vouched_for_bytes_just_written_asks_the_blob_plane_nothing(make, storage, database) -> None:
    store, _, _ = make(orphan_grace=HOUR)
    digest = docs.random_digest()  # not in `storage`: asking would answer "no such bytes"
    await store.link_blob("team/app", digest, 100, stored_seconds_ago=0.05)
    assert storage.asked == []
    assert await state_of(database, digest) == "active"
    assert await store.stat_blob("team/app", digest) == 100


async def test_a_vouch_older_than_half_the_grace_is_checked_with_the_blob_plane(make, storage, database) -> None:
    store, _, _ = make(orphan_grace=HOUR)
    digest = docs.random_digest()
    with pytest.raises(RegistryError) as refused:
        await store.link_blob("team/app", digest, 100, stored_seconds_ago=HOUR / 2 + 1)
    assert refused.value.kind is ErrorKind.BLOB_UNKNOWN
    assert storage.asked == [digest]
    storage.digests.add(digest)
    await store.link_blob("team/app", digest, 100, stored_seconds_ago=HOUR / 2 + 1)
    assert await state_of(database, digest) == "active"


async def test_with_a_grace_under_a_minute_nothing_is_vouched_for(make, storage, database) -> None:
    store, _, _ = make(orphan_grace=30.0)
    digest = docs.random_digest()
    with pytest.raises(RegistryError) as refused:
        await store.link_blob("team/app", digest, 100, stored_seconds_ago=0.01)
    assert refused.value.kind is ErrorKind.BLOB_UNKNOWN
    assert storage.asked == [digest]
    assert await store.stat_blob("team/app", digest) is None


async def test_a_vouched_link_refuses_bytes_claimed_by_the_collector(make, storage, database) -> None:
    store, gc, _ = make(orphan_grace=HOUR)
    digest = docs.random_digest()
    claimed = await sweep.orphans(gc, [ListedBlob(digest, 100, time.time() - 2 * HOUR)], grace_seconds=HOUR,
                                  claim=True)
    assert [c.digest for c in claimed] == [digest]
    with pytest.raises(RegistryError) as refused:
        await store.link_blob("team/app", digest, 100, stored_seconds_ago=0.01)
    assert refused.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await state_of(database, digest) == "deleting"
    assert await store.stat_blob("team/app", digest) is None


async def test_a_vouched_link_confirms_a_pending_claim_whose_claimer_still_links(make, storage, database) -> None:
    store, gc, inner = make(orphan_grace=HOUR)
    digest = docs.random_digest()
    epoch = await gc.prepare_link(digest, 100)  # another push of the same bytes, asking the blob plane
    assert epoch is not None and await state_of(database, digest) == "pending"
    await store.link_blob("team/one", digest, 100, stored_seconds_ago=0.01)
    assert await state_of(database, digest) == "active"
    await inner.link_blob("team/two", digest, 100, activate_epoch=epoch)  # that push's own link
    assert await store.stat_blob("team/one", digest) == 100
    assert await store.stat_blob("team/two", digest) == 100


async def test_a_vouch_past_its_deadline_writes_nothing(make, storage, database) -> None:
    _, _, inner = make(orphan_grace=HOUR)
    digest = docs.random_digest()
    with pytest.raises(VouchLapsed):
        await inner.link_blob("team/app", digest, 100, vouched_until=time.monotonic() - 1)
    assert await state_of(database, digest) is None
    assert await inner.stat_blob("team/app", digest) is None
