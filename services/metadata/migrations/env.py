"""Alembic environment for the metadata schema: one history for SQLite and PostgreSQL.

Lading runs migrations programmatically (`services.metadata.migrations.migrate`), handing the
connection in `config.attributes["connection"]` inside a transaction it owns. For developers
generating a new revision with the alembic CLI, `sqlalchemy.url` (or LADING_METADATA__DATABASE_URL)
names the database instead.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from services.metadata.store.schema import complete_metadata

# Every table (for `alembic revision --autogenerate`) and the naming convention, which names the
# constraints and indexes the revisions create.
target_metadata = complete_metadata()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    from services.common.settings import MetadataSettings
    from services.metadata.store.engine import open_database

    database = open_database(MetadataSettings(database_url=url))
    try:
        async with database.access.transaction() as connection:
            await connection.run_sync(_run)
    finally:
        await database.dispose()


_connection = context.config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("LADING_METADATA__DATABASE_URL")
    if not _url:
        raise RuntimeError("set sqlalchemy.url or LADING_METADATA__DATABASE_URL to run alembic by hand")
    asyncio.run(_run_with_own_engine(_url))
