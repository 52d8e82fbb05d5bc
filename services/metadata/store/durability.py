"""Whether the metadata database makes a commit durable before it answers.

Lading answers a push (201) once the metadata plane's transaction committed. On SQLite the
engine makes that commit durable itself (engine.py: synchronous=FULL). On PostgreSQL it relies on
the server's `synchronous_commit`: with `on` (the default), `remote_write` or `remote_apply` a
COMMIT returns once the WAL record is flushed to the primary's disk (and, with synchronous
standbys named in `synchronous_standby_names`, received or applied by them); with `local` once it
is on the primary's disk; with `off` before that, so a crash of the PostgreSQL server loses the
last transactions it acknowledged. It can be set per server, database, role or session, so the
check reads what a session of Lading's actually gets.
"""

from __future__ import annotations

from sqlalchemy import text

from services.metadata.store.access import Kind
from services.metadata.store.engine import Database


async def commit_durability_warning(database: Database) -> str | None:
    """A warning for the operator when commits on `database` are acknowledged before they are
    durable (PostgreSQL with `synchronous_commit=off`); None otherwise (and on SQLite)."""
    if database.dialect != "postgresql":
        return None
    async with database.access.connection(Kind.PRIMARY_READ) as conn:
        value = (await conn.execute(text("SHOW synchronous_commit"))).scalar()
        name = (await conn.execute(text("SELECT current_database() || ' as role ' || current_user"))).scalar()
    if str(value).lower() != "off":
        return None
    return (
        f"PostgreSQL runs Lading's transactions with synchronous_commit=off (database {name}): it "
        "acknowledges a commit before the commit is on its disk, so a crash of the PostgreSQL "
        "server loses the last pushes Lading answered 201 for. Lading relies on "
        "synchronous_commit=on: find where it is turned off (SELECT source FROM pg_settings "
        "WHERE name = 'synchronous_commit'; ALTER DATABASE/ROLE ... RESET synchronous_commit) "
        "and turn it back on. See the README's \"Durability\" section."
    )
