"""The `changes` table (created by migration 0005): the change feed, one row per change.

`position` only grows: SQLite's AUTOINCREMENT never hands a position out twice, PostgreSQL's
sequence neither. Positions may have holes (a rolled-back transaction used one); readers never
wait for a hole to fill. Writers take one lock per transaction (changes/log.py) so that rows
become visible in position order: a reader that has seen position P never later finds a new row
below P.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from services.metadata.store.schema import metadata

changes = Table(
    "changes",
    metadata,
    Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # "account" today; the kind decides how `body` (JSON) reads.
    Column("kind", String(32), nullable=False),
    # What changed (an account's immutable id), for readers that filter.
    Column("subject", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Pruning by age.
    Index(None, "created_at"),
    sqlite_autoincrement=True,
)
