"""Orphan bytes (stored on the blob plane, no `blobs` row) on SQLite and PostgreSQL: which are
orphans, the grace period, and the claim that closes the race with a LinkBlob of the same digest."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.errors import ErrorKind, RegistryError
from services.metadata.gc import sweep
from services.metadata.gc.sweep import ListedBlob
from tests.gc.test_gc_store import state_of, upload
from tests.metadata import docs

HOUR = 3600.0


def listed(digest: str, *, age: float, size: int = 10) -> ListedBlob:
    return ListedBlob(digest, size, time.time() - age)


async def test_only_old_bytes_without_a_row_are_orphans(make, storage, database) -> None:
    store, gc, _ = make()
    linked = await upload(store, storage, "team/app")
    unlinked = await upload(store, storage, "team/app")
    await store.unlink_blob("team/app", unlinked)  # a row (`active`, unlinked): the normal GC's job
    pending = docs.random_digest()
    await gc.prepare_link(pending, 10)  # a LinkBlob in flight: `pending` row
    old, young = docs.random_digest(), docs.random_digest()
    page = [listed(d, age=2 * HOUR) for d in (linked, unlinked, pending, old)] + [listed(young, age=1)]

    found = await sweep.orphans(gc, page, grace_seconds=HOUR, claim=False)
    assert [c.digest for c in found] == [old]
    assert await state_of(database, old) is None  # a dry run claims nothing
    assert {c.digest for c in await sweep.orphans(gc, page, grace_seconds=0, claim=False)} == {old, young}
    assert await sweep.orphans(gc, page, grace_seconds=10 * HOUR, claim=False) == []

    claimed = await sweep.orphans(gc, page, grace_seconds=HOUR, claim=True)
    assert [(c.digest, c.size, c.state) for c in claimed] == [(old, 10, "deleting")]
    assert await state_of(database, old) == "deleting"
    assert await state_of(database, young) is None
    assert await state_of(database, linked) == "active"
    assert await state_of(database, pending) == "pending"
    assert await store.stat_blob("team/app", linked) is not None
    # Claimed again (a second run before the bytes went): already has a row, so no orphan; the
    # `deleting` row is the normal GC's to finish (GcMarkBlobs returns it).
    assert await sweep.orphans(gc, page, grace_seconds=HOUR, claim=True) == []
    assert old in {c.digest for c in await sweep.mark(gc)}
    assert await gc.forget_blob(old)


async def test_a_claimed_orphan_cannot_be_linked_until_it_is_gone(make, storage, database) -> None:
    store, gc, _ = make()
    digest = docs.random_digest()
    storage.digests.add(digest)  # committed on the blob plane; its LinkBlob never came
    assert [c.digest for c in await sweep.orphans(gc, [listed(digest, age=2 * HOUR)], grace_seconds=HOUR,
                                                  claim=True)] == [digest]
    # The late LinkBlob (or a re-upload's) meets the claim: upload it again.
    with pytest.raises(RegistryError) as caught:
        await store.link_blob("team/app", digest, 100)
    assert caught.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await store.stat_blob("team/app", digest) is None
    assert await state_of(database, digest) == "deleting"
    # The run deletes the bytes and forgets the row...
    storage.digests.discard(digest)
    assert await gc.forget_blob(digest)
    # ...and the blob can be uploaded and linked again.
    with pytest.raises(RegistryError) as caught:  # bytes not uploaded yet: the blob plane says no
        await store.link_blob("team/app", digest, 100)
    assert caught.value.kind is ErrorKind.BLOB_UNKNOWN
    storage.digests.add(digest)
    await store.link_blob("team/app", digest, 100)
    assert await state_of(database, digest) == "active"
    assert await store.stat_blob("team/app", digest) == 100


async def test_a_row_that_appears_before_the_claim_wins(make, storage, database) -> None:
    store, gc, _ = make()
    digest = docs.random_digest()
    assert await gc.unaccounted_digests([digest]) == [digest]  # the run's look...
    await upload(store, storage, "team/app", digest)  # ...then the link lands
    assert await gc.claim_orphans([(digest, 100)]) == []
    assert await state_of(database, digest) == "active"
    assert await store.stat_blob("team/app", digest) == 100


async def test_claims_racing_links_never_both_win(make, storage, database) -> None:
    store, gc, _ = make()
    for _ in range(20):
        digest = docs.random_digest()
        storage.digests.add(digest)

        async def link(digest: str) -> bool:
            try:
                await store.link_blob("race/app", digest, 100)
            except RegistryError as error:
                assert error.kind is ErrorKind.BLOB_UNKNOWN
                return False
            return True

        claimed, linked = await asyncio.gather(gc.claim_orphans([(digest, 100)]), link(digest))
        assert bool(claimed) != linked, (claimed, linked)
        assert await state_of(database, digest) == ("deleting" if claimed else "active")
        if claimed:
            assert await store.stat_blob("race/app", digest) is None
            assert await gc.forget_blob(digest)
