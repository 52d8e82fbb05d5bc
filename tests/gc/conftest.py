"""Store-level GC fixtures: a migrated database per dialect (SQLite and PostgreSQL), emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.settings import MetadataSettings
from services.metadata.gc.guarded import GuardedStore
from services.metadata.gc.store import GcStore
from services.metadata.gc.tables import GC_TABLES
from services.metadata.migrations import migrate
from services.metadata.store.engine import Database, open_database
from services.metadata.store.schema import ALL_TABLES
from services.metadata.store.sql import SqlMetadataStore
from tests.contracts.metadata_store_suite import _empty_database_url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
async def database(dialect: str, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    with _empty_database_url(dialect, request, tmp_path_factory.mktemp(f"gc-{dialect}")) as url:
        db = open_database(MetadataSettings(database_url=url, pool_size=5, max_overflow=20))
        await migrate(db)
        try:
            yield db
        finally:
            await db.dispose()


async def _truncate(db: Database) -> None:
    tables = [*ALL_TABLES, *GC_TABLES]
    async with db.writes.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await conn.execute(table.delete())


class Storage:
    """Stands in for the blob plane's answer to "do these bytes exist?": a set of digests the test
    says are stored (the store-level tests drive the metadata side only)."""

    def __init__(self) -> None:
        self.digests: set[str] = set()

    async def exists(self, digest: str) -> bool:
        return digest in self.digests


@pytest.fixture
def storage() -> Storage:
    return Storage()


@pytest.fixture
async def make(database: Database, storage: Storage) -> Callable[..., tuple[GuardedStore, GcStore, SqlMetadataStore]]:
    await _truncate(database)

    def build(delay: float = 0.0) -> tuple[GuardedStore, GcStore, SqlMetadataStore]:
        inner = SqlMetadataStore(database)
        inner.require_blob_rows()
        gc = GcStore(database, delay_seconds=delay, maintenance_cache_seconds=0.0)
        return GuardedStore(inner, gc, storage.exists), gc, inner

    return build


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
