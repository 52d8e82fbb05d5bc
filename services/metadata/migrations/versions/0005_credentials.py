"""Credential generations and the change feed.

- `accounts.uid`: an immutable random id, never reused (the integer `id` may be reused by SQLite
  after the newest account is deleted), so tokens can name the account they were issued for;
- `accounts.credential_generation`: bumped by a password change, a robot secret rotation, a token
  revocation, a disable and a delete; tokens carry it;
- `accounts.disabled`;
- `changes`: the change feed (services/metadata/changes), one row per change with an increasing
  position (AUTOINCREMENT on SQLite, so a position is never handed out twice).

Columns are added in place (ALTER TABLE ADD COLUMN on both dialects): a SQLite batch rebuild would
drop `accounts`, and with foreign keys on, that deletes every grant through ON DELETE CASCADE.

Revision ID: 0005_credentials
Revises: 0004_events
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005_credentials"
down_revision = "0004_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("uid", sa.String(32), nullable=False, server_default=""))
    op.add_column("accounts", sa.Column("credential_generation", sa.BigInteger, nullable=False,
                                        server_default="1"))
    op.add_column("accounts", sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
    connection = op.get_bind()
    accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    for (account_id,) in connection.execute(sa.select(accounts.c.id)).all():
        connection.execute(accounts.update().where(accounts.c.id == account_id).values(uid=uuid.uuid4().hex))
    op.create_index("uq_accounts_uid", "accounts", ["uid"], unique=True)
    op.create_table(
        "changes",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_changes_created_at", "changes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_changes_created_at", table_name="changes")
    op.drop_table("changes")
    op.drop_index("uq_accounts_uid", table_name="accounts")
    # In place (SQLite >= 3.35), for the reason given above.
    op.drop_column("accounts", "disabled")
    op.drop_column("accounts", "credential_generation")
    op.drop_column("accounts", "uid")
