"""One schema: the database as the models declare it (services/metadata/store/schema.py).

0005 gave `accounts.uid`, `credential_generation` and `disabled` server defaults ('', 1, false)
only so that ALTER TABLE ADD COLUMN ... NOT NULL could fill the existing rows. They are dropped:
the account store writes every column itself, and a default '' on a unique, never-reused id
would hand the first account inserted without one a shared, meaningless id.

PostgreSQL drops a default in place. SQLite keeps defaults in the CREATE TABLE text, so `accounts`
is rebuilt as SQLite documents it (new table, copy, drop, rename). Dropping `accounts` would
delete every grant (ON DELETE CASCADE), so the grants are set aside first and put back after,
and the row counts are checked before the transaction commits: the revision runs in the one
migration transaction, so a mismatch rolls everything back.

Revision ID: 0006_one_schema
Revises: 0005_credentials
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_one_schema"
down_revision = "0005_credentials"
branch_labels = None
depends_on = None

# 0005's defaults, put back by a downgrade.
_DEFAULTS = {"uid": sa.text("''"), "credential_generation": sa.text("1"), "disabled": sa.false()}
_ACCOUNT_COLUMNS = ("id", "name", "kind", "password_hash", "is_admin", "description", "expires_at", "created_at",
                    "uid", "credential_generation", "disabled")
_REBUILT = "accounts_0006"
_GRANTS_ASIDE = "grants_0006"


def _bytewise(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _accounts_columns(defaults: dict[str, sa.sql.ClauseElement]) -> list[sa.Column]:
    def default(name: str) -> sa.DefaultClause | None:
        return sa.DefaultClause(defaults[name]) if name in defaults else None

    return [
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", _bytewise(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(128), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False, server_default=default("uid")),
        sa.Column("credential_generation", sa.BigInteger, nullable=False,
                  server_default=default("credential_generation")),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=default("disabled")),
    ]


def _count(connection: sa.Connection, table: str) -> int:
    return int(connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def _rebuild_sqlite_accounts(defaults: dict[str, sa.sql.ClauseElement]) -> None:
    """Recreates `accounts` with `defaults` as its only server defaults, keeping every account
    (ids included) and every grant."""
    connection = op.get_bind()
    accounts_before, grants_before = _count(connection, "accounts"), _count(connection, "grants")
    # Named as the convention names them on `accounts` (constraint names are per table in SQLite).
    op.create_table(
        _REBUILT,
        *_accounts_columns(defaults),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    columns = ", ".join(_ACCOUNT_COLUMNS)
    op.execute(f"INSERT INTO {_REBUILT} ({columns}) SELECT {columns} FROM accounts")
    op.execute(f"CREATE TEMP TABLE {_GRANTS_ASIDE} AS SELECT account_id, pattern, actions FROM grants")
    # Explicitly, rather than through the cascade of the DROP below.
    op.execute("DELETE FROM grants")
    op.execute("DROP TABLE accounts")  # its index uq_accounts_uid goes with it
    op.execute(f"ALTER TABLE {_REBUILT} RENAME TO accounts")
    op.create_index("uq_accounts_uid", "accounts", ["uid"], unique=True)
    op.execute(f"INSERT INTO grants (account_id, pattern, actions) SELECT account_id, pattern, actions "
               f"FROM {_GRANTS_ASIDE}")
    op.execute(f"DROP TABLE {_GRANTS_ASIDE}")
    after = (_count(connection, "accounts"), _count(connection, "grants"))
    if after != (accounts_before, grants_before):
        raise RuntimeError(
            f"rebuilding the accounts table would change (accounts, grants) from {(accounts_before, grants_before)} "
            f"to {after}; nothing was changed. Report this with the output of `sqlite3 <database> .schema`."
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_accounts({})
        return
    for column in _DEFAULTS:
        op.alter_column("accounts", column, server_default=None)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_accounts(_DEFAULTS)
        return
    for column, default in _DEFAULTS.items():
        op.alter_column("accounts", column, server_default=default)
