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

# Gateways (one row per process that follows the feed for a cache) and how far they applied it
# (created by migration 0011; changes/acks.py). Used on PostgreSQL, where every metadata replica
# must see every gateway's acknowledgements; with SQLite the one metadata process keeps them in
# memory and the table stays empty. In a replica region the acknowledgements are forwarded to the
# primary region (rows with that region) and read back from the region's standby.
change_subscribers = Table(
    "change_subscribers",
    metadata,
    Column("subscriber", String(128), primary_key=True),
    # Every change up to this position has been applied by the subscriber.
    Column("acked", BigInteger, nullable=False),
    # A write that stopped waiting for the subscriber: no lease renewal until `acked` reaches it (0: none).
    Column("fence", BigInteger, nullable=False),
    # The subscriber may serve its coherent entries until then (the database's clock).
    Column("lease_until", DateTime(timezone=True), nullable=False),
    # Grows each time the subscriber is renewed after its lease had run out (it must drop its cache).
    Column("epoch", BigInteger, nullable=False),
    # The subscriber's region (`regions.local` of the metadata plane it acknowledges through; ''
    # without regions): a write waits only for the subscribers of the region it answers in.
    Column("region", String(64), nullable=False),
)
