"""store/access.py: each kind of statement takes the path declared for it, on a SQLite file and on
PostgreSQL, and the callers of the metadata plane (store, GC, change feed, outbox, accounts) go
through it.

What ran where is observed from the outside, not from `Access`'s own bookkeeping: SQLAlchemy's
`before_cursor_execute` on the async engine's and the writer's engines tells which engine (and
which view of it: the `reads` view runs AUTOCOMMIT on PostgreSQL, without BEGIN on SQLite) ran
each statement; the one-hop sqlite3 readers run no SQLAlchemy statement at all, so a hot read on
SQLite must leave both engines silent and open a read-only sqlite3 connection instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from services.common.settings import MetadataSettings
from services.metadata.changes.log import ChangeLog
from services.metadata.events.store import OutboxStore
from services.metadata.gc.store import GcStore
from services.metadata.store.access import Kind, Route, hot_read, primary_read, push_read, read
from services.metadata.store.base import NewManifest
from services.metadata.store.engine import Database, open_database
from services.metadata.store.schema import ALL_TABLES, repositories
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import per_dialect_database, truncate

REPO = "access/app"
SQLITE_BEGIN = "lading_sqlite_begin"  # engine.py's execution option


dialect, database = per_dialect_database("access")


class Observed:
    """The views that ran SQLAlchemy statements since `clear()`, as `Route` values."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.routes: list[Route] = []
        self._listeners: list[tuple[Any, Any]] = []
        writer_engine = db.write_engine
        separate_writer = writer_engine is not db.engine.sync_engine

        def on_engine(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any, _many: Any) -> None:
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT" or (
                    SQLITE_BEGIN in options and options[SQLITE_BEGIN] is None):
                self.routes.append(Route.READS)
            elif options.get(SQLITE_BEGIN) == "BEGIN IMMEDIATE":
                self.routes.append(Route.TRANSACTION)  # the `writes` view of the async engine
            else:
                # The plain primary engine: PRIMARY reads, and on PostgreSQL also the writer's
                # and the async transactions (they share it there).
                self.routes.append(Route.PRIMARY)

        def on_writer(*_args: Any) -> None:
            self.routes.append(Route.WRITER)

        self._listen(db.engine.sync_engine, on_engine)
        if separate_writer:
            self._listen(writer_engine, on_writer)

    def _listen(self, target: Any, listener: Any) -> None:
        event.listen(target, "before_cursor_execute", listener)
        self._listeners.append((target, listener))

    def remove(self) -> None:
        for target, listener in self._listeners:
            event.remove(target, "before_cursor_execute", listener)

    async def of(self, call: Callable[[], Awaitable[Any]]) -> set[Route]:
        """The set of views `call` ran statements on (empty: none through SQLAlchemy)."""
        self.routes.clear()
        before = self.db.access.taken.copy()
        await call()
        taken = self.db.access.taken - before
        seen = set(self.routes)
        if not seen:
            # Nothing through SQLAlchemy: it must have been the one-hop sqlite3 readers.
            assert set(taken) == {Route.SQLITE3}, taken
        return seen


@pytest.fixture
async def observed(database: Database) -> AsyncIterator[Observed]:
    await truncate(database, ALL_TABLES)
    watch = Observed(database)
    try:
        yield watch
    finally:
        watch.remove()


def _expected(dialect: str, route: Route) -> set[Route]:
    """What `Observed` sees of a route on `dialect`."""
    if route is Route.SQLITE3:
        return set()
    if dialect == "postgresql" and route in (Route.WRITER, Route.TRANSACTION):
        return {Route.PRIMARY}  # one engine there: the writer runs `run_sync` on it
    return {route}


def _manifest() -> NewManifest:
    document = docs.image(layers=1)
    payload = docs.render(document)
    return NewManifest(
        digest=docs.sha256(payload), media_type=docs.OCI_MANIFEST, payload=payload, subject_digest=None,
        artifact_type=None, config_media_type=None, annotations=None,
        blob_digests=tuple(digest for digest, _ in docs.blobs_of(document)), manifest_digests=(),
    )


def test_each_kind_is_routed_by_the_database(database: Database, dialect: str) -> None:
    """The table: on a SQLite file hot reads take the sqlite3 readers and push reads the writer
    thread; on PostgreSQL both go through the async engine's reads view."""
    access = database.access
    statement = select(repositories.c.id)
    routes = {kind: access.route(declared) for kind, declared in (
        (Kind.READ, read(statement)), (Kind.HOT_READ, hot_read(statement)),
        (Kind.PUSH_READ, push_read(statement)), (Kind.PRIMARY_READ, primary_read(statement)))}
    if dialect == "sqlite":
        assert routes == {Kind.READ: Route.READS, Kind.HOT_READ: Route.SQLITE3, Kind.PUSH_READ: Route.WRITER,
                          Kind.PRIMARY_READ: Route.PRIMARY}
    else:
        assert routes == {Kind.READ: Route.READS, Kind.HOT_READ: Route.READS, Kind.PUSH_READ: Route.READS,
                          Kind.PRIMARY_READ: Route.PRIMARY}


