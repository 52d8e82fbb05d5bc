"""Accounts (users and robots) and their grants on repository name patterns.

Revision ID: 0002_accounts
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_accounts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _bytewise(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", _bytewise(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(128), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "grants",
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("pattern", _bytewise(255), nullable=False),
        # Comma-separated, sorted subset of pull,push,delete.
        sa.Column("actions", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "pattern", name="pk_grants"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name="fk_grants_account_id_accounts"),
    )


def downgrade() -> None:
    op.drop_table("grants")
    op.drop_table("accounts")
