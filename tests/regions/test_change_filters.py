"""The change feed's repository changes and filters (issue 15, items 5 and 6), over real gRPC on
SQLite and PostgreSQL: the store puts tag pushed / moved / deleted and manifest deleted on the feed
in the writing transaction; a watcher of one repository (`subject`) gets only that repository's
changes, a watcher of account changes (`kinds`) gets none of them, and both see their position
move past what they skip (so a quiet watcher resumes from near the head, never from behind the
retained history).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from lading.metadata.v1 import changes_pb2, changes_pb2_grpc
from lading.metadata.v1 import repository_changes_pb2 as rpb

from services.common.settings import ChangeFeedSettings
from services.metadata.changes.wiring import build_changes
from services.metadata.store.sql import SqlMetadataStore
from tests.contracts.metadata_store_suite import new_manifest
from tests.support.metadata_db import migrated_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def feed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[SqlMetadataStore, str, int]]:
    async with migrated_database(request.param, request, tmp_path) as db:
        changes = build_changes(db, ChangeFeedSettings(poll_seconds=0.05))
        store = SqlMetadataStore(db, None, changes.repositories)
        await changes.start()
        server = grpc.aio.server()
        changes.add_to_server(server)
        address = f"unix:{tmp_path}/changes.sock"
        server.add_insecure_port(address)
        await server.start()
        try:
            yield store, address, await changes.log.head()
        finally:
            await changes.close()
            await server.stop(0)


async def _watch(address: str, **request: object) -> changes_pb2.WatchChangesResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        call = changes_pb2_grpc.ChangeServiceStub(channel).WatchChanges(
            changes_pb2.WatchChangesRequest(heartbeat_ms=100, **request))  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(anext(call.__aiter__()), 10)
        finally:
            call.cancel()


async def test_repository_changes_are_filtered_by_repository_and_kind(feed: tuple[SqlMetadataStore, str, int]) -> None:
    store, address, start = feed
    first, second = new_manifest(b'{"schemaVersion":2,"n":1}'), new_manifest(b'{"schemaVersion":2,"n":2}')
    await store.put_manifest("team/a", first, "latest")  # pushed
    await store.put_manifest("team/b", first, "latest")  # another repository
    await store.put_manifest("team/a", second, "latest")  # moved
    await store.put_manifest("team/a", second, "latest")  # unchanged: nothing recorded
    await store.put_manifest("team/a", first, "v1")  # pushed
    await store.delete_tag("team/a", "v1")  # deleted
    await store.delete_manifest("team/a", second.digest)  # manifest deleted, with its tag
    await store.put_manifest("team/b", second, "latest")  # the newest change is not team/a's
    only_a = await _watch(address, after=start, subject="team/a", kinds=[rpb.CHANGE_KIND_REPOSITORY])
    seen = [(c.repository.kind, c.repository.tag, c.repository.digest, c.repository.previous_digest,
             list(c.repository.tags)) for c in only_a.changes]
    assert seen == [
        (rpb.REPOSITORY_CHANGE_KIND_TAG_PUSHED, "latest", first.digest, "", []),
        (rpb.REPOSITORY_CHANGE_KIND_TAG_MOVED, "latest", second.digest, first.digest, []),
        (rpb.REPOSITORY_CHANGE_KIND_TAG_PUSHED, "v1", first.digest, "", []),
        (rpb.REPOSITORY_CHANGE_KIND_TAG_DELETED, "v1", first.digest, "", []),
        (rpb.REPOSITORY_CHANGE_KIND_MANIFEST_DELETED, "", second.digest, "", ["latest"]),
    ]
    assert all(c.repository.repository == "team/a" for c in only_a.changes)
    everything = await _watch(address, after=start)
    head = everything.changes[-1].position
    assert len(everything.changes) == 7  # team/b's push and move too
    assert everything.changes[-1].repository.repository == "team/b"
    assert only_a.position == head and only_a.caught_up  # moved past team/b's change
    accounts = await _watch(address, after=start, kinds=[rpb.CHANGE_KIND_ACCOUNT])
    assert list(accounts.changes) == [] and accounts.position == head
