"""The `console_sessions` table (created by migration 0007). A session's secret is never stored:
`id` is the SHA-256 of it (hex), so a copy of the database opens no session."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, PrimaryKeyConstraint, String, Table

from services.metadata.store.schema import metadata

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), nullable=False),
    # The account's immutable id and the credential generation the session was opened under:
    # a password change, revocation, disable or delete ends the session with the account's tokens.
    Column("account_uid", String(32), nullable=False),
    Column("credential_generation", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("client_address", String(64), nullable=False),
    PrimaryKeyConstraint("id"),
    Index(None, "expires_at"),
    Index(None, "account_uid"),
)
