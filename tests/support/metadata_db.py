"""Migrated metadata databases for store-level tests, one per dialect, emptied between tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from services.common.settings import MetadataSettings
from services.metadata.migrations import migrate
from services.metadata.store.engine import Database, open_database
from tests.support.postgres import PostgresProvider


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


MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "metadata" / "migrations"


def migrations_key() -> str:
    """A content key of the migrations (every file of services/metadata/migrations)."""
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(MIGRATIONS).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


async def _migrated_template(postgres: PostgresProvider) -> str:
    """This session's PostgreSQL database migrated to head by `migrate`, made on first use (per
    content key of the migrations); copies of it start where a fresh database would be after
    `migrate`, without running the ten revisions again (2-4 s each time on this machine)."""
    key = migrations_key()
    name = postgres.template(key)
    if name is None:
        name = f"lading_template_{key}_{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(postgres.create, name)
        postgres.add_template(key, name)  # dropped at the end of the session, migrated or not
        db = open_database(MetadataSettings(database_url=postgres.url(name)))
        try:
            await migrate(db)
        finally:
            await db.dispose()  # CREATE DATABASE ... TEMPLATE needs it free of connections
    return name


@contextlib.asynccontextmanager
async def migrated_database(dialect: str, request: pytest.FixtureRequest, folder: Path) -> AsyncIterator[Database]:
    """An open, migrated database of `dialect`; disposed (and, on PostgreSQL, dropped) after. A
    brand-new one each time: a SQLite file migrated here, or on PostgreSQL a copy of the session's
    migrated template."""
    with contextlib.ExitStack() as resources:
        if dialect == "sqlite":
            url = resources.enter_context(empty_database_url(dialect, request, folder))
        else:
            postgres: PostgresProvider = request.getfixturevalue("postgres")
            url = resources.enter_context(postgres.copy_of(await _migrated_template(postgres)))
        db = open_database(MetadataSettings(database_url=url, pool_size=5, max_overflow=20))
        # SQLite: migrates it; a PostgreSQL copy is at head already, so this only checks that it is.
        await migrate(db)
        try:
            yield db
        finally:
            await db.dispose()


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
