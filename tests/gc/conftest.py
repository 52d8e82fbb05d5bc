"""Store-level GC fixtures: a migrated database per dialect (SQLite and PostgreSQL), emptied per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from services.metadata.gc.guarded import GuardedStore
from services.metadata.gc.store import GcStore
from services.metadata.gc.tables import GC_TABLES
from services.metadata.store.engine import Database
from services.metadata.store.schema import ALL_TABLES
from services.metadata.store.sql import SqlMetadataStore
from tests.support.metadata_db import per_dialect_database, truncate

dialect, database = per_dialect_database("gc")


async def _truncate(db: Database) -> None:
    await truncate(db, [*ALL_TABLES, *GC_TABLES])


class Storage:
    """Stands in for the blob plane's answer to "do these bytes exist?": a set of digests the test
    says are stored (the store-level tests drive the metadata side only)."""

    def __init__(self) -> None:
        self.digests: set[str] = set()
        # Every digest asked about, in order.
        self.asked: list[str] = []

    async def exists(self, digest: str) -> bool:
        self.asked.append(digest)
        return digest in self.digests


@pytest.fixture
def storage() -> Storage:
    return Storage()


@pytest.fixture
async def make(database: Database, storage: Storage) -> Callable[..., tuple[GuardedStore, GcStore, SqlMetadataStore]]:
    await _truncate(database)

    def build(delay: float = 0.0, orphan_grace: float = 0.0) -> tuple[GuardedStore, GcStore, SqlMetadataStore]:
        inner = SqlMetadataStore(database)
        inner.require_blob_rows()
        gc = GcStore(database, delay_seconds=delay, maintenance_cache_seconds=0.0)
        return GuardedStore(inner, gc, storage.exists, orphan_grace_seconds=orphan_grace), gc, inner

    return build


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
