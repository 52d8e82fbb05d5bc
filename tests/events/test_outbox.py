"""The event outbox against real SQLite and PostgreSQL databases, delivered to a real HTTP receiver.

Store-level: SqlMetadataStore + MetadataCore write events in the change's transaction (a failed
push writes none), DeliveryWorker.run_once POSTs them; filters, backoff, dead letter, replay,
concurrent claims and pull sampling.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta
from typing import Any

import pytest
from lading.common.v1 import common_pb2
from lading.metadata.v1 import metadata_pb2
from sqlalchemy import func, select

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import EventEndpointSettings, EventsSettings
from services.metadata.core import MetadataCore, MetadataLimits
from services.metadata.events import context as event_context
from services.metadata.events.delivery import DeliveryWorker
from services.metadata.events.envelope import MEDIA_TYPE, Source
from services.metadata.events.outbox import EventOutbox
from services.metadata.events.store import OutboxStore
from services.metadata.events.tables import event_outbox
from services.metadata.servicer import MetadataServicer
from services.metadata.store.engine import Database
from services.metadata.store.sql import SqlMetadataStore
from tests.events.receiver import Receiver
from tests.support import oci

LIMITS = MetadataLimits(max_manifest_bytes=64 * 1024, default_page_size=100, max_page_size=1000)
SOURCE = Source(addr="node-1:5000", instance_id="instance-1")


def endpoint(receiver: Receiver, **extra: Any) -> EventEndpointSettings:
    fields: dict[str, Any] = {"name": "hook", "url": receiver.url, "headers": {"Authorization": "Bearer s3cret"},
                              "timeout_seconds": 5.0, "max_attempts": 3, "backoff_base_seconds": 0.0,
                              "backoff_cap_seconds": 0.0}
    fields.update(extra)
    return EventEndpointSettings(**fields)


def build(db: Database, *endpoints: EventEndpointSettings, **settings: Any
          ) -> tuple[MetadataCore, EventOutbox, DeliveryWorker, OutboxStore]:
    config = EventsSettings(endpoints=list(endpoints), delivery_interval_seconds=0.05, **settings)
    outbox = EventOutbox(config, SOURCE)
    store = OutboxStore(db)
    return MetadataCore(SqlMetadataStore(db, outbox), LIMITS), outbox, DeliveryWorker(config, store), store


def bind_request(method: str = "PUT", actor: str = "alice") -> None:
    event_context.bind(metadata_pb2.PutManifestRequest(context=common_pb2.RequestContext(
        request_id="req-1", addr="10.0.0.9:4242", host="registry.example:5000", method=method,
        user_agent="docker/27", actor=actor, scheme="https",
    )))


async def push_image(core: MetadataCore, repository: str, tag: str, image: oci.Manifest) -> None:
    for blob in image.blobs:
        await core.link_blob(repository, blob.digest, blob.size)
    await core.put_manifest(repository, tag, image.media_type, image.payload)


async def outbox_rows(db: Database) -> int:
    async with db.writes.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(event_outbox))).scalar_one()


async def drain(worker: DeliveryWorker) -> None:
    """Delivers until no endpoint has a full batch left, then closes the worker's HTTP client
    (it reopens on the next round)."""
    while await worker.run_once():
        pass
    await worker.close()


async def test_push_mount_and_delete_events_reach_the_receiver_as_committed(database: Database,
                                                                           receiver: Receiver) -> None:
    core, _, worker, _ = build(database, endpoint(receiver))
    bind_request()
    image = oci.image(layers=2)
    await push_image(core, "team/app", "v1", image)
    config_blob = image.blobs[0]
    assert await core.mount_blob("team/other", config_blob.digest, "team/app") == config_blob.size
    await core.delete_manifest("team/app", "v1")
    await core.delete_manifest("team/app", image.digest)
    await core.unlink_blob("team/other", config_blob.digest)
    await drain(worker)

    headers, _ = receiver.posts[0]
    assert headers["content-type"] == MEDIA_TYPE
    assert headers["authorization"] == "Bearer s3cret"
    events = receiver.events
    assert [e["action"] for e in events] == ["push"] * 4 + ["mount", "delete", "delete", "delete"]
    manifest_push = events[3]
    assert manifest_push["target"] == {
        "mediaType": image.media_type, "digest": image.digest, "size": image.size, "length": image.size,
        "repository": "team/app", "tag": "v1",
        "url": f"https://registry.example:5000/v2/team/app/manifests/{image.digest}",
    }
    assert manifest_push["request"] == {"id": "req-1", "addr": "10.0.0.9:4242", "host": "registry.example:5000",
                                        "method": "PUT", "useragent": "docker/27"}
    assert manifest_push["actor"] == {"name": "alice"}
    assert manifest_push["source"] == {"addr": "node-1:5000", "instanceID": "instance-1"}
    assert manifest_push["timestamp"].endswith("Z") and len({e["id"] for e in events}) == len(events)
    assert [e["target"]["digest"] for e in events[:3]] == [b.digest for b in image.blobs]
    assert events[4]["target"]["fromRepository"] == "team/app"
    assert events[4]["target"]["repository"] == "team/other"
    assert events[5]["target"] == {"repository": "team/app", "tag": "v1"}
    assert events[6]["target"] == {"digest": image.digest, "repository": "team/app"}
    assert events[7]["target"] == {"digest": config_blob.digest, "repository": "team/other"}
    # All settled: nothing left to send.
    assert await worker.run_once() is False
    assert receiver.attempts == len(receiver.posts)


async def test_a_manifest_deleted_by_digest_sends_a_tag_delete_for_each_of_its_tags(database: Database,
                                                                                 receiver: Receiver) -> None:
    # Distribution's DELETE by digest untags every tag of the manifest through its tag service,
    # and each untag is a tag delete event after the manifest's: a receiver that follows tags
    # (`target.tag`) learns they are gone.
    core, _, worker, _ = build(database, endpoint(receiver))
    bind_request(method="DELETE")
    image = oci.image(layers=1)
    await push_image(core, "team/app", "v1", image)
    await core.put_manifest("team/app", "v2", image.media_type, image.payload)
    await core.delete_manifest("team/app", image.digest)
    await drain(worker)

    deletes = [e for e in receiver.events if e["action"] == "delete"]
    assert [e["target"] for e in deletes] == [
        {"digest": image.digest, "repository": "team/app"},
        {"repository": "team/app", "tag": "v1"},
        {"repository": "team/app", "tag": "v2"},
    ]
    assert {e["request"]["method"] for e in deletes} == {"DELETE"}


async def test_a_failed_push_writes_no_event(database: Database, receiver: Receiver) -> None:
    core, _, worker, _ = build(database, endpoint(receiver))
    image = oci.image(layers=2)
    for blob in image.blobs[:-1]:  # the last layer is never pushed
        await core.link_blob("team/app", blob.digest, blob.size)
    before = await outbox_rows(database)
    with pytest.raises(RegistryError) as info:
        await core.put_manifest("team/app", "v1", image.media_type, image.payload)
    assert info.value.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN
    assert await outbox_rows(database) == before == 2
    await drain(worker)
    assert all(e["target"]["digest"] != image.digest for e in receiver.events)
    assert len(receiver.events) == 2


async def test_filters_pick_actions_and_media_types_per_endpoint(database: Database, receiver: Receiver) -> None:
    other = Receiver().start()
    try:
        manifests_only = endpoint(receiver, name="manifests", exclude_media_types=["application/octet-stream"])
        deletes_only = endpoint(other, name="deletes", include_actions=["delete"])
        core, _, worker, _ = build(database, manifests_only, deletes_only)
        image = oci.image(layers=1)
        await push_image(core, "repo", "v1", image)
        await core.delete_manifest("repo", "v1")
        await drain(worker)
        # Blob pushes are filtered out; deletes carry no media type and pass media-type filters.
        assert [(e["action"], e["target"].get("digest")) for e in receiver.events] == [
            ("push", image.digest), ("delete", None)]
        assert [(e["action"], e["target"]["tag"]) for e in other.events] == [("delete", "v1")]
    finally:
        other.stop()


async def test_each_endpoint_gets_the_envelope_content_type_it_asks_for(database: Database,
                                                                      receiver: Receiver) -> None:
    """v1 (Distribution 2.x, the default) or v2 (the notification spec, Distribution 3): the same
    body under either Content-Type, per endpoint."""
    other = Receiver().start()
    try:
        core, _, worker, _ = build(database, endpoint(receiver, name="old"),
                                   endpoint(other, name="new", envelope_version="v2"))
        await push_image(core, "repo", "v1", oci.image(layers=1))
        await drain(worker)
        assert {headers["content-type"] for headers, _ in receiver.posts} == {
            "application/vnd.docker.distribution.events.v1+json"}
        assert {headers["content-type"] for headers, _ in other.posts} == {
            "application/vnd.docker.distribution.events.v2+json"}
        assert [e["target"]["digest"] for e in other.events] == [e["target"]["digest"] for e in receiver.events]
        assert len(receiver.events) == 3
    finally:
        other.stop()


async def test_failures_back_off_then_dead_letter_and_replay_delivers(database: Database,
                                                                     receiver: Receiver) -> None:
    core, _, worker, store = build(database, endpoint(receiver, max_attempts=3, backoff_base_seconds=30.0,
                                                      backoff_cap_seconds=60.0))
    receiver.status = 503
    await core.link_blob("repo", oci.sha256(b"x"), 1)
    assert await worker.run_once() is False
    assert receiver.attempts == 1
    [row] = await store.list(state="pending", endpoint="", limit=10, before_id=0)
    assert row.attempts == 1 and row.last_error == "HTTP 503"
    # Backed off 30 s: not due, so another round sends nothing.
    await worker.run_once()
    assert receiver.attempts == 1
    # Make it due now; two more failures reach max_attempts = 3: dead.
    for _ in range(2):
        async with database.writes.begin() as conn:
            await conn.execute(event_outbox.update().values(next_attempt_at=row.created_at))
        await worker.run_once()
    assert receiver.attempts == 3
    [dead] = await store.list(state="dead", endpoint="hook", limit=10, before_id=0)
    assert dead.attempts == 3 and worker.dead_total == 1
    await worker.run_once()
    assert receiver.attempts == 3  # dead rows are never sent
    receiver.status = 200
    assert await store.replay(row_id=0, dead=True, endpoint="") == 1
    await drain(worker)
    assert [e["target"]["digest"] for e in receiver.events] == [oci.sha256(b"x")]
    assert [r.state for r in await store.list(state="", endpoint="", limit=10, before_id=0)] == ["delivered"]


async def test_concurrent_claims_never_share_a_row(database: Database, receiver: Receiver) -> None:
    core, _, _, store = build(database, endpoint(receiver))
    for n in range(40):
        await core.link_blob("repo", oci.sha256(str(n).encode()), n)
    batches = await asyncio.gather(*(store.claim("hook", 7, 60.0) for _ in range(8)))
    claimed = [row.id for batch in batches for row in batch]
    assert len(claimed) == len(set(claimed)) == 40
    # Leased: nothing is due until the lease runs out.
    assert await store.claim("hook", 100, 60.0) == []


async def test_pull_events_are_off_by_default_and_sampled_when_on(database: Database, receiver: Receiver) -> None:
    _, off, _, _ = build(database, endpoint(receiver))
    assert off.wants_pull() is False
    draws = iter([0.05, 0.5, 0.2, 0.9])
    config = EventsSettings(endpoints=[endpoint(receiver)], pull="sampled", pull_sample_rate=0.25)
    sampled = EventOutbox(config, SOURCE, sample=lambda: next(draws))
    assert [sampled.wants_pull() for _ in range(4)] == [True, False, True, False]
    bind_request(method="GET", actor="")
    await sampled.record_pull(database.access, "repo", "v1", oci.sha256(b"m"), oci.OCI_MANIFEST, 10)
    worker = DeliveryWorker(config.model_copy(update={"delivery_interval_seconds": 0.05}), OutboxStore(database))
    await drain(worker)
    [pull] = receiver.events
    assert pull["action"] == "pull" and pull["target"]["tag"] == "v1" and pull["actor"] == {}
    assert pull["request"]["method"] == "GET"


async def test_a_manifest_get_of_a_held_digest_records_no_pull(database: Database, receiver: Receiver) -> None:
    # The gateway answers a GET whose If-None-Match names the manifest's digest 304, and tells the
    # metadata plane what the client holds (held_digests): that GET is no pull. Others are.
    core, outbox, worker, _ = build(database, endpoint(receiver), pull="sampled", pull_sample_rate=1.0)
    image = oci.image(layers=1)
    await push_image(core, "repo", "v1", image)
    servicer = MetadataServicer(core, outbox, database.access)
    request = common_pb2.RequestContext(request_id="req-2", method="GET", host="registry.example:5000")
    other = oci.sha256(b"other")
    for reference, held in [("v1", [image.digest]), (image.digest, [other, image.digest]), ("v1", ["*"]),
                            ("v1", [other]), (image.digest, [])]:
        answer = await servicer.GetManifest(metadata_pb2.GetManifestRequest(
            repository="repo", reference=reference, context=request, held_digests=held), None)  # type: ignore[arg-type]
        assert answer.digest == image.digest and answer.pull_events
        # A 304 needs no payload: none is sent for it.
        assert answer.payload == (b"" if image.digest in held or "*" in held else image.payload)
    await drain(worker)
    pulls = [e for e in receiver.events if e["action"] == "pull"]
    assert [(e["target"]["digest"], e["target"].get("tag")) for e in pulls] == [(image.digest, "v1"),
                                                                              (image.digest, None)]


async def test_a_batch_claimed_by_a_dead_worker_is_sent_after_its_lease(database: Database,
                                                                        receiver: Receiver) -> None:
    core, _, _, store = build(database, endpoint(receiver))
    await core.link_blob("repo", oci.sha256(b"held"), 4)
    await core.link_blob("repo", oci.sha256(b"leased"), 6)
    # Two workers claim a row each and die before POSTing: one with a lease that outlasts the test
    # (its row must not be sent meanwhile, however slow the machine), one with a short lease.
    [held] = await store.claim("hook", 1, 600.0)
    [claimed] = await store.claim("hook", 1, 0.2)
    worker = DeliveryWorker(EventsSettings(endpoints=[endpoint(receiver)], lease_seconds=0.2), store)
    deadline = time.monotonic() + 30
    while not receiver.events and time.monotonic() < deadline:
        await worker.run_once()
        await asyncio.sleep(0.05)
    await worker.close()
    # The short lease ran out: sent; the other row is still leased: not sent.
    assert [e["target"]["digest"] for e in receiver.events] == [oci.sha256(b"leased")]
    [row] = await store.list(state="delivered", endpoint="hook", limit=10, before_id=0)
    assert row.id == claimed.id
    [row] = await store.list(state="pending", endpoint="hook", limit=10, before_id=0)
    assert row.id == held.id and row.attempts == 0


async def test_a_worker_stopped_mid_delivery_hands_its_claim_back(database: Database, receiver: Receiver) -> None:
    # A receiver that accepts the connection and never answers: the POST is in flight when the
    # worker stops (as `lading serve` stopping does), and its claimed row must not wait out the lease.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        stalled = endpoint(receiver, url=f"http://127.0.0.1:{silent.getsockname()[1]}/events", timeout_seconds=60.0)
        core, _, worker, store = build(database, stalled, lease_seconds=60.0)
        await core.link_blob("repo", oci.sha256(b"in flight"), 9)
        worker.start()
        for _ in range(200):
            [row] = await store.list(state="pending", endpoint="hook", limit=10, before_id=0)
            if row.next_attempt_at - row.created_at > timedelta(seconds=30):
                break  # claimed: leased for a minute
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker never claimed the row")
        await worker.close()
    [row] = await store.list(state="pending", endpoint="hook", limit=10, before_id=0)
    assert row.attempts == 0  # the cut-short POST is not counted as an attempt
    # Due again at once: the next worker (the restarted plane's, another replica's) sends it now.
    _, _, successor, _ = build(database, endpoint(receiver), lease_seconds=60.0)
    await drain(successor)
    assert [e["target"]["digest"] for e in receiver.events] == [oci.sha256(b"in flight")]


async def test_a_claim_handed_back_releases_only_the_rows_it_still_holds(database: Database,
                                                                         receiver: Receiver) -> None:
    core, _, _, store = build(database, endpoint(receiver))
    for n in range(3):
        await core.link_blob("repo", oci.sha256(f"held {n}".encode()), n + 1)
    # A claim whose lease ran out (a POST that outlived it), its row claimed again by another worker.
    stale = await store.claim("hook", 1, 0.0)
    taken = await store.claim("hook", 1, 600.0)
    assert [row.id for row in taken] == [row.id for row in stale]
    # A claim whose attempt was settled (failed, backing off) before the stop came.
    failed = await store.claim("hook", 1, 600.0)
    await store.failed(failed, "HTTP 503", max_attempts=5, base=600.0, cap=600.0)
    await store.release(stale)
    await store.release(failed)
    # Neither row is due: the other worker keeps its lease, the failed row its backoff.
    rest = await store.claim("hook", 10, 600.0)
    assert [row.id for row in rest] == [max(row.id for row in taken + failed) + 1]
