"""Schema migrations of the metadata database: one Alembic history for SQLite and PostgreSQL.

Run programmatically; no alembic.ini is needed (`alembic_config()` sets `script_location` in code).
- `migrate(target)` upgrades to the newest revision (head) in one transaction; on PostgreSQL an
  advisory lock makes replicas that start together migrate one after the other.
- `check_schema_current(target)` tells whether the database is at head.

`target` is a database URL or an open `Database` (whose pool is then left open).

Alembic is imported only when there is something to migrate: a database already at head (every
start but the first after an upgrade) is recognised by reading `alembic_version` with plain SQL
against the head read from the revision files (`head_revision`), which keeps Alembic's ~0.1 s and
~11 MiB out of the metadata plane's start-up and resident size. When there is something to
migrate, the running plane does it in a short-lived child process (`migrate_in_child`, `python -m
services.metadata.migrations`), so Alembic (and Mako, Pygments) never stay resident in it either;
only databases another process cannot open (in-memory SQLite) are migrated in-process.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from services.common.settings import MetadataSettings
from services.metadata.store.access import Kind
from services.metadata.store.engine import Database, open_database, sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).resolve().parent
VERSIONS = SCRIPT_LOCATION / "versions"
# Alembic's bookkeeping table (one row: the revision the database is at).
VERSION_TABLE = "alembic_version"
# Any fixed 64-bit number, the same in every replica: the PostgreSQL advisory lock for migrations.
_ADVISORY_LOCK_KEY = 0x6C6164696E67  # "lading"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def _revision_links() -> dict[str, str | None]:
    """revision -> down_revision of every file in versions/, read as literals (nothing imported)."""
    links: dict[str, str | None] = {}
    for path in sorted(VERSIONS.glob("*.py")):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    found[node.targets[0].id] = ast.literal_eval(node.value)
        if "revision" in found:
            down = found.get("down_revision")
            if not (down is None or isinstance(down, str)):
                raise RuntimeError(f"{path.name}: the history must stay linear (down_revision {down!r})")
            links[str(found["revision"])] = down
    return links


def head_revision() -> str:
    """The newest revision id of the history: the one no other revision names as its parent.
    Raises RuntimeError unless the history is one line (what Alembic's own head would be;
    tests/metadata compare the two)."""
    links = _revision_links()
    heads = set(links) - {down for down in links.values() if down is not None}
    if len(heads) != 1:
        raise RuntimeError(f"the migration history must have one head, it has {sorted(heads)}")
    return heads.pop()


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
    from alembic import command

    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_heads(connection: Connection) -> tuple[str, ...]:
    """What Alembic's MigrationContext.get_current_heads() answers, read with plain SQL."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return ()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608 - a constant
    return tuple(row[0] for row in rows)


async def migrate(target: str | Database) -> None:
    """Upgrades the database to head. A no-op when it is already there (then without loading
    Alembic at all).

    Raises whatever the database raises (connection errors included); nothing is half-applied,
    since every revision runs inside one transaction on both dialects.
    """
    async with _database(target) as database:
        if await current_revisions(database) == (head_revision(),):
            return
        await _upgrade_to_head(database)


# The folder holding the `services` package this code was loaded from (resolved once, at import).
_CODE_ROOT = str(Path(__file__).resolve().parents[3])


async def migrate_in_child(database: Database) -> None:
    """`migrate(database)`, with the upgrade itself (when one is needed) in a child process that
    exits afterwards: the caller never imports Alembic. The URL goes to the child on its stdin
    (not its arguments or environment, which other users may read). Databases a child cannot
    open (in-memory or `file:` SQLite) are migrated here instead.

    Raises RuntimeError with the child's last lines of error output when it fails."""
    if await current_revisions(database) == (head_revision(),):
        return
    if database.dialect == "sqlite" and sqlite_file(database.engine.url) is None:
        await _upgrade_to_head(database)
        return
    url = database.engine.url.render_as_string(hide_password=False)
    # The child runs this very code: the folder `services` was loaded from goes first on its path,
    # and `-P` keeps the current folder (whatever `services/` it may hold) off it.
    root = _CODE_ROOT
    inherited = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": root if not inherited else root + os.pathsep + inherited}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "services.metadata.migrations", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, errors = await child.communicate(url.encode() + b"\n")
    if child.returncode != 0:
        tail = " | ".join(errors.decode(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"migrating the metadata database to {head_revision()} failed: {tail}")


async def _upgrade_to_head(database: Database) -> None:
    config = alembic_config()
    async with database.access.transaction() as connection:
        if database.dialect == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        await connection.run_sync(_upgrade, config)


async def current_revisions(target: str | Database) -> tuple[str, ...]:
    """The revisions the database is at (empty for a database never migrated). Asks the primary,
    never a read replica."""
    async with _database(target) as database, database.access.connection(Kind.PRIMARY_READ) as connection:
        return await connection.run_sync(_current_heads)


async def check_schema_current(target: str | Database) -> bool:
    """True when the database is at head (and not ahead of or beside it)."""
    return await current_revisions(target) == (head_revision(),)
