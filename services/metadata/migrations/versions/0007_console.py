"""Directory and single sign-on accounts, group mappings, console sessions, who pushed.

- `accounts.origin` ("local", "ldap" or "oidc"): where an account comes from; `directory_groups`
  (JSON list) and `directory_checked_at`: the groups the directory or provider last reported,
  and when; `external_id`: the provider's subject ("<issuer> <sub>") an OIDC account belongs to;
  `secret_expires_at`: when an OIDC account's CLI secret stops working;
- `group_mappings`: a directory or provider group → repository grants (or admin);
- `console_sessions`: the web console's sessions (only a hash of each session secret);
- `manifests.pushed_by`, `tags.pushed_by`: the account that pushed (empty when anonymous or
  pushed before this revision).

Columns are added in place, as in 0005 (a SQLite batch rebuild of `accounts` would cascade into
`grants`).

Revision ID: 0007_console
Revises: 0006_one_schema
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_console"
down_revision = "0006_one_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("origin", sa.String(16), nullable=False, server_default="local"))
    op.add_column("accounts", sa.Column("directory_groups", sa.Text, nullable=True))
    op.add_column("accounts", sa.Column("directory_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("accounts", sa.Column("external_id", sa.String(512), nullable=True))
    op.add_column("accounts", sa.Column("secret_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("manifests", sa.Column("pushed_by", sa.String(255), nullable=True))
    op.add_column("tags", sa.Column("pushed_by", sa.String(255), nullable=True))
    op.create_table(
        "group_mappings",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("group_name", sa.String(512), nullable=False),
        # A repository pattern, or "" for the admin mapping (actions "admin").
        sa.Column("pattern", sa.String(255), nullable=False),
        sa.Column("actions", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("provider", "group_name", "pattern", name="pk_group_mappings"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_uid", sa.String(32), nullable=False),
        sa.Column("credential_generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_index("ix_console_sessions_account_uid", "console_sessions", ["account_uid"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_account_uid", table_name="console_sessions")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("group_mappings")
    op.drop_column("tags", "pushed_by")
    op.drop_column("manifests", "pushed_by")
    op.drop_column("accounts", "secret_expires_at")
    op.drop_column("accounts", "external_id")
    op.drop_column("accounts", "directory_checked_at")
    op.drop_column("accounts", "directory_groups")
    op.drop_column("accounts", "origin")
