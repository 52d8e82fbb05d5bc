"""LinkBlob's transaction names its repository inside the link's INSERT: a link into a repository
that exists runs no separate lookup of the repository's id (one statement per link less, on the
writer that every push waits for). A new repository's first link, and a link that exists already,
still take the longer way, with the same outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from services.metadata.store.engine import Database
from services.metadata.store.schema import ALL_TABLES
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import per_dialect_database, truncate

dialect, database = per_dialect_database("links")


@pytest.fixture
async def store(database: Database) -> SqlMetadataStore:
    await truncate(database, ALL_TABLES)
    return SqlMetadataStore(database)


@pytest.fixture
def statements(database: Database) -> AsyncIterator[list[str]]:
    """The SQL the writer runs (PostgreSQL: its one engine), lower-cased, one line each."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.lower().split()))

    engine = database.write_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    yield seen
    event.remove(engine, "before_cursor_execute", on_execute)


def _repository_lookups(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("select repositories.id from repositories")]


async def test_a_link_into_an_existing_repository_looks_nothing_up(
    store: SqlMetadataStore, statements: list[str]
) -> None:
    await store.link_blob("team/app", docs.random_digest(), 10)  # creates the repository
    assert _repository_lookups(statements), "a new repository is looked up (and created)"
    statements.clear()
    digest = docs.random_digest()
    await store.link_blob("team/app", digest, 20)
    assert _repository_lookups(statements) == []
    assert await store.stat_blob("team/app", digest) == 20


async def test_links_that_exist_or_open_a_repository_keep_their_outcome(store: SqlMetadataStore) -> None:
    digest = docs.random_digest()
    await store.link_blob("a", digest, 5)
    await store.link_blob("a", digest, 7)  # exists: nothing changes
    await store.link_blob("b", digest, 6)  # b's first link: b is created
    assert await store.stat_blob("a", digest) == 5
    assert await store.stat_blob("b", digest) == 6
    assert (await store.list_repositories(last="", limit=10)).items == ["a", "b"]
