"""services/metadata/changes: a tag push reaches the change streams without a database read.

The store tells the hub the position its transaction appended (`committed(position)`), so the hub
takes it as the newest without reading `head`, and a WatchChanges stream serves what this process
committed from memory (`ChangeLog.recent_after`). Whatever this process did not commit itself
(another replica's or process's change, an account change) is read from the database as before,
and both paths answer the same changes. Observed from the outside: SQLAlchemy's
`before_cursor_execute` on the async engine, where the feed's reads run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from lading.metadata.v1 import changes_pb2
from sqlalchemy import event

from services.common.settings import ChangeFeedSettings
from services.metadata.changes.hub import ChangeHub
from services.metadata.changes.log import ChangeLog
from services.metadata.changes.repositories import REPOSITORY_KIND, RepositoryChanges
from services.metadata.changes.servicer import ChangeServicer
from services.metadata.store.base import NewManifest
from services.metadata.store.engine import Database
from services.metadata.store.schema import ALL_TABLES
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import migrated_database, truncate

REPO = "feed/app"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request, tmp_path_factory.mktemp(f"feed-{request.param}")) as db:
        yield db


def _manifest(layers: int) -> NewManifest:
    document = docs.image(layers=layers)
    payload = docs.render(document)
    return NewManifest(
        digest=docs.sha256(payload), media_type=docs.OCI_MANIFEST, payload=payload, subject_digest=None,
        artifact_type=None, config_media_type=None, annotations=None,
        blob_digests=tuple(digest for digest, _ in docs.blobs_of(document)), manifest_digests=(),
    )


class Reads:
    """The change feed's reads the async engine ran: `head` and `read_after`."""

    def __init__(self, db: Database) -> None:
        self.head = self.after = 0
        self._engine = db.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def clear(self) -> None:
        self.head = self.after = 0

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        flat = " ".join(statement.split())
        if flat.startswith("SELECT max(changes.position)") and "WHERE" not in flat:
            self.head += 1
        elif "FROM changes WHERE changes.position >" in flat:
            self.after += 1

    def remove(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


async def test_tag_pushes_reach_streams_from_memory(database: Database) -> None:
    await truncate(database, ALL_TABLES)
    log = ChangeLog(database)
    # A long poll: only the pushes' own commits move the hub in this test.
    hub = ChangeHub(database, log, ChangeFeedSettings(poll_seconds=60))
    store = SqlMetadataStore(database, None, RepositoryChanges(log))
    first, second = _manifest(1), _manifest(2)
    for manifest in (first, second):
        for digest in manifest.blob_digests:
            await store.link_blob(REPO, digest, 100)
    await hub.start()
    reads = Reads(database)
    try:
        stream = ChangeServicer(log, hub).WatchChanges(
            changes_pb2.WatchChangesRequest(after=0, heartbeat_ms=100, kinds=[]), None)
        opening = await anext(stream)
        assert opening.caught_up and not opening.changes

        reads.clear()
        await store.put_manifest(REPO, first, "v1")
        assert hub.latest > opening.position  # known at once, without reading the head
        pushed = await anext(stream)
        await store.put_manifest(REPO, second, "v1")
        moved = await anext(stream)
        # Two pushes delivered, and the stream read nothing for them; on SQLite neither did the
        # hub (PostgreSQL's NOTIFY still makes it read the head: other replicas are heard so).
        assert reads.after == 0
        if database.dialect == "sqlite":
            assert reads.head == 0
        assert [(c.repository.tag, c.repository.digest) for c in pushed.changes] == [("v1", first.digest)]
        assert [(c.repository.digest, c.repository.previous_digest) for c in moved.changes] == [
            (second.digest, first.digest)]

        # Memory answers exactly what the database holds.
        remembered = log.recent_after(opening.position, hub.latest, 10)
        stored = await log.read_after(opening.position, 10)
        assert remembered == stored

        # A change this process did not commit itself (another replica or process: a ChangeLog of
        # its own) is read from the database, and the stream delivers it.
        other = ChangeLog(database)
        async with database.access.transaction() as conn:
            await other.append(conn, REPOSITORY_KIND, REPO, {"repository": REPO, "kind": "tag_deleted",
                                                              "tag": "old", "digest": first.digest})
        assert log.recent_after(moved.position, moved.position + 1, 10) is None
        reads.clear()
        hub.kick()
        deleted = await anext(stream)
        while not deleted.changes:  # heartbeats until the hub has read the new head
            deleted = await anext(stream)
        assert [(c.repository.tag, c.repository.digest) for c in deleted.changes] == [("old", first.digest)]
        assert reads.after > 0
        await stream.aclose()
    finally:
        reads.remove()
        await hub.close()
