"""Schema migrations of the metadata database: one Alembic history for SQLite and PostgreSQL.

Run programmatically; no alembic.ini is needed (`alembic_config()` sets `script_location` in code).
- `migrate(target)` upgrades to the newest revision (head) in one transaction; on PostgreSQL an
  advisory lock makes replicas that start together migrate one after the other.
- `check_schema_current(target)` tells whether the database is at head.

`target` is a database URL or an open `Database` (whose pool is then left open).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.settings import MetadataSettings
from services.metadata.store.engine import Database, open_database

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any fixed 64-bit number, the same in every replica: the PostgreSQL advisory lock for migrations.
_ADVISORY_LOCK_KEY = 0x6C6164696E67  # "lading"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def head_revision() -> str:
    """The newest revision id of the history."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migration history is empty"
    return head


@contextlib.asynccontextmanager
async def _database(target: str | Database) -> AsyncIterator[Database]:
    if isinstance(target, Database):
        yield target
        return
    database = open_database(MetadataSettings(database_url=target))
    try:
        yield database
    finally:
        await database.dispose()


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def migrate(target: str | Database) -> None:
    """Upgrades the database to head. A no-op when it is already there.

    Raises whatever the database raises (connection errors included); nothing is half-applied,
    since every revision runs inside one transaction on both dialects.
    """
    config = alembic_config()
    async with _database(target) as database, database.writes.begin() as connection:
        if database.dialect == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        await connection.run_sync(_upgrade, config)


async def current_revisions(target: str | Database) -> tuple[str, ...]:
    """The revisions the database is at (empty for a database never migrated). Asks the primary,
    never a read replica."""
    async with _database(target) as database, database.engine.connect() as connection:
        return await connection.run_sync(_current_heads)


async def check_schema_current(target: str | Database) -> bool:
    """True when the database is at head (and not ahead of or beside it)."""
    return await current_revisions(target) == (head_revision(),)
