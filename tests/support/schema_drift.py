"""What differs between the declared schema (`complete_metadata()`) and a migrated database.

Alembic's autogenerate comparison (`compare_metadata`) does most of it: tables, columns, types,
nullability, server defaults, indexes, unique constraints and foreign keys (with ON DELETE).
It is lenient in a few places that matter here, so three checks are added:
- collations: Alembic only compares a collation both sides name; a byte-wise column ("C" on
  PostgreSQL, schema.bytewise) that the database lacks changes listing order, so one-sided counts;
- primary keys (Alembic does not compare them): columns in order and, where the database keeps
  constraint names (PostgreSQL), the names of primary keys, unique constraints and foreign keys,
  which later migrations use to alter them;
- SQLite's AUTOINCREMENT (`sqlite_autoincrement`), which keeps positions from being reused.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection


def _collation(type_: Any, dialect_name: str) -> str | None:
    resolved = getattr(type_, "_variant_mapping", {}).get(dialect_name, type_)
    return getattr(resolved, "collation", None)


def _compare_collation(context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any,
                       metadata_type: Any) -> bool | None:
    """Alembic's `compare_type` hook: True (different) when the collations differ, even when only
    one side names one; None lets Alembic compare the rest of the type."""
    if _collation(inspected_type, context.dialect.name) != _collation(metadata_type, context.dialect.name):
        return True
    return None


def _shown(value: Any) -> str:
    """A type or server default as SQL text."""
    value = getattr(value, "arg", value)  # a DefaultClause's expression
    return repr(getattr(value, "text", value))


def _describe(change: Any) -> str:
    if isinstance(change, list):  # column modifications come grouped per column
        return "; ".join(_describe(item) for item in change)
    kind, *rest = change
    if kind.startswith("modify_"):
        _, table, column, _existing, old, new = rest
        return f"{kind} {table}.{column}: database {_shown(old)}, model {_shown(new)}"
    target = rest[-1] if rest else None
    name = getattr(target, "name", target)
    table = getattr(getattr(target, "table", None), "name", None) or getattr(target, "name", "")
    return f"{kind} {table}:{name} ({target!r})"


def _constraint_names(inspector: Any, table: Table) -> set[tuple[str, str, tuple[str, ...]]]:
    names = {("pk", inspector.get_pk_constraint(table.name)["name"],
              tuple(inspector.get_pk_constraint(table.name)["constrained_columns"]))}
    names |= {("uq", uq["name"], tuple(uq["column_names"])) for uq in inspector.get_unique_constraints(table.name)}
    names |= {("fk", fk["name"], tuple(fk["constrained_columns"])) for fk in inspector.get_foreign_keys(table.name)}
    return names


def _declared_names(table: Table, connection: Connection) -> set[tuple[str, str, tuple[str, ...]]]:
    from sqlalchemy import ForeignKeyConstraint, UniqueConstraint

    def name(constraint: Any) -> str:
        # The naming convention's name, as CREATE TABLE would emit it.
        return connection.dialect.identifier_preparer.format_constraint(constraint)

    pk = table.primary_key
    names = {("pk", name(pk), tuple(c.name for c in pk.columns))}
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and constraint is not pk:
            names.add(("uq", name(constraint), tuple(c.name for c in constraint.columns)))
        elif isinstance(constraint, ForeignKeyConstraint):
            names.add(("fk", name(constraint), tuple(c.name for c in constraint.columns)))
    return names


def schema_differences(connection: Connection, metadata: MetaData) -> list[str]:
    """Every difference between `metadata` and the database on `connection` (a synchronous
    connection to a migrated database), one line each; empty when they agree. The `alembic_version`
    table is Alembic's own and not compared."""
    context = MigrationContext.configure(connection, opts={
        "compare_type": _compare_collation,
        "compare_server_default": True,
        "include_name": lambda name, kind, _parent: not (kind == "table" and name == "alembic_version"),
    })
    found = [_describe(change) for change in compare_metadata(context, metadata)]

    inspector = inspect(connection)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue  # reported above as a table to add
        database_pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
        model_pk = [column.name for column in table.primary_key.columns]
        if database_pk != model_pk:
            found.append(f"primary key of {table.name}: database {database_pk}, model {model_pk}")
        if connection.dialect.name == "postgresql":
            database_names, model_names = _constraint_names(inspector, table), _declared_names(table, connection)
            for missing in sorted(model_names - database_names):
                found.append(f"constraint {missing} of {table.name} is declared but not in the database")
            for extra in sorted(database_names - model_names):
                found.append(f"constraint {extra} of {table.name} is in the database but not declared")
        if connection.dialect.name == "sqlite":
            sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                                     {"name": table.name}).scalar_one()
            declared = bool(table.dialect_options["sqlite"].get("autoincrement"))
            if declared != ("AUTOINCREMENT" in sql.upper()):
                found.append(f"AUTOINCREMENT of {table.name}: database {not declared}, model {declared}")
    return found
