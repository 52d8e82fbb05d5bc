"""The `event_outbox` table (migration 0004_events): one row per (event, endpoint).

`state`: `pending` (to send; due at `next_attempt_at`), `delivered`, `dead` (gave up after the
endpoint's max_attempts; `lading events replay` makes it pending again). A worker claims due rows
by pushing `next_attempt_at` one lease ahead in the claiming transaction, so a worker that dies
mid-POST only delays the batch by the lease (at-least-once, never lost).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from services.metadata.store.schema import metadata

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)

event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("endpoint", String(128), nullable=False),
    Column("action", String(16), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # The delivery worker's claim: due rows of one endpoint, oldest first.
    Index("ix_event_outbox_due", "state", "endpoint", "next_attempt_at"),
)
