"""GC rules, the deleting-state protocol and the admin queries, on SQLite and PostgreSQL, driving
the store calls directly in the interleavings that matter."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import select

from services.common.errors import ErrorKind, RegistryError
from services.metadata.blob_regions import blob_regions, writing_region
from services.metadata.gc import sweep
from services.metadata.gc.store import RunTotals
from services.metadata.gc.tables import blobs
from services.metadata.store.base import NewManifest
from tests.metadata import docs

OCI = docs.OCI_MANIFEST


def manifest(blob_digests: list[str] = (), children: list[bytes] = (), subject: str | None = None,
             note: str = "") -> NewManifest:
    document = {"schemaVersion": 2, "mediaType": OCI, "blobs": list(blob_digests),
                "children": [docs.sha256(c) for c in children], "subject": subject, "n": note or os.urandom(4).hex()}
    payload = json.dumps(document).encode()
    return NewManifest(digest=docs.sha256(payload), media_type=OCI, payload=payload, subject_digest=subject,
                       artifact_type=None, config_media_type=None, annotations=None,
                       blob_digests=tuple(blob_digests), manifest_digests=tuple(docs.sha256(c) for c in children))


async def upload(store, storage, repository: str, digest: str | None = None, size: int = 100) -> str:
    """What the gateway does: bytes committed on the blob plane, then LinkBlob."""
    digest = digest or docs.random_digest()
    storage.digests.add(digest)
    await store.link_blob(repository, digest, size)
    return digest


async def state_of(database, digest: str) -> str | None:
    async with database.reads.connect() as conn:
        return (await conn.execute(select(blobs.c.state).where(blobs.c.digest == digest))).scalar()


async def collect(gc, storage, *, delete_untagged: bool = False) -> tuple[int, int, int, int]:
    """A whole run with the 'blob plane' being `storage`: (manifests, links, blobs, bytes)."""
    manifests, links = await sweep.sweep(gc, delete_untagged=delete_untagged)
    freed = 0
    marked = await sweep.mark(gc)
    for candidate in marked:
        storage.digests.discard(candidate.digest)
        assert await gc.forget_blob(candidate.digest)
        freed += candidate.size
    return manifests, links, len(marked), freed


async def test_referenced_blobs_survive_and_unreferenced_ones_go(make, storage, database) -> None:
    store, gc, _ = make()
    kept = [await upload(store, storage, "team/app") for _ in range(2)]
    dropped = await upload(store, storage, "team/app", size=7)
    shared = await upload(store, storage, "team/other", digest=kept[0])
    image = manifest(kept)
    await store.put_manifest("team/app", image, "v1")
    assert shared == kept[0]

    manifests, links, blob_count, freed = await collect(gc, storage)

    assert (manifests, links, blob_count, freed) == (0, 2, 1, 7)  # other's link to kept[0] is unreferenced too
    assert await state_of(database, dropped) is None and dropped not in storage.digests
    for digest in kept:
        assert await store.stat_blob("team/app", digest) == 100
        assert await state_of(database, digest) == "active"
    assert await store.stat_blob("team/other", kept[0]) is None


async def test_a_collected_blob_is_no_longer_recorded_as_held_by_any_region(make, storage, database) -> None:
    store, gc, _ = make()
    token = writing_region.set("us")  # as if LinkBlob came from region us (services/metadata/regions.py)
    try:
        kept, dropped = await upload(store, storage, "team/app"), await upload(store, storage, "team/app")
    finally:
        writing_region.reset(token)
    await store.put_manifest("team/app", manifest([kept]), "v1")

    async def held(digest: str) -> list[str]:
        async with database.reads.connect() as conn:
            return list((await conn.execute(select(blob_regions.c.region).where(blob_regions.c.digest == digest)))
                        .scalars())

    assert await held(dropped) == ["us"]
    await collect(gc, storage)
    assert await held(dropped) == []  # region us is not asked for it on a miss any more
    assert await held(kept) == ["us"]


async def test_a_blob_mid_deletion_is_unknown_to_head_link_mount_and_manifests(make, storage, database) -> None:
    store, gc, inner = make()
    digest = await upload(store, storage, "a/b")
    await store.link_blob("c/d", digest, 100)
    # The HEAD a client does before skipping the upload:
    assert await store.stat_blob("a/b", digest) == 100
    # The GC unlinks (nothing references it) and claims the blob.
    await sweep.sweep(gc, delete_untagged=False)
    marked = await sweep.mark(gc)
    assert [c.digest for c in marked] == [digest]
    assert await state_of(database, digest) == "deleting"

    # While deleting: HEAD 404, link and mount refused, a manifest using it refused.
    assert await store.stat_blob("a/b", digest) is None
    with pytest.raises(RegistryError) as linked:
        await store.link_blob("a/b", digest, 100)
    assert linked.value.kind is ErrorKind.BLOB_UNKNOWN and "upload it again" in linked.value.message
    with pytest.raises(RegistryError) as inner_linked:
        await inner.link_blob("a/b", digest, 100)
    assert inner_linked.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await store.mount_blob("e/f", digest, None) is None
    with pytest.raises(RegistryError) as put:
        await store.put_manifest("a/b", manifest([digest]), "latest")
    assert put.value.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN

    # The bytes go, then the row. A LinkBlob whose bytes were committed before the deletion finds
    # no bytes on the blob plane: "upload it again", and no active row is left behind.
    storage.digests.discard(digest)
    assert await gc.forget_blob(digest)
    with pytest.raises(RegistryError) as stale:
        await store.link_blob("a/b", digest, 100)
    assert stale.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await state_of(database, digest) == "pending"

    # The client uploads again: bytes back, link works, the manifest goes in.
    await upload(store, storage, "a/b", digest)
    assert await state_of(database, digest) == "active"
    await store.put_manifest("a/b", manifest([digest]), "latest")
    assert await store.stat_blob("a/b", digest) == 100


async def test_link_confirmation_is_tied_to_the_row_it_created(make, storage, database) -> None:
    store, gc, _ = make()
    digest = docs.random_digest()
    storage.digests.add(digest)
    epoch = await gc.prepare_link(digest, 10)
    assert epoch is not None and await state_of(database, digest) == "pending"
    # The GC claims the pending row (no links, zero delay) before the link is confirmed.
    assert [c.digest for c in await sweep.mark(gc)] == [digest]
    assert not await gc.activate(digest, epoch)
    storage.digests.discard(digest)
    await gc.forget_blob(digest)
    # A new incarnation has another epoch: the old confirmation cannot activate it.
    again = await gc.prepare_link(digest, 10)
    assert again is not None and again != epoch
    assert not await gc.activate(digest, epoch)
    assert await state_of(database, digest) == "pending"


async def test_a_confirmed_link_cannot_recreate_a_row_the_gc_removed(make, storage, database) -> None:
    store, gc, inner = make()
    digest = docs.random_digest()
    storage.digests.add(digest)
    epoch = await gc.prepare_link(digest, 10)
    assert await gc.activate(digest, epoch)
    # Between the confirmation and the link's own transaction, the GC takes the (unlinked) blob.
    assert [c.digest for c in await sweep.mark(gc)] == [digest]
    storage.digests.discard(digest)
    assert await gc.forget_blob(digest)
    with pytest.raises(RegistryError) as refused:
        await inner.link_blob("late/link", digest, 10)
    assert refused.value.kind is ErrorKind.BLOB_UNKNOWN
    assert await state_of(database, digest) is None


async def test_failed_byte_deletion_stays_deleting_and_is_retried(make, storage, database) -> None:
    store, gc, _ = make()
    digest = await upload(store, storage, "x/y")
    await sweep.sweep(gc, delete_untagged=False)
    assert [c.digest for c in await sweep.mark(gc)] == [digest]
    # The byte deletion "failed": the row is not forgotten. The next run hands it out again.
    assert await state_of(database, digest) == "deleting"
    assert [c.digest for c in await sweep.mark(gc)] == [digest]
    assert await store.stat_blob("x/y", digest) is None


async def test_untagged_manifests_follow_retention_and_references(make, storage) -> None:
    store, gc, _ = make()
    child_blobs = [await upload(store, storage, "r/i") for _ in range(2)]
    child = manifest(child_blobs)
    await store.put_manifest("r/i", child, None)
    index = manifest(children=[child.payload])
    await store.put_manifest("r/i", index, "multi")
    signature_blob = await upload(store, storage, "r/i")
    signature = manifest([signature_blob], subject=child.digest)
    await store.put_manifest("r/i", signature, None)
    orphan = manifest([await upload(store, storage, "r/i")])
    await store.put_manifest("r/i", orphan, None)

    # Retention off (the default): untagged manifests stay, and so do their blobs.
    assert await collect(gc, storage) == (0, 0, 0, 0)
    # On: only the orphan goes; the child of the tagged index and its referrer stay.
    assert (await collect(gc, storage, delete_untagged=True))[:3] == (1, 1, 1)
    await store.get_manifest("r/i", digest=child.digest)
    await store.get_manifest("r/i", digest=signature.digest)
    # Untag the index: index, child and the child's referrer go, in one run.
    await store.delete_tag("r/i", "multi")
    manifests, links, blob_count, _ = await collect(gc, storage, delete_untagged=True)
    assert (manifests, links, blob_count) == (3, 3, 3)
    assert (await store.list_tags("r/i", last="", limit=10)).items == []


async def test_tagged_referrer_keeps_its_untagged_subject(make, storage) -> None:
    store, gc, _ = make()
    subject = manifest([await upload(store, storage, "s/t")])
    await store.put_manifest("s/t", subject, None)
    signature = manifest([await upload(store, storage, "s/t")], subject=subject.digest)
    await store.put_manifest("s/t", signature, "sig")
    assert await collect(gc, storage, delete_untagged=True) == (0, 0, 0, 0)
    await store.get_manifest("s/t", digest=subject.digest)


async def test_dry_run_matches_the_run(make, storage) -> None:
    store, gc, _ = make()
    shared = [await upload(store, storage, "p/one", size=1000 + i) for i in range(3)]
    for repository in ("p/two", "p/three"):
        for digest in shared:
            await store.link_blob(repository, digest, 1000)
    images = []
    for repository in ("p/one", "p/two", "p/three"):
        own = await upload(store, storage, repository, size=50)
        image = manifest([*shared[:2], own])
        await store.put_manifest(repository, image, "v1")
        images.append((repository, image))
    await upload(store, storage, "p/two", size=9)  # never used
    # Delete two images: their own layers and (in every repository) shared[2] become garbage.
    for repository, image in images[:2]:
        await store.delete_manifest(repository, image.digest)

    plan = await sweep.plan(gc, delete_untagged=False)
    manifests, links, blob_count, freed = await collect(gc, storage)

    assert (plan.links, plan.blobs, plan.blob_bytes) == (links, blob_count, freed)
    # Links: one/own, two/own, two/unused and shared[0..2] in one, shared[0..2] in two (all their
    # manifests are gone), shared[2] in three. Blobs: the 2 own layers, the unused one, shared[2].
    assert (links, blob_count, freed) == (3 + 6 + 1, 4, 50 + 50 + 9 + 1002)
    assert await sweep.plan(gc, delete_untagged=False) == sweep.Plan(0, 0, 0, 0, 0, 0)


async def test_review_delay_holds_what_stopped_being_referenced(make, storage) -> None:
    store, gc, _ = make(delay=3600)
    digest = await upload(store, storage, "d/e")
    image = manifest([digest])
    await store.put_manifest("d/e", image, "v1")
    await store.delete_manifest("d/e", image.digest)
    # The link is unreferenced now, but fresh and held: nothing is collectable.
    assert await sweep.plan(gc, delete_untagged=True) == sweep.Plan(0, 0, 0, 0, 0, 0)
    assert (await gc.stats(5))["held"] >= 1
    assert await store.stat_blob("d/e", digest) == 100


async def test_maintenance_mode_refuses_writes_and_serves_reads(make, storage) -> None:
    store, gc, _ = make()
    digest = await upload(store, storage, "m/n")
    await store.put_manifest("m/n", manifest([digest]), "v1")
    await gc.set_maintenance(True)
    assert await gc.maintenance(fresh=True)
    calls = [store.link_blob("m/n", digest, 100), store.unlink_blob("m/n", digest),
             store.mount_blob("o/p", digest, None), store.put_manifest("m/n", manifest([digest]), "v2"),
             store.delete_tag("m/n", "v1")]
    for call in calls:
        with pytest.raises(RegistryError) as refused:
            await call
        assert refused.value.kind is ErrorKind.UNSUPPORTED
        assert "read-only maintenance mode" in refused.value.message
    assert (await store.get_manifest("m/n", tag="v1")).digest
    assert await store.stat_blob("m/n", digest) == 100
    await gc.set_maintenance(False)
    await store.put_manifest("m/n", manifest([digest]), "v2")


async def test_admin_listings_where_and_repository_delete(make, storage) -> None:
    store, gc, _ = make()
    layer = await upload(store, storage, "lib/a", size=1000)
    image = manifest([layer])
    await store.put_manifest("lib/a", image, "v1")
    await store.put_manifest("lib/a", image, "latest")
    await store.link_blob("lib/b", layer, 1000)
    other = manifest([layer])
    await store.put_manifest("lib/b", other, None)

    summaries = {r.name: r for r in await gc.list_repositories()}
    assert summaries["lib/a"].tags == 2 and summaries["lib/a"].manifests == 1
    assert summaries["lib/a"].bytes == 1000 + len(image.payload)
    listed = await gc.list_manifests("lib/a")
    assert [(m.digest, m.tags) for m in listed] == [(image.digest, ["latest", "v1"])]
    assert await gc.list_tags("lib/a") == [("latest", image.digest), ("v1", image.digest)]
    state, size, linked, users = await gc.where_blob(layer)
    assert (state, size, linked) == ("active", 1000, ["lib/a", "lib/b"])
    assert sorted(users) == sorted([("lib/a", image.digest), ("lib/b", other.digest)])

    assert await gc.delete_repository("lib/a") == (1, 1)
    with pytest.raises(RegistryError) as gone:
        await gc.list_tags("lib/a")
    assert gone.value.kind is ErrorKind.NAME_UNKNOWN
    # lib/b still uses the layer: the GC leaves it.
    assert (await collect(gc, storage))[2] == 0
    assert await gc.referenced_blobs("", 10) == [(layer, 1000)]


async def test_runs_are_recorded_for_stats(make, storage) -> None:
    from datetime import UTC, datetime

    store, gc, _ = make()
    await upload(store, storage, "s/s", size=5)
    before = await gc.stats(5)
    assert before["link_candidates"] == 1 and before["blob_candidates"] == 0
    _, links, blob_count, freed = await collect(gc, storage)
    await gc.record_run(datetime.now(UTC), False, RunTotals(0, links, blob_count, freed, 0))
    after = await gc.stats(5)
    assert after["link_candidates"] == 0 and after["blob_candidates"] == 0
    assert [(r["links_removed"], r["blobs_deleted"], r["bytes_freed"]) for r in after["runs"]] == [(1, 1, 5)]


async def test_dry_run_with_untagged_deletion_reports_exactly_what_the_run_deletes(make, storage, database) -> None:
    """Issue 11's gap: with --delete-untagged the dry run must count what only becomes
    collectable once other items go: the children of an untagged index (over several levels),
    their referrers, and the links and blobs only those manifests used."""
    store, gc, _ = make()
    # A blob left `deleting` by a run whose byte deletion failed: every run retries it.
    leftover = await upload(store, storage, "x/left", size=7)
    await sweep.sweep(gc, delete_untagged=False)
    assert [c.digest for c in await sweep.mark(gc)] == [leftover]

    kept_layer = await upload(store, storage, "u/a", size=1000)
    kept = manifest([kept_layer])
    await store.put_manifest("u/a", kept, "stays")
    # index2 -> index1 -> (child1, child2); a signature of child1; all untagged once "multi" goes.
    child_blobs = [await upload(store, storage, "u/a", size=100 + i) for i in range(3)]
    child1 = manifest([child_blobs[0], child_blobs[1], kept_layer])
    child2 = manifest([child_blobs[2]])
    for child in (child1, child2):
        await store.put_manifest("u/a", child, None)
    index1 = manifest(children=[child1.payload, child2.payload])
    await store.put_manifest("u/a", index1, None)
    index2 = manifest(children=[index1.payload])
    await store.put_manifest("u/a", index2, "multi")
    signature_blob = await upload(store, storage, "u/a", size=30)
    signature = manifest([signature_blob], subject=child1.digest)
    await store.put_manifest("u/a", signature, None)
    # child_blobs[2] is also linked (unreferenced) in another repository: that link goes first.
    await store.link_blob("u/c", child_blobs[2], 102)
    # child_blobs[1] is also used by a tagged image elsewhere: its link there and the blob stay.
    await store.link_blob("u/b", child_blobs[1], 101)
    await store.put_manifest("u/b", manifest([child_blobs[1]]), "v1")
    await store.delete_tag("u/a", "multi")

    # Without --delete-untagged: the leftover and the unreferenced link in u/c go (the blob is
    # still linked in u/a), and the dry run says so.
    plan = await sweep.plan(gc, delete_untagged=False)
    assert plan == sweep.Plan(0, 0, 1, 1, 7, 1)
    assert await collect(gc, storage) == (plan.manifests, plan.links, plan.blobs, plan.blob_bytes)

    plan = await sweep.plan(gc, delete_untagged=True)
    # The dry run changed nothing: the same answer again, and the manifests are still served.
    assert await sweep.plan(gc, delete_untagged=True) == plan
    await store.get_manifest("u/a", digest=child1.digest)
    await store.get_manifest("u/a", digest=signature.digest)

    result = await collect(gc, storage, delete_untagged=True)
    assert result == (plan.manifests, plan.links, plan.blobs, plan.blob_bytes)
    # index2, index1, child1, child2, signature; links in u/a: child_blobs[0..2] and the
    # signature's blob; blobs: child_blobs[0], [2] and the signature's.
    assert result == (5, 4, 3, 100 + 102 + 30)
    assert plan.deleting == 0 and plan.manifest_bytes > 0
    await store.get_manifest("u/a", digest=kept.digest)
    assert await sweep.plan(gc, delete_untagged=True) == sweep.Plan(0, 0, 0, 0, 0, 0)
