"""The account tables (SQLAlchemy Core); migrations 0002, 0005 and 0006 create them (they do not import this)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    # "user" or "robot".
    Column("kind", String(16), nullable=False),
    Column("password_hash", String(128), nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("description", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Immutable, never reused (random hex): what tokens name. `id` may be reused by SQLite.
    Column("uid", String(32), nullable=False, unique=True),
    # Bumped whenever tokens issued so far must stop working (see migration 0005).
    Column("credential_generation", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
    # "local", "ldap" or "oidc" (migration 0006).
    Column("origin", String(16), nullable=False, server_default="local"),
    # Directory / provider accounts: the groups last reported (JSON list) and when.
    Column("directory_groups", Text, nullable=True),
    Column("directory_checked_at", DateTime(timezone=True), nullable=True),
    # OIDC: "<issuer> <sub>" of the provider's user this account belongs to.
    Column("external_id", String(512), nullable=True),
    # OIDC: when the CLI secret (stored in password_hash) stops working.
    Column("secret_expires_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("name", name="uq_accounts_name"),
)

grants = Table(
    "grants",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("actions", String(64), nullable=False),
    PrimaryKeyConstraint("account_id", "pattern", name="pk_grants"),
)

# A directory or provider group → grants on a repository pattern; pattern "" with actions "admin"
# makes the group's members admins (migration 0006).
group_mappings = Table(
    "group_mappings",
    metadata,
    Column("provider", String(16), nullable=False),
    Column("group_name", String(512), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("actions", String(64), nullable=False),
    PrimaryKeyConstraint("provider", "group_name", "pattern", name="pk_group_mappings"),
)
