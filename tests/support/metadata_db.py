"""Migrated metadata databases for store-level tests, one per dialect, emptied between tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from services.common.settings import MetadataSettings
from services.metadata.migrations import migrate
from services.metadata.store.engine import Database, open_database

DIALECTS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def empty_database_url(dialect: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """A URL to a brand-new, never-migrated database: SQLite under `folder`, or a fresh database
    on the test PostgreSQL server (the `postgres` fixture)."""
    if dialect == "sqlite":
        # A folder that does not exist yet: the engine must create it.
        yield f"sqlite+aiosqlite:///{folder}/nested/dir/registry.db"
    else:
        with request.getfixturevalue("postgres").database() as url:
            yield url


@contextlib.asynccontextmanager
async def migrated_database(dialect: str, request: pytest.FixtureRequest, folder: Path) -> AsyncIterator[Database]:
    """An open, migrated database of `dialect`; disposed (and, on PostgreSQL, dropped) after."""
    with empty_database_url(dialect, request, folder) as url:
        db = open_database(MetadataSettings(database_url=url, pool_size=5, max_overflow=20))
        await migrate(db)
        try:
            yield db
        finally:
            await db.dispose()


def per_dialect_database(label: str) -> tuple[Callable[..., str], Callable[..., AsyncIterator[Database]]]:
    """The module-scoped fixture pair most store-level modules need: `dialect` (each of DIALECTS
    in turn) and `database`, one migrated database of that dialect for the whole module. Use as
    `dialect, database = per_dialect_database("links")` at module level."""

    @pytest.fixture(scope="module", params=DIALECTS)
    def dialect(request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture(scope="module")
    async def database(dialect: str, request: pytest.FixtureRequest,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
        async with migrated_database(dialect, request, tmp_path_factory.mktemp(f"{label}-{dialect}")) as db:
            yield db

    return dialect, database


async def truncate(db: Database, tables: Sequence[sa.Table]) -> None:
    """Empties `tables` (given parents first)."""
    async with db.writes.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await conn.execute(table.delete())


async def migrate_to(db: Database, revision: str, *, down: bool = False) -> None:
    """Upgrades (or, with `down`, downgrades) `db` to `revision`, in one transaction as `migrate` does."""
    from alembic import command

    from services.metadata.migrations import alembic_config

    def run(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with db.writes.begin() as conn:
        await conn.run_sync(run)