async def test_store_statements_take_their_declared_paths(database: Database, dialect: str,
                                                          observed: Observed) -> None:
    store = SqlMetadataStore(database)
    manifest = _manifest()
    hot = _expected(dialect, database.access.route(hot_read(None)))
    writer = _expected(dialect, Route.WRITER)

    # Writes: one transaction on the writer each.
    for digest in manifest.blob_digests:
        assert await observed.of(lambda d=digest: store.link_blob(REPO, d, 100)) == writer
    assert await observed.of(lambda: store.put_manifest(REPO, manifest, "v1")) == writer

    # The hot reads of client requests.
    assert await observed.of(lambda: store.stat_blob(REPO, manifest.blob_digests[0])) == hot
    assert await observed.of(lambda: store.get_manifest(REPO, tag="v1")) == hot
    assert await observed.of(lambda: store.get_manifest(REPO, digest=manifest.digest, with_payload=False)) == hot
    assert await observed.of(lambda: store.list_tags(REPO, last="", limit=10)) == hot
    assert await observed.of(lambda: store.list_repositories(last="", limit=10)) == hot
    assert await observed.of(lambda: store.list_referrers(REPO, manifest.digest, artifact_type=None, last="",
                                                          limit=10)) == hot
    # ... and they answer what was written, whatever their path.
    assert (await store.get_manifest(REPO, tag="v1")).digest == manifest.digest
    assert (await store.list_tags(REPO, last="", limit=10)).items == ["v1"]

    # The health check reads through the engine's reads view.
    assert await observed.of(store.ping) == {Route.READS}
    if dialect == "sqlite":
        # The one-hop readers really opened read-only connections of their own.
        reader = database.access._reader
        assert reader is not None and reader._connections


async def test_gc_reads_and_writes_take_their_declared_paths(database: Database, dialect: str,
                                                              observed: Observed) -> None:
    store = SqlMetadataStore(database)
    gc = GcStore(database, delay_seconds=3600)
    manifest = _manifest()
    for digest in manifest.blob_digests:
        await store.link_blob(REPO, digest, 100)
    await store.put_manifest(REPO, manifest, "v1")

    push = _expected(dialect, database.access.route(push_read(None)))
    assert push == ({Route.WRITER} if dialect == "sqlite" else {Route.READS})
    # A push read (the holds of a tag move) reads on its path, then writes the holds on the writer.
    seen_routes: list[Route] = []

    async def holds() -> None:
        await gc.holds_for_tag(REPO, "v1")
        seen_routes.extend(observed.routes)

    seen = await observed.of(holds)
    assert seen == push | _expected(dialect, Route.WRITER)
    assert seen_routes[0] in push  # the read came first, on the push-read path
    # Scans are READs: the reads view (the replica when configured).
    assert await observed.of(gc.manifest_candidates) == {Route.READS}
    assert await observed.of(lambda: gc.blob_state(manifest.blob_digests[0])) == {Route.READS}
    # LinkBlob's guard: where push reads take the writer anyway, no separate read comes first.
    seen = await observed.of(lambda: gc.link_epoch(manifest.blob_digests[0], 100))
    assert seen == ({Route.WRITER} if dialect == "sqlite" else {Route.READS})


async def test_primary_reads_and_async_transactions(database: Database, dialect: str, observed: Observed) -> None:
    log = ChangeLog(database)
    assert await observed.of(log.head) == {Route.PRIMARY}
    outbox = OutboxStore(database)
    assert await observed.of(lambda: outbox.purge_delivered(3600)) == _expected(dialect, Route.TRANSACTION)
    assert await observed.of(outbox.counts) == {Route.READS}


async def test_push_reads_leave_the_writer_when_a_replica_is_configured(tmp_path: Path) -> None:
    """With a read replica, the writer thread is the primary's: a push read goes to the reads
    view (the replica) instead, and hot reads to the replica's file."""
    primary, replica = tmp_path / "primary.db", tmp_path / "replica.db"
    db = open_database(MetadataSettings(database_url=f"sqlite:///{primary}", read_replica_url=f"sqlite:///{replica}"))
    try:
        access = db.access
        assert access.route(push_read(None)) is Route.READS
        assert access.route(hot_read(None)) is Route.SQLITE3
        assert access._reader_path == replica
    finally:
        await db.dispose()


async def test_in_memory_sqlite_has_no_fast_paths() -> None:
    db = open_database(MetadataSettings(database_url="sqlite+aiosqlite:///:memory:"))
    try:
        assert db.access.route(hot_read(None)) is Route.READS
        assert db.access.route(push_read(None)) is Route.READS
    finally:
        await db.dispose()
