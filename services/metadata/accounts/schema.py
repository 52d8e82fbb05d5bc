"""The account tables (SQLAlchemy Core); migrations 0002, 0005, 0006 and 0007 create them (they do
not import this)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.metadata.store.schema import bytewise, metadata

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Compared byte-wise, so `lading accounts list` sorts the same on both dialects.
    Column("name", bytewise(255), nullable=False),
    # "user" or "robot".
    Column("kind", String(16), nullable=False),
    Column("password_hash", String(128), nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("description", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Immutable, never reused (random hex): what tokens name. `id` may be reused by SQLite.
    Column("uid", String(32), nullable=False),
    # Bumped whenever tokens issued so far must stop working (see migration 0005).
    Column("credential_generation", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
    # "local", "ldap" or "oidc" (migration 0007).
    Column("origin", String(16), nullable=False, server_default="local"),
    # Directory / provider accounts: the groups last reported (JSON list) and when.
    Column("directory_groups", Text, nullable=True),
    Column("directory_checked_at", DateTime(timezone=True), nullable=True),
    # OIDC: "<issuer> <sub>" of the provider's user this account belongs to.
    Column("external_id", String(512), nullable=True),
    # OIDC: when the CLI secret (stored in password_hash) stops working.
    Column("secret_expires_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("name"),
    # A unique index, not a constraint: SQLite adds those to an existing table only by rebuilding it.
    Index("uq_accounts_uid", "uid", unique=True),
)

grants = Table(
    "grants",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("pattern", bytewise(255), nullable=False),
    # Comma-separated, sorted subset of pull,push,delete.
    Column("actions", String(64), nullable=False),
    PrimaryKeyConstraint("account_id", "pattern"),
)

# A directory or provider group → grants on a repository pattern; pattern "" with actions "admin"
# makes the group's members admins (migration 0007).
group_mappings = Table(
    "group_mappings",
    metadata,
    Column("provider", String(16), nullable=False),
    Column("group_name", String(512), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("actions", String(64), nullable=False),
    PrimaryKeyConstraint("provider", "group_name", "pattern"),
)
