"""The one place that knows SQL dialects differ: upserts and database error classification."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.dml import Insert

from services.common.errors import RegistryError, storage_full
from services.common.private_files import DISK_FULL_ERRNOS

# PostgreSQL SQLSTATEs after which re-running the whole (idempotent) transaction is safe:
# serialization failure, deadlock, and unique / foreign-key violations from a concurrent writer.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505", "23503"})
# The database's disk is full: PostgreSQL's disk_full; SQLite's primary result code SQLITE_FULL
# ("database or disk is full": a write, the WAL or a temporary file found no room).
_DISK_FULL_SQLSTATE = "53100"
_SQLITE_FULL = 13


def _insert_for(dialect: str, table: Table) -> Any:
    # Imported here: a plane loads the dialect its database speaks (its engine already did), not both.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise ValueError(f"unsupported dialect {dialect!r}")


def insert_ignore(dialect: str, table: Table, conflict: Iterable[str]) -> Insert:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING."""
    return _insert_for(dialect, table).on_conflict_do_nothing(index_elements=list(conflict))


def insert_ignore_from(dialect: str, table: Table, conflict: Iterable[str], columns: Iterable[str],
                       rows: Select[Any]) -> Insert:
    """INSERT INTO table (columns) SELECT rows ON CONFLICT (conflict) DO NOTHING. `rows` needs a
    WHERE clause: SQLite parses `ON CONFLICT` after a SELECT only then."""
    statement = _insert_for(dialect, table).from_select(list(columns), rows)
    return statement.on_conflict_do_nothing(index_elements=list(conflict))


def upsert(dialect: str, table: Table, conflict: Iterable[str], update: Mapping[str, Any],
           where_changed: Iterable[str] = ()) -> Insert:
    """INSERT ... ON CONFLICT (conflict) DO UPDATE SET column = excluded.column for each `update`
    key (values may be expressions). With `where_changed`, the update only runs when one of those
    columns differs, so a no-op re-push writes nothing."""
    statement = _insert_for(dialect, table)
    excluded = statement.excluded
    where = None
    for column in where_changed:
        changed = table.c[column] != excluded[column]
        where = changed if where is None else (where | changed)
    return statement.on_conflict_do_update(
        index_elements=list(conflict),
        set_={key: (excluded[key] if value is None else value) for key, value in update.items()},
        where=where,
    )


def lock_table_exclusive(conn: Any, dialect: str, table: Table) -> None:
    """Blocks the table's writers (not its readers) until the transaction ends: PostgreSQL's
    LOCK TABLE ... IN EXCLUSIVE MODE. SQLite needs nothing (one writer at a time already)."""
    if dialect == "postgresql":
        from sqlalchemy import text

        conn.execute(text(f'LOCK TABLE "{table.name}" IN EXCLUSIVE MODE'))


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a wrapped DBAPI error, when the driver tells it."""
    original = getattr(error, "orig", None)
    for attr in ("sqlstate", "pgcode"):
        value = getattr(original, attr, None)
        if isinstance(value, str):
            return value
    return None


def is_retryable(error: BaseException) -> bool:
    """True for a conflict with a concurrent writer that a retry of the transaction resolves."""
    return isinstance(error, sa_exc.DBAPIError) and sqlstate(error) in _RETRYABLE_SQLSTATES


def database_full(error: BaseException) -> RegistryError | None:
    """STORAGE_FULL when `error` says the database has no room left for a write, else None.
    Checked before `is_unavailable` (which also matches these): waiting does not cure a full
    disk, an operator must free space. The transaction was rolled back; the connection stays
    usable, and writes succeed again once there is room."""
    original = getattr(error, "orig", error)
    code = getattr(original, "sqlite_errorcode", None)
    full = (
        (isinstance(code, int) and code & 0xFF == _SQLITE_FULL)
        or sqlstate(error) == _DISK_FULL_SQLSTATE
        or (isinstance(original, OSError) and original.errno in DISK_FULL_ERRNOS)
    )
    return storage_full("the metadata database's disk is full") if full else None


def is_unavailable(error: BaseException) -> bool:
    """True when the database could not be reached or did not answer in time."""
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        # 57014 statement timeout / query cancelled; 08xxx connection exceptions; 53xxx resources.
        state = sqlstate(error) or ""
        return state == "57014" or state.startswith(("08", "53", "57P"))
    return isinstance(error, (OSError, TimeoutError))
