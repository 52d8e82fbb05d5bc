"""A metadata database with no room left: a write fails as STORAGE_FULL (HTTP 507, "free space"),
not UNAVAILABLE ("retry shortly"), leaves no row behind (no tag for a failed manifest push), and
the same writer succeeds again once there is room; reads go on meanwhile.

SQLite's `max_page_count` makes the database full without a small disk: SQLite then fails the
write with SQLITE_FULL ("database or disk is full"), the very result code a full disk gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.core import MetadataCore, MetadataLimits
from services.metadata.store.dialect import database_full
from services.metadata.store.engine import Database
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import migrated_database

REPO = "team/app"
LIMITS = MetadataLimits(max_manifest_bytes=64 * 1024, default_page_size=10, max_page_size=50)


@pytest.fixture
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database("sqlite", request, tmp_path) as database:
        yield database


async def _limit_pages(db: Database, extra: int | None) -> None:
    """Caps the writer connection's database at its current size plus `extra` pages (None: no cap)."""

    def cap(conn: Connection) -> None:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {2**31 - 2 if extra is None else pages + extra}")

    await db.access.write(cap)


async def _push(core: MetadataCore, tag: str) -> str:
    # Annotations big enough to need new pages (overflow pages for the payload).
    document = docs.image(annotations={"padding": "x" * 20_000})
    for digest, size in docs.blobs_of(document):
        await core.link_blob(REPO, digest, size)
    return (await core.put_manifest(REPO, tag, docs.OCI_MANIFEST, docs.render(document))).digest


async def test_a_full_database_answers_storage_full_and_recovers(db: Database) -> None:
    core = MetadataCore(SqlMetadataStore(db), LIMITS)
    first = await _push(core, "v1")
    await _limit_pages(db, 0)

    with pytest.raises(RegistryError) as caught:
        await _push(core, "v2")
    assert caught.value.kind is ErrorKind.STORAGE_FULL
    assert "storage is full" in caught.value.message and "free or add space" in caught.value.message
    # Nothing of the failed push: no tag; reads of what was there go on.
    assert (await core.list_tags(REPO, limit=None, last="")).items == ["v1"]
    assert (await core.get_manifest(REPO, "v1")).digest == first

    await _limit_pages(db, None)  # space freed: the same writer, no restart
    await _push(core, "v2")
    assert (await core.list_tags(REPO, limit=None, last="")).items == ["v1", "v2"]


def test_postgresql_disk_full_is_storage_full_and_other_resource_errors_stay_unavailable() -> None:
    class DriverError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    full = database_full(sa_exc.OperationalError("INSERT", {}, DriverError("53100")))
    assert full is not None and full.kind is ErrorKind.STORAGE_FULL
    assert database_full(sa_exc.OperationalError("SELECT", {}, DriverError("53300"))) is None  # too many connections
